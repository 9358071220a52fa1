//! `/orgs/{org_id}/scim-clients`: SCIM clients of an org (one per IdP connection), their
//! tokens (shown once), attribute mappings with a dry run, and group → role rules. Managing
//! provisioning is member administration: it needs `members:write`. A client of another
//! org is a 404.
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm};
use crate::scim::clients;
use crate::store::scim::{ScimClient, ScimToken};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scim_clients, create_scim_client))
        .routes(routes!(
            get_scim_client,
            update_scim_client,
            delete_scim_client
        ))
        .routes(routes!(list_scim_tokens, rotate_scim_token))
        .routes(routes!(revoke_scim_token))
        .routes(routes!(get_scim_mappings, set_scim_mappings))
        .routes(routes!(scim_mapping_dry_run))
        .routes(routes!(get_scim_group_roles, set_scim_group_roles))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScimClientDto {
    pub client_id: Uuid,
    pub org_id: Uuid,
    pub name: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    /// The SCIM base URL to give the IdP.
    pub base_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScimTokenDto {
    pub token_id: Uuid,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<ScimToken> for ScimTokenDto {
    fn from(t: ScimToken) -> Self {
        ScimTokenDto {
            token_id: t.token_id,
            created_at: t.created_at,
            expires_at: t.expires_at,
        }
    }
}

fn dto(c: ScimClient, caller: &Caller) -> ScimClientDto {
    ScimClientDto {
        client_id: c.client_id,
        org_id: c.org_id,
        name: c.name,
        enabled: c.enabled,
        created_at: c.created_at,
        base_url: crate::scim::base_url(&caller.id.config),
    }
}

/// Authorizes the caller on the org and loads a client of that org (else 404).
async fn client_of(caller: &Caller, org_id: Uuid, client_id: Uuid) -> Result<ScimClient, ApiError> {
    authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_WRITE).await?;
    let c = clients::get(&caller.id, client_id).await?;
    if c.org_id != org_id {
        return Err(ApiError::NotFound);
    }
    Ok(c)
}

#[utoipa::path(get, path = "/orgs/{org_id}/scim-clients", tag = "scim", params(("org_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<ScimClientDto>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_scim_clients(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ScimClientDto>>, ApiError> {
    let (after, limit) = q.parts()?;
    authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_WRITE).await?;
    let rows = clients::list(&caller.id, Some(org_id), after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |c| c.client_id,
        |c| dto(c, &caller),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScimClient {
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedScimClient {
    pub client: ScimClientDto,
    /// The bearer token, shown only in this response.
    pub token: String,
    pub token_id: Uuid,
    pub token_expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/orgs/{org_id}/scim-clients", tag = "scim", params(("org_id" = Uuid, Path)),
    request_body = CreateScimClient,
    responses((status = 201, body = CreatedScimClient),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_scim_client(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<CreateScimClient>,
) -> Result<(StatusCode, axum::Json<CreatedScimClient>), ApiError> {
    authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_WRITE).await?;
    let (client, token, secret) = clients::create(&caller.id, org_id, body.name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedScimClient {
            client: dto(client, &caller),
            token: secret.expose().clone(),
            token_id: token.token_id,
            token_expires_at: token.expires_at,
        }),
    ))
}

#[utoipa::path(get, path = "/orgs/{org_id}/scim-clients/{scim_client_id}", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)),
    responses((status = 200, body = ScimClientDto),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_scim_client(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<ScimClientDto>, ApiError> {
    let c = client_of(&caller, org_id, client_id).await?;
    Ok(axum::Json(dto(c, &caller)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScimClient {
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// A disabled client's tokens stop working at once.
    pub enabled: Option<bool>,
}

#[utoipa::path(patch, path = "/orgs/{org_id}/scim-clients/{scim_client_id}", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)), request_body = UpdateScimClient,
    responses((status = 200, body = ScimClientDto),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_scim_client(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateScimClient>,
) -> Result<axum::Json<ScimClientDto>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    let c = clients::update(&caller.id, client_id, body.name.map(Some), body.enabled).await?;
    Ok(axum::Json(dto(c, &caller)))
}

#[utoipa::path(delete, path = "/orgs/{org_id}/scim-clients/{scim_client_id}", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)),
    responses((status = 204),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_scim_client(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    clients::delete(&caller.id, client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/tokens", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)),
    responses((status = 200, body = Vec<ScimTokenDto>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_scim_tokens(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Vec<ScimTokenDto>>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    let tokens = clients::tokens(&caller.id, client_id).await?;
    Ok(axum::Json(tokens.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedToken {
    /// The new bearer token, shown only in this response. Older tokens stay valid for
    /// `scim.token_overlap_secs`.
    pub token: String,
    pub token_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/tokens", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)),
    responses((status = 201, body = RotatedToken),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_scim_token(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
) -> Result<(StatusCode, axum::Json<RotatedToken>), ApiError> {
    client_of(&caller, org_id, client_id).await?;
    let (t, secret) = clients::rotate_token(&caller.id, client_id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RotatedToken {
            token: secret.expose().clone(),
            token_id: t.token_id,
            expires_at: t.expires_at,
        }),
    ))
}

#[utoipa::path(delete, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/tokens/{token_id}", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 204),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_scim_token(
    caller: Caller,
    Path((org_id, client_id, token_id)): Path<(Uuid, Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    clients::revoke_token(&caller.id, client_id, token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingRow {
    /// A SCIM User attribute path: `title`, `name.givenName`, `emails[primary]`,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`.
    #[schema(max_length = 300)]
    pub scim_attribute: String,
    /// `email`, `username`, `first_name`, `last_name`, `picture_url`, `enabled` or
    /// `properties.<key>`.
    #[schema(max_length = 80)]
    pub local_attribute: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Mappings {
    /// The client's own rows.
    pub mappings: Vec<MappingRow>,
    /// What applies: the defaults overridden by the rows.
    pub effective: Vec<MappingRow>,
}

async fn mappings_of(caller: &Caller, client_id: Uuid) -> Result<Mappings, ApiError> {
    let rows = clients::mappings(&caller.id, client_id).await?;
    let effective = clients::effective_rules(&caller.id, client_id).await?;
    Ok(Mappings {
        mappings: rows
            .into_iter()
            .map(|m| MappingRow {
                scim_attribute: m.scim_attribute,
                local_attribute: m.local_attribute,
            })
            .collect(),
        effective: effective
            .into_iter()
            .map(|r| MappingRow {
                scim_attribute: r.scim,
                local_attribute: r.local,
            })
            .collect(),
    })
}

#[utoipa::path(get, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/mappings", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)),
    responses((status = 200, body = Mappings),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_scim_mappings(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Mappings>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    Ok(axum::Json(mappings_of(&caller, client_id).await?))
}

#[utoipa::path(put, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/mappings", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)), request_body = Vec<MappingRow>,
    responses((status = 200, body = Mappings),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_scim_mappings(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
    Json(rows): Json<Vec<MappingRow>>,
) -> Result<axum::Json<Mappings>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    let pairs = rows
        .into_iter()
        .map(|r| (r.scim_attribute, r.local_attribute))
        .collect();
    clients::set_mappings(&caller.id, client_id, pairs).await?;
    Ok(axum::Json(mappings_of(&caller, client_id).await?))
}

/// Shows how a sample SCIM User payload would land in Lintel under this client's mapping;
/// nothing is written.
#[utoipa::path(post, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/mappings/dry-run", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)), request_body = Object,
    responses((status = 200, body = Object),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn scim_mapping_dry_run(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
    Json(payload): Json<serde_json::Value>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    Ok(axum::Json(
        clients::dry_run(&caller.id, client_id, &payload).await?,
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRoleRow {
    /// A SCIM Group displayName (matched case-insensitively).
    #[schema(min_length = 1, max_length = 256)]
    pub group: String,
    /// A role name of the org.
    #[schema(min_length = 1, max_length = 64)]
    pub role: String,
}

async fn group_roles_of(
    caller: &Caller,
    org_id: Uuid,
    client_id: Uuid,
) -> Result<Vec<GroupRoleRow>, ApiError> {
    let rules = clients::group_roles(&caller.id, client_id).await?;
    let roles = crate::identity::roles::list_roles(&caller.id, org_id).await?;
    Ok(rules
        .into_iter()
        .filter_map(|r| {
            roles
                .iter()
                .find(|role| role.role_id == r.role_id)
                .map(|role| GroupRoleRow {
                    group: r.group_display_name,
                    role: role.name.clone(),
                })
        })
        .collect())
}

#[utoipa::path(get, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/group-roles", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)),
    responses((status = 200, body = Vec<GroupRoleRow>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_scim_group_roles(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Vec<GroupRoleRow>>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    Ok(axum::Json(
        group_roles_of(&caller, org_id, client_id).await?,
    ))
}

/// Replaces the rules; members of a named group then hold the role in the org.
#[utoipa::path(put, path = "/orgs/{org_id}/scim-clients/{scim_client_id}/group-roles", tag = "scim",
    params(("org_id" = Uuid, Path), ("scim_client_id" = Uuid, Path)), request_body = Vec<GroupRoleRow>,
    responses((status = 200, body = Vec<GroupRoleRow>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_scim_group_roles(
    caller: Caller,
    Path((org_id, client_id)): Path<(Uuid, Uuid)>,
    Json(rows): Json<Vec<GroupRoleRow>>,
) -> Result<axum::Json<Vec<GroupRoleRow>>, ApiError> {
    client_of(&caller, org_id, client_id).await?;
    let pairs = rows.into_iter().map(|r| (r.group, r.role)).collect();
    clients::set_group_roles(&caller.id, client_id, pairs).await?;
    Ok(axum::Json(
        group_roles_of(&caller, org_id, client_id).await?,
    ))
}
