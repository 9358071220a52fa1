//! `/oidc-clients`: OpenID Connect relying parties. Super-admin keys see every client;
//! other keys only the clients of orgs they may read (`org:read`) or change (`org:write`).
//! A confidential client's secret is in the create and rotate-secret answers only.
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm};
use crate::oidc::clients::{self, ClientPatch, NewClient};
use crate::store::oidc::OidcClient as Row;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, update_client, delete_client))
        .routes(routes!(rotate_secret))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OidcClient {
    pub client_id: String,
    pub name: String,
    /// Only members of this org may sign in through the client; null: any user.
    pub org_id: Option<Uuid>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    /// `client_secret_basic`, `client_secret_post` or `none` (public client).
    pub token_endpoint_auth_method: String,
    pub id_token_signed_response_alg: String,
    /// First-party clients skip the consent page.
    pub first_party: bool,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    /// OIDC Back-Channel Logout 1.0 endpoint.
    pub backchannel_logout_uri: Option<String>,
    /// Public keys of a `private_key_jwt` client.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
}

impl From<Row> for OidcClient {
    fn from(c: Row) -> Self {
        OidcClient {
            client_id: c.client_id,
            name: c.name,
            org_id: c.org_id,
            redirect_uris: c.redirect_uris.0,
            post_logout_redirect_uris: c.post_logout_redirect_uris.0,
            grant_types: c.grant_types.0,
            scopes: c.scopes.0,
            token_endpoint_auth_method: c.token_endpoint_auth_method,
            id_token_signed_response_alg: c.id_token_signed_response_alg,
            first_party: c.first_party,
            enabled: c.enabled,
            created_at: c.created_at,
            updated_at: c.updated_at,
            backchannel_logout_uri: c.backchannel_logout_uri,
            jwks: c.jwks.map(|j| j.0),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this org's clients (required for keys that are not super-admin and not
    /// bound to one org).
    pub org_id: Option<Uuid>,
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/oidc-clients", tag = "oidc-clients", params(ListQuery),
    responses((status = 200, body = Page<OidcClient>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_clients(
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Page<OidcClient>>, ApiError> {
    let (after, limit) = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    }
    .parts()?;
    let key = &caller.principal.key;
    let org = if key.is_admin {
        q.org_id
    } else {
        let org_id = q.org_id.or(key.org_id).ok_or_else(|| ApiError::Invalid {
            field: "org_id".into(),
            detail: "is required".into(),
        })?;
        Some(
            authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_READ)
                .await?
                .org_id(),
        )
    };
    let rows = clients::list(&caller.id, org, after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |c| Uuid::parse_str(&c.client_id).unwrap_or_default(),
        OidcClient::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    pub name: String,
    /// Bind the client to an org (required unless the caller is a super-admin).
    pub org_id: Option<Uuid>,
    /// Exact-match redirect URIs (no wildcards).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Default `["authorization_code", "refresh_token"]`.
    pub grant_types: Option<Vec<String>>,
    /// Default `["openid", "profile", "email", "offline_access"]`.
    pub scopes: Option<Vec<String>>,
    /// Default `none` for public clients, `client_secret_basic` otherwise.
    pub token_endpoint_auth_method: Option<String>,
    /// A public client (no secret; PKCE required).
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub first_party: bool,
    /// `ES256` (default), `RS256` or `EdDSA` (once a key of it exists).
    pub id_token_signed_response_alg: Option<String>,
    /// Where logout tokens are POSTed (OIDC Back-Channel Logout 1.0).
    pub backchannel_logout_uri: Option<String>,
    /// Public keys (a JWK Set) of a `private_key_jwt` client.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientWithSecret {
    /// The client secret, shown only in this answer (null for public clients).
    pub client_secret: Option<String>,
    pub client: OidcClient,
}

#[utoipa::path(post, path = "/oidc-clients", tag = "oidc-clients", request_body = CreateClient,
    responses((status = 201, body = ClientWithSecret),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_client(
    caller: Caller,
    Json(body): Json<CreateClient>,
) -> Result<(StatusCode, axum::Json<ClientWithSecret>), ApiError> {
    let key = &caller.principal.key;
    let org_id = match body.org_id.or(key.org_id) {
        Some(o) => Some(
            authorize_org(&caller.id, &caller.principal, o, perm::ORG_WRITE)
                .await?
                .org_id(),
        ),
        None if key.is_admin => None,
        None => {
            return Err(ApiError::Invalid {
                field: "org_id".into(),
                detail: "is required".into(),
            });
        }
    };
    let new = NewClient {
        name: body.name,
        org_id,
        redirect_uris: body.redirect_uris,
        post_logout_redirect_uris: body.post_logout_redirect_uris,
        grant_types: body.grant_types,
        scopes: body.scopes,
        token_endpoint_auth_method: body.token_endpoint_auth_method,
        public: body.public,
        first_party: body.first_party,
        id_token_signed_response_alg: body.id_token_signed_response_alg,
        backchannel_logout_uri: body.backchannel_logout_uri,
        jwks: body.jwks,
    };
    let (client, secret) = clients::create(&caller.id, new).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ClientWithSecret {
            client_secret: secret.map(|s| s.expose().clone()),
            client: client.into(),
        }),
    ))
}

/// The client, if the caller may use `permission` on it (others are 404).
async fn visible(caller: &Caller, client_id: &str, permission: &str) -> Result<Row, ApiError> {
    let client = clients::get(&caller.id, client_id).await?;
    if !caller.principal.key.is_admin {
        let org = client.org_id.ok_or(ApiError::NotFound)?;
        authorize_org(&caller.id, &caller.principal, org, permission).await?;
    }
    Ok(client)
}

#[utoipa::path(get, path = "/oidc-clients/{client_id}", tag = "oidc-clients",
    params(("client_id" = String, Path)),
    responses((status = 200, body = OidcClient),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_client(
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<axum::Json<OidcClient>, ApiError> {
    Ok(axum::Json(
        visible(&caller, &client_id, perm::ORG_READ).await?.into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub first_party: Option<bool>,
    /// Disabled clients cannot authorize, authenticate or use their tokens.
    pub enabled: Option<bool>,
    pub id_token_signed_response_alg: Option<String>,
    /// An empty string removes it.
    pub backchannel_logout_uri: Option<String>,
    /// New public keys of a `private_key_jwt` client.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
}

#[utoipa::path(patch, path = "/oidc-clients/{client_id}", tag = "oidc-clients",
    params(("client_id" = String, Path)), request_body = UpdateClient,
    responses((status = 200, body = OidcClient),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_client(
    caller: Caller,
    Path(client_id): Path<String>,
    Json(body): Json<UpdateClient>,
) -> Result<axum::Json<OidcClient>, ApiError> {
    visible(&caller, &client_id, perm::ORG_WRITE).await?;
    let patch = ClientPatch {
        name: body.name,
        redirect_uris: body.redirect_uris,
        post_logout_redirect_uris: body.post_logout_redirect_uris,
        grant_types: body.grant_types,
        scopes: body.scopes,
        first_party: body.first_party,
        enabled: body.enabled,
        id_token_signed_response_alg: body.id_token_signed_response_alg,
        backchannel_logout_uri: body.backchannel_logout_uri,
        jwks: body.jwks,
    };
    Ok(axum::Json(
        clients::update(&caller.id, &client_id, patch).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/oidc-clients/{client_id}", tag = "oidc-clients",
    params(("client_id" = String, Path)),
    responses((status = 204),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_client(
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    visible(&caller, &client_id, perm::ORG_WRITE).await?;
    clients::delete(&caller.id, &client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a confidential client's secret (the old one stops working at once).
#[utoipa::path(post, path = "/oidc-clients/{client_id}/rotate-secret", tag = "oidc-clients",
    params(("client_id" = String, Path)),
    responses((status = 200, body = ClientWithSecret),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_secret(
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<axum::Json<ClientWithSecret>, ApiError> {
    visible(&caller, &client_id, perm::ORG_WRITE).await?;
    let (client, secret) = clients::rotate_secret(&caller.id, &client_id).await?;
    Ok(axum::Json(ClientWithSecret {
        client_secret: Some(secret.expose().clone()),
        client: client.into(),
    }))
}
