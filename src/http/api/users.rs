//! `/users`: people across every org (super-admin keys only; org admins manage their
//! members under `/organizations/{org_id}/members`).
use super::dto::{Session, User};
use super::{Caller, Page, PageQuery, Problem};
use crate::config::Secret;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::require_admin;
use crate::identity::{sessions, users};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(unlock_user))
        .routes(routes!(set_password))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
}

#[utoipa::path(get, path = "/users", tag = "users", params(PageQuery),
    responses((status = 200, body = Page<User>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_users(
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<User>>, ApiError> {
    require_admin(&caller.principal)?;
    let (after, limit) = q.parts()?;
    let rows = users::list(&caller.id, after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |u| u.user_id,
        User::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    /// Checked against the password policy; omit for a user without a password.
    pub password: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Also add the user to this org as `member`.
    pub org_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_user(
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<User>), ApiError> {
    require_admin(&caller.principal)?;
    let new = users::NewUser {
        email: body.email,
        password: body.password.map(Secret::new),
        first_name: body.first_name,
        last_name: body.last_name,
        org_id: body.org_id,
    };
    let (user, _) = users::create(&caller.id, new).await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

#[utoipa::path(get, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_user(
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<axum::Json<User>, ApiError> {
    require_admin(&caller.principal)?;
    Ok(axum::Json(users::get(&caller.id, user_id).await?.into()))
}

/// `null` (clear) and absent (keep) differ for optional fields.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub picture_url: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    pub can_create_orgs: Option<bool>,
    pub update_password_required: Option<bool>,
    pub email_confirmed: Option<bool>,
    /// false disables the user (sessions end).
    pub enabled: Option<bool>,
    /// true sets the admin lock (sessions end); false lifts it.
    pub locked: Option<bool>,
}

#[utoipa::path(patch, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_user(
    caller: Caller,
    Path(user_id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<axum::Json<User>, ApiError> {
    require_admin(&caller.principal)?;
    let id = &caller.id;
    let patch = users::UserPatch {
        email: body.email,
        username: body.username,
        first_name: body.first_name,
        last_name: body.last_name,
        picture_url: body.picture_url,
        properties: body.properties,
        legacy_user_id: None,
        can_create_orgs: body.can_create_orgs,
        update_password_required: body.update_password_required,
        email_confirmed: body.email_confirmed,
    };
    let mut user = users::update(id, user_id, patch).await?;
    if let Some(enabled) = body.enabled.filter(|e| *e != user.enabled) {
        user = users::set_enabled(id, user_id, enabled).await?;
    }
    match body.locked {
        Some(true) if !user.locked => user = users::lock(id, user_id).await?,
        Some(false) if user.locked => user = users::unlock(id, user_id).await?,
        _ => {}
    }
    Ok(axum::Json(user.into()))
}

#[utoipa::path(delete, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_user(
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller.principal)?;
    users::delete(&caller.id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts the admin lock and any temporary lockout after failed logins.
#[utoipa::path(post, path = "/users/{user_id}/unlock", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn unlock_user(
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<axum::Json<User>, ApiError> {
    require_admin(&caller.principal)?;
    Ok(axum::Json(users::unlock(&caller.id, user_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
    /// Make the user choose a new password at next sign-in.
    #[serde(default)]
    pub require_change: bool,
}

/// Sets the password (policy checked); every session of the user ends.
#[utoipa::path(put, path = "/users/{user_id}/password", tag = "users", params(("user_id" = Uuid, Path)),
    request_body = SetPassword,
    responses((status = 200, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_password(
    caller: Caller,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetPassword>,
) -> Result<axum::Json<User>, ApiError> {
    require_admin(&caller.principal)?;
    let pw = Secret::new(body.password);
    Ok(axum::Json(
        users::set_password(&caller.id, user_id, &pw, body.require_change)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/users/{user_id}/sessions", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Session>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_sessions(
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<axum::Json<Vec<Session>>, ApiError> {
    require_admin(&caller.principal)?;
    users::get(&caller.id, user_id).await?;
    let list = sessions::list_active(&caller.id, user_id).await?;
    Ok(axum::Json(list.into_iter().map(Session::from).collect()))
}

#[utoipa::path(delete, path = "/users/{user_id}/sessions/{session_id}", tag = "users",
    params(("user_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_session(
    caller: Caller,
    Path((user_id, session_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller.principal)?;
    sessions::revoke(&caller.id, user_id, session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
