//! `/rate-limit-policies` (super-admin keys only): policies, and their assignments to
//! users, orgs and API keys. The `default.*` policies follow `config.toml` and are
//! read-only here (403).
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::require_admin;
use crate::identity::rate_limit::{self, PolicyUpdate, Scope, Target};
use crate::store::rate_limits::Policy;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(list_assignments, create_assignment))
        .routes(routes!(delete_assignment))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitPolicy {
    pub policy_id: i32,
    pub name: String,
    /// What one counter counts: `ip`, `user`, `org`, `api_key` or `client`.
    pub scope: String,
    pub limit_count: i32,
    pub window_sec: i32,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Policy> for RateLimitPolicy {
    fn from(p: Policy) -> Self {
        RateLimitPolicy {
            policy_id: p.policy_id,
            name: p.name,
            scope: p.scope,
            limit_count: p.limit_count,
            window_sec: p.window_sec,
            description: p.description,
            created_at: p.created_at,
        }
    }
}

/// Policy ids are integers; the page cursor carries one in the low 64 bits of the opaque
/// cursor UUID (policies are configuration, few, so the page is cut from the full list).
fn policy_cursor(policy_id: i32) -> Uuid {
    Uuid::from_u64_pair(0, u64::from(policy_id.unsigned_abs()))
}

fn cursor_policy(cursor: Uuid) -> Option<i32> {
    let (hi, lo) = cursor.as_u64_pair();
    if hi != 0 {
        return None;
    }
    i32::try_from(lo).ok()
}

/// Every policy, `default.*` ones included, by id.
#[utoipa::path(get, path = "/rate-limit-policies", tag = "rate-limits", params(PageQuery),
    responses((status = 200, body = Page<RateLimitPolicy>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_policies(
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<RateLimitPolicy>>, ApiError> {
    require_admin(&caller.principal)?;
    let (after, limit) = q.parts()?;
    let after = match after {
        None => None,
        Some(c) => {
            Some(cursor_policy(c).ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?)
        }
    };
    let rows: Vec<Policy> = rate_limit::list_policies(&caller.id)
        .await?
        .into_iter()
        .filter(|p| after.is_none_or(|a| p.policy_id > a))
        .take(limit as usize + 1)
        .collect();
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |p| policy_cursor(p.policy_id),
        RateLimitPolicy::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// Unique; `default.*` is reserved.
    pub name: String,
    /// `ip`, `user`, `org`, `api_key` or `client`.
    pub scope: String,
    /// Requests allowed per window.
    #[schema(minimum = 1)]
    pub limit_count: u32,
    /// Window length in seconds.
    #[schema(minimum = 1)]
    pub window_sec: u32,
    pub description: Option<String>,
}

#[utoipa::path(post, path = "/rate-limit-policies", tag = "rate-limits", request_body = CreatePolicy,
    responses((status = 201, body = RateLimitPolicy),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_policy(
    caller: Caller,
    Json(body): Json<CreatePolicy>,
) -> Result<(StatusCode, axum::Json<RateLimitPolicy>), ApiError> {
    require_admin(&caller.principal)?;
    let scope = Scope::parse(&body.scope)?;
    let p = rate_limit::create_policy(
        &caller.id,
        &body.name,
        scope,
        body.limit_count,
        body.window_sec,
        body.description.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(p.into())))
}

#[utoipa::path(get, path = "/rate-limit-policies/{policy_id}", tag = "rate-limits",
    params(("policy_id" = i32, Path)),
    responses((status = 200, body = RateLimitPolicy),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_policy(
    caller: Caller,
    Path(policy_id): Path<i32>,
) -> Result<axum::Json<RateLimitPolicy>, ApiError> {
    require_admin(&caller.principal)?;
    Ok(axum::Json(
        rate_limit::get_policy(&caller.id, policy_id).await?.into(),
    ))
}

/// `null` (clear) and absent (keep) differ for optional fields.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    pub name: Option<String>,
    /// `ip`, `user`, `org`, `api_key` or `client`.
    pub scope: Option<String>,
    #[schema(minimum = 1)]
    pub limit_count: Option<u32>,
    #[schema(minimum = 1)]
    pub window_sec: Option<u32>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// Changes a policy (not a `default.*` one: 403). Counters of the current window carry on
/// under the new limit.
#[utoipa::path(patch, path = "/rate-limit-policies/{policy_id}", tag = "rate-limits",
    params(("policy_id" = i32, Path)), request_body = UpdatePolicy,
    responses((status = 200, body = RateLimitPolicy),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_policy(
    caller: Caller,
    Path(policy_id): Path<i32>,
    Json(body): Json<UpdatePolicy>,
) -> Result<axum::Json<RateLimitPolicy>, ApiError> {
    require_admin(&caller.principal)?;
    let scope = body.scope.as_deref().map(Scope::parse).transpose()?;
    let p = rate_limit::update_policy(
        &caller.id,
        policy_id,
        PolicyUpdate {
            name: body.name,
            scope,
            limit_count: body.limit_count,
            window_sec: body.window_sec,
            description: body.description,
        },
    )
    .await?;
    Ok(axum::Json(p.into()))
}

/// Deletes a policy with its assignments and counters (not a `default.*` one: 403).
#[utoipa::path(delete, path = "/rate-limit-policies/{policy_id}", tag = "rate-limits",
    params(("policy_id" = i32, Path)),
    responses((status = 204, description = "Deleted"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_policy(
    caller: Caller,
    Path(policy_id): Path<i32>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller.principal)?;
    rate_limit::delete_policy(&caller.id, policy_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whom a policy is assigned to.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitAssignment {
    pub policy_id: i32,
    /// `user`, `org` or `api_key`.
    pub target_type: String,
    pub target_id: Uuid,
}

impl RateLimitAssignment {
    fn new(policy_id: i32, t: Target) -> Self {
        RateLimitAssignment {
            policy_id,
            target_type: t.kind().to_string(),
            target_id: t.target_id(),
        }
    }
}

/// Users, orgs and API keys the policy is assigned to, by target id.
#[utoipa::path(get, path = "/rate-limit-policies/{policy_id}/assignments", tag = "rate-limits",
    params(("policy_id" = i32, Path), PageQuery),
    responses((status = 200, body = Page<RateLimitAssignment>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_assignments(
    caller: Caller,
    Path(policy_id): Path<i32>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<RateLimitAssignment>>, ApiError> {
    require_admin(&caller.principal)?;
    let (after, limit) = q.parts()?;
    let rows = rate_limit::list_targets(&caller.id, policy_id, after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |t| t.target_id(),
        |t| RateLimitAssignment::new(policy_id, t),
    )))
}

/// Exactly one of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssignment {
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
}

impl CreateAssignment {
    fn target(&self) -> Result<Target, ApiError> {
        match (self.user_id, self.org_id, self.api_key_id) {
            (Some(u), None, None) => Ok(Target::User(u)),
            (None, Some(o), None) => Ok(Target::Org(o)),
            (None, None, Some(k)) => Ok(Target::ApiKey(k)),
            _ => Err(ApiError::Invalid {
                field: "user_id".into(),
                detail: "give exactly one of user_id, org_id, api_key_id".into(),
            }),
        }
    }
}

/// Assigns the policy to a user, an org or an API key: for requests carrying it, the
/// policy replaces the family default. Assigning twice is 409; an unknown target 404.
#[utoipa::path(post, path = "/rate-limit-policies/{policy_id}/assignments", tag = "rate-limits",
    params(("policy_id" = i32, Path)), request_body = CreateAssignment,
    responses((status = 201, body = RateLimitAssignment),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_assignment(
    caller: Caller,
    Path(policy_id): Path<i32>,
    Json(body): Json<CreateAssignment>,
) -> Result<(StatusCode, axum::Json<RateLimitAssignment>), ApiError> {
    require_admin(&caller.principal)?;
    let target = body.target()?;
    rate_limit::assign(&caller.id, policy_id, target).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RateLimitAssignment::new(policy_id, target)),
    ))
}

/// Removes an assignment, named by its target: `target_type` is `user`, `org` or
/// `api_key`.
#[utoipa::path(delete, path = "/rate-limit-policies/{policy_id}/assignments/{target_type}/{target_id}",
    tag = "rate-limits",
    params(("policy_id" = i32, Path),
           ("target_type" = String, Path, description = "`user`, `org` or `api_key`"),
           ("target_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_assignment(
    caller: Caller,
    Path((policy_id, target_type, target_id)): Path<(i32, String, Uuid)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller.principal)?;
    let target = Target::parse(&target_type, target_id)?;
    rate_limit::unassign(&caller.id, policy_id, target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_cursors_round_trip() {
        for id in [1, 7, i32::MAX] {
            assert_eq!(cursor_policy(policy_cursor(id)), Some(id));
        }
        assert_eq!(cursor_policy(Uuid::now_v7()), None);
    }

    #[test]
    fn exactly_one_assignment_target() {
        let u = Uuid::now_v7();
        let a = |user_id, org_id, api_key_id| CreateAssignment {
            user_id,
            org_id,
            api_key_id,
        };
        assert_eq!(a(Some(u), None, None).target().unwrap(), Target::User(u));
        assert_eq!(a(None, Some(u), None).target().unwrap(), Target::Org(u));
        assert_eq!(a(None, None, Some(u)).target().unwrap(), Target::ApiKey(u));
        assert!(a(None, None, None).target().is_err());
        assert!(a(Some(u), Some(u), None).target().is_err());
    }
}
