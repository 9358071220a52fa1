//! `/orgs/{org_id}/identity-providers`: an org's enterprise SSO connections (SAML 2.0 or
//! upstream OpenID Connect). Reading needs `org:read`, changing `org:write`; a provider of
//! another org is a 404. The upstream client secret is write-only.
use super::{Caller, Page, PageQuery, Problem};
use crate::config::Secret;
use crate::federation::providers::{self, NewProvider, ProviderPatch};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm};
use crate::store::federation::IdentityProvider;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_identity_providers, create_identity_provider))
        .routes(routes!(
            get_identity_provider,
            update_identity_provider,
            delete_identity_provider
        ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointsDto {
    /// Starts a login at this provider.
    pub login_url: String,
    /// SAML: our entity ID, metadata and ACS (give these to the IdP).
    pub sp_entity_id: Option<String>,
    pub metadata_url: Option<String>,
    pub acs_url: Option<String>,
    /// OIDC: the redirect URI to register at the upstream provider.
    pub redirect_uri: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateWarningDto {
    /// The certificate's subject (or fingerprint).
    pub certificate: String,
    pub not_after: DateTime<Utc>,
    /// Negative once expired.
    pub days_left: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityProviderDto {
    pub provider_id: Uuid,
    pub org_id: Uuid,
    /// `saml` or `oidc`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub enabled: bool,
    /// The protocol settings and the JIT settings (see the README).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub client_secret_set: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub endpoints: EndpointsDto,
    /// SAML signing certificates expiring within 30 days (or expired).
    pub certificate_warnings: Vec<CertificateWarningDto>,
}

fn dto(p: IdentityProvider, caller: &Caller) -> IdentityProviderDto {
    let now = caller.id.clock.now();
    let e = providers::endpoints(caller.id.config.issuer.as_str(), &p);
    let certificate_warnings = providers::certificate_warnings(&p, now)
        .into_iter()
        .map(|w| {
            tracing::warn!(provider_id = %p.provider_id, certificate = %w.certificate,
                not_after = %w.not_after, "IdP certificate expires soon");
            CertificateWarningDto {
                certificate: w.certificate,
                not_after: w.not_after,
                days_left: w.days_left,
            }
        })
        .collect();
    IdentityProviderDto {
        provider_id: p.provider_id,
        org_id: p.org_id,
        client_secret_set: p.secret.is_some(),
        kind: p.kind,
        name: p.name,
        enabled: p.enabled,
        config: p.config.0,
        created_at: p.created_at,
        updated_at: p.updated_at,
        endpoints: EndpointsDto {
            login_url: e.login_url,
            sp_entity_id: e.sp_entity_id,
            metadata_url: e.metadata_url,
            acs_url: e.acs_url,
            redirect_uri: e.redirect_uri,
        },
        certificate_warnings,
    }
}

#[utoipa::path(get, path = "/orgs/{org_id}/identity-providers", tag = "identity-providers",
    params(("org_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<IdentityProviderDto>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_identity_providers(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<IdentityProviderDto>>, ApiError> {
    let (after, limit) = q.parts()?;
    authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_READ).await?;
    let rows = providers::list(&caller.id, org_id, after, i64::from(limit) + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |p| p.provider_id,
        |p| dto(p, &caller),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityProvider {
    /// `saml` or `oidc`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(saml|oidc)$")]
    pub kind: String,
    #[schema(max_length = 200)]
    pub name: String,
    /// Default true. A SAML provider needs at least one IdP signing certificate.
    pub enabled: Option<bool>,
    /// Settings (laid over `saml_metadata` when both are given).
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// The IdP's SAML metadata XML (EntityDescriptor).
    pub saml_metadata: Option<String>,
    /// OIDC: the client secret at the upstream provider (write-only).
    pub client_secret: Option<String>,
}

#[utoipa::path(post, path = "/orgs/{org_id}/identity-providers", tag = "identity-providers",
    params(("org_id" = Uuid, Path)), request_body = CreateIdentityProvider,
    responses((status = 201, body = IdentityProviderDto),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_identity_provider(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<CreateIdentityProvider>,
) -> Result<(StatusCode, axum::Json<IdentityProviderDto>), ApiError> {
    authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    let extra = body.config.unwrap_or_else(|| serde_json::json!({}));
    let config = match (&body.saml_metadata, body.kind.as_str()) {
        (Some(xml), "saml") => providers::config_from_metadata(xml, &extra)?,
        (Some(_), _) => {
            return Err(ApiError::Invalid {
                field: "saml_metadata".into(),
                detail: "is for SAML providers".into(),
            });
        }
        (None, _) => extra,
    };
    let p = providers::create(
        &caller.id,
        org_id,
        NewProvider {
            kind: body.kind,
            name: body.name,
            config,
            client_secret: body.client_secret.map(Secret::new),
            enabled: body.enabled.unwrap_or(true),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(dto(p, &caller))))
}

#[utoipa::path(get, path = "/orgs/{org_id}/identity-providers/{provider_id}", tag = "identity-providers",
    params(("org_id" = Uuid, Path), ("provider_id" = Uuid, Path)),
    responses((status = 200, body = IdentityProviderDto),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_identity_provider(
    caller: Caller,
    Path((org_id, provider_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<IdentityProviderDto>, ApiError> {
    authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_READ).await?;
    let p = providers::get(&caller.id, org_id, provider_id).await?;
    Ok(axum::Json(dto(p, &caller)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentityProvider {
    #[schema(max_length = 200)]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// Replaces the whole settings object.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// OIDC: a new client secret (write-only).
    pub client_secret: Option<String>,
}

#[utoipa::path(patch, path = "/orgs/{org_id}/identity-providers/{provider_id}", tag = "identity-providers",
    params(("org_id" = Uuid, Path), ("provider_id" = Uuid, Path)), request_body = UpdateIdentityProvider,
    responses((status = 200, body = IdentityProviderDto),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_identity_provider(
    caller: Caller,
    Path((org_id, provider_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateIdentityProvider>,
) -> Result<axum::Json<IdentityProviderDto>, ApiError> {
    authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    let p = providers::update(
        &caller.id,
        org_id,
        provider_id,
        ProviderPatch {
            name: body.name,
            config: body.config,
            client_secret: body.client_secret.map(|s| Some(Secret::new(s))),
            enabled: body.enabled,
        },
    )
    .await?;
    Ok(axum::Json(dto(p, &caller)))
}

#[utoipa::path(delete, path = "/orgs/{org_id}/identity-providers/{provider_id}", tag = "identity-providers",
    params(("org_id" = Uuid, Path), ("provider_id" = Uuid, Path)),
    responses((status = 204),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_identity_provider(
    caller: Caller,
    Path((org_id, provider_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    authorize_org(&caller.id, &caller.principal, org_id, perm::ORG_WRITE).await?;
    providers::delete(&caller.id, org_id, provider_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
