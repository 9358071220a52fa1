//! `/api-keys`: keys are created once (the response carries the key; only its hash is
//! kept) and revoked. A key can only mint keys within its own reach.
use super::dto::ApiKey;
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm};
use crate::identity::api_keys::{self, NewApiKey};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// Every key for a super-admin; otherwise the keys of the caller's owner.
#[utoipa::path(get, path = "/api-keys", tag = "api-keys", params(PageQuery),
    responses((status = 200, body = Page<ApiKey>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_keys(
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ApiKey>>, ApiError> {
    let (after, limit) = q.parts()?;
    let key = &caller.principal.key;
    let owner = if key.is_admin {
        None
    } else {
        Some(key.user_id.ok_or(ApiError::NotFound)?)
    };
    let rows = api_keys::list(&caller.id, None, owner, after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |k| k.api_key_id,
        ApiKey::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Limit the key to this org (required unless the caller is a super-admin).
    pub org_id: Option<Uuid>,
    /// Permissions the key carries; a caller can only give permissions it has.
    #[serde(default)]
    pub permissions: Vec<String>,
    pub description: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Owner (super-admin callers only; others create keys for their own owner).
    pub user_id: Option<Uuid>,
    /// A super-admin key (super-admin callers only).
    #[serde(default)]
    pub is_admin: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key, shown only in this response: `lk_<prefix>_<secret>`.
    pub key: String,
    pub api_key: ApiKey,
}

#[utoipa::path(post, path = "/api-keys", tag = "api-keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_key(
    caller: Caller,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    let key = &caller.principal.key;
    let new = if key.is_admin {
        NewApiKey {
            user_id: body.user_id,
            org_id: body.org_id,
            permissions: body.permissions,
            description: body.description,
            expires_at: body.expires_at,
            is_admin: body.is_admin,
        }
    } else {
        if body.is_admin || body.user_id.is_some_and(|u| Some(u) != key.user_id) {
            return Err(ApiError::Forbidden(
                "only a super-admin key can create this key".into(),
            ));
        }
        let org_id = body
            .org_id
            .or(key.org_id)
            .ok_or_else(|| ApiError::Invalid {
                field: "org_id".into(),
                detail: "is required".into(),
            })?;
        let scope =
            authorize_org(&caller.id, &caller.principal, org_id, perm::API_KEYS_WRITE).await?;
        for p in &body.permissions {
            scope.require(p)?;
        }
        NewApiKey {
            user_id: key.user_id,
            org_id: Some(scope.org_id()),
            permissions: body.permissions,
            description: body.description,
            expires_at: body.expires_at,
            is_admin: false,
        }
    };
    let (created, secret) = api_keys::create(&caller.id, new).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            key: secret.expose().clone(),
            api_key: created.into(),
        }),
    ))
}

/// Revokes a key: any key for a super-admin; otherwise only keys of the same owner (others
/// are 404).
#[utoipa::path(delete, path = "/api-keys/{api_key_id}", tag = "api-keys", params(("api_key_id" = Uuid, Path)),
    responses((status = 200, body = ApiKey),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_key(
    caller: Caller,
    Path(api_key_id): Path<Uuid>,
) -> Result<axum::Json<ApiKey>, ApiError> {
    let key = &caller.principal.key;
    let target = api_keys::get(&caller.id, api_key_id).await?;
    if !key.is_admin && (target.user_id.is_none() || target.user_id != key.user_id) {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(
        api_keys::revoke(&caller.id, api_key_id).await?.into(),
    ))
}
