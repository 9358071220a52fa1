//! `/organizations`: the org itself, its login methods and email domains.
use super::dto::Organization;
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm, require_admin};
use crate::identity::orgs::{self, LoginMethod};
use crate::identity::roles::RoleStructure;
use crate::identity::{memberships, mfa};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(get_org, update_org, delete_org))
        .routes(routes!(list_login_methods))
        .routes(routes!(set_login_method))
        .routes(routes!(list_domains, add_domain))
        .routes(routes!(set_domain_verified))
        .routes(routes!(remove_domain))
}

/// Organizations the caller can see: every org for a super-admin key, otherwise the key
/// owner's orgs (only the key's org for an org-scoped key).
#[utoipa::path(get, path = "/organizations", tag = "organizations", params(PageQuery),
    responses((status = 200, body = Page<Organization>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_orgs(
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Organization>>, ApiError> {
    let (after, limit) = q.parts()?;
    let key = &caller.principal.key;
    let orgs = if key.is_admin {
        orgs::list(&caller.id, after, limit + 1).await?
    } else {
        let owner = key.user_id.ok_or(ApiError::NotFound)?;
        let mut out = Vec::new();
        for m in memberships::list_for_user(&caller.id, owner).await? {
            if key.org_id.is_none_or(|o| o == m.org_id) && after.is_none_or(|a| m.org_id > a) {
                out.push(orgs::get(&caller.id, m.org_id).await?);
            }
        }
        out.sort_by_key(|o| o.org_id);
        out.truncate(limit as usize + 1);
        out
    };
    Ok(axum::Json(Page::from_rows(
        orgs,
        limit,
        |o| o.org_id,
        Organization::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Display name.
    pub org_name: String,
    /// Derived from the name when omitted.
    pub url_safe_org_name: Option<String>,
}

/// Creates an organization (super-admin keys only) with the default roles
/// `owner` ⊇ `admin` ⊇ `member`.
#[utoipa::path(post, path = "/organizations", tag = "organizations", request_body = CreateOrg,
    responses((status = 201, body = Organization),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_org(
    caller: Caller,
    Json(body): Json<CreateOrg>,
) -> Result<(StatusCode, axum::Json<Organization>), ApiError> {
    require_admin(&caller.principal)?;
    let org = orgs::create(
        &caller.id,
        &body.org_name,
        body.url_safe_org_name.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(org.into())))
}

#[utoipa::path(get, path = "/organizations/{org_id}", tag = "organizations",
    params(("org_id" = Uuid, Path)),
    responses((status = 200, body = Organization),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_org(
    caller: Caller,
    Path(org_id): Path<Uuid>,
) -> Result<axum::Json<Organization>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_READ).await?;
    Ok(axum::Json(
        orgs::get(&caller.id, scope.org_id()).await?.into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    /// Display name (the url_safe_org_name stays).
    pub org_name: Option<String>,
    /// Replaces the metadata (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub org_metadata: Option<serde_json::Value>,
    /// `single_role` or `multi_role`.
    pub org_role_structure: Option<String>,
    /// Members must use MFA to sign in.
    pub mfa_required: Option<bool>,
}

/// Changes an organization's settings (`org:write`).
#[utoipa::path(patch, path = "/organizations/{org_id}", tag = "organizations",
    params(("org_id" = Uuid, Path)), request_body = UpdateOrg,
    responses((status = 200, body = Organization),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_org(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<UpdateOrg>,
) -> Result<axum::Json<Organization>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    let structure = body
        .org_role_structure
        .as_deref()
        .map(RoleStructure::parse)
        .transpose()?;
    if let Some(s) = structure {
        orgs::set_role_structure(&caller.id, scope.org_id(), s).await?;
    }
    if let Some(on) = body.mfa_required {
        mfa::set_org_mfa_required(&caller.id, scope.org_id(), on).await?;
    }
    Ok(axum::Json(
        orgs::get(&caller.id, scope.org_id()).await?.into(),
    ))
}

/// Deletes the organization and everything it owns (`org:write`).
#[utoipa::path(delete, path = "/organizations/{org_id}", tag = "organizations",
    params(("org_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_org(caller: Caller, Path(org_id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    orgs::delete(&caller.id, scope.org_id()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginMethodState {
    /// `password`, `magic_link`, `saml`, `oidc` or `passkey`.
    pub method: String,
    pub enabled: bool,
}

#[utoipa::path(get, path = "/organizations/{org_id}/login-methods", tag = "organizations",
    params(("org_id" = Uuid, Path)),
    responses((status = 200, body = Vec<LoginMethodState>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_login_methods(
    caller: Caller,
    Path(org_id): Path<Uuid>,
) -> Result<axum::Json<Vec<LoginMethodState>>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_READ).await?;
    let methods = orgs::login_methods(&caller.id, scope.org_id()).await?;
    Ok(axum::Json(
        methods
            .into_iter()
            .map(|(m, enabled)| LoginMethodState {
                method: m.as_str().into(),
                enabled,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLoginMethod {
    pub enabled: bool,
}

/// Allows or refuses one login method for the org's members (`org:write`).
#[utoipa::path(put, path = "/organizations/{org_id}/login-methods/{method}", tag = "organizations",
    params(("org_id" = Uuid, Path), ("method" = String, Path)), request_body = SetLoginMethod,
    responses((status = 200, body = LoginMethodState),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_login_method(
    caller: Caller,
    Path((org_id, method)): Path<(Uuid, String)>,
    Json(body): Json<SetLoginMethod>,
) -> Result<axum::Json<LoginMethodState>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    let method = LoginMethod::parse(&method)?;
    orgs::set_login_method(&caller.id, scope.org_id(), method, body.enabled).await?;
    Ok(axum::Json(LoginMethodState {
        method: method.as_str().into(),
        enabled: body.enabled,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Domain {
    pub domain_id: Uuid,
    pub org_id: Uuid,
    pub domain: String,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
}

impl From<crate::store::org_settings::OrgDomain> for Domain {
    fn from(d: crate::store::org_settings::OrgDomain) -> Self {
        Domain {
            domain_id: d.domain_id,
            org_id: d.org_id,
            domain: d.domain,
            verified: d.verified,
            created_at: d.created_at,
        }
    }
}

#[utoipa::path(get, path = "/organizations/{org_id}/domains", tag = "organizations",
    params(("org_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Domain>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_domains(
    caller: Caller,
    Path(org_id): Path<Uuid>,
) -> Result<axum::Json<Vec<Domain>>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_READ).await?;
    let domains = orgs::list_domains(&caller.id, scope.org_id()).await?;
    Ok(axum::Json(domains.into_iter().map(Domain::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    /// An email domain for home-realm discovery, e.g. `acme.com`.
    pub domain: String,
}

/// Claims an email domain for the org (`org:write`); a domain claimed by any org is a 409.
#[utoipa::path(post, path = "/organizations/{org_id}/domains", tag = "organizations",
    params(("org_id" = Uuid, Path)), request_body = AddDomain,
    responses((status = 201, body = Domain),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_domain(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<AddDomain>,
) -> Result<(StatusCode, axum::Json<Domain>), ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    let d = orgs::add_domain(&caller.id, scope.org_id(), &body.domain).await?;
    Ok((StatusCode::CREATED, axum::Json(d.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDomainVerified {
    pub verified: bool,
}

/// Marks a claimed domain verified or not. Super-admin keys only: a verified domain routes
/// its addresses' logins to the org's IdP and lets that IdP link existing accounts, so an
/// org cannot vouch for itself.
#[utoipa::path(put, path = "/organizations/{org_id}/domains/{domain}/verified", tag = "organizations",
    params(("org_id" = Uuid, Path), ("domain" = String, Path)), request_body = SetDomainVerified,
    responses((status = 200, body = Domain),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_domain_verified(
    caller: Caller,
    Path((org_id, domain)): Path<(Uuid, String)>,
    Json(body): Json<SetDomainVerified>,
) -> Result<axum::Json<Domain>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    if !caller.principal.key.is_admin {
        return Err(ApiError::Forbidden(
            "only a super-admin key may verify a domain".into(),
        ));
    }
    orgs::set_domain_verified(&caller.id, scope.org_id(), &domain, body.verified).await?;
    let d = orgs::list_domains(&caller.id, scope.org_id())
        .await?
        .into_iter()
        .find(|d| orgs::normalize_domain(&domain).is_ok_and(|n| n == d.domain))
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(d.into()))
}

#[utoipa::path(delete, path = "/organizations/{org_id}/domains/{domain}", tag = "organizations",
    params(("org_id" = Uuid, Path), ("domain" = String, Path)),
    responses((status = 204, description = "Removed"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_domain(
    caller: Caller,
    Path((org_id, domain)): Path<(Uuid, String)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    orgs::remove_domain(&caller.id, scope.org_id(), &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}
