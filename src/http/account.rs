//! The account pages around login (hosted, server-rendered, CSRF-protected): forgot and
//! reset password, the email-verification landing, sign-up from a waitlist invitation, and
//! a small account page (change password, TOTP enrolment with one-time recovery codes, list
//! and revoke own sessions). Every action goes through the identity core.
use super::oidc::{
    CSRF_COOKIE, SESSION_COOKIE, browser_session, csrf_ok, csrf_token, error_page, field, form,
    html, login_limited, peer, redirect, set_cookie, user_agent,
};
use super::state::AppState;
use crate::config::{Secret, SignupMode};
use crate::identity::audit::{Actor, ActorKind};
use crate::identity::{Identity, IdentityError, mfa, sessions, tokens, users, waitlist};
use crate::store::sessions::Session;
use crate::web;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::SocketAddr;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/forgot-password", get(forgot_form).post(forgot))
        .route(tokens::RESET_PASSWORD_PATH, get(reset_form).post(reset))
        .route(tokens::VERIFY_EMAIL_PATH, get(verify_email))
        .route(waitlist::SIGNUP_PATH, get(signup_form).post(signup))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/sessions/revoke", post(revoke_session))
        .route("/account/totp", post(totp_begin))
        .route("/account/totp/confirm", post(totp_confirm))
}

fn with_csrf(state: &AppState, mut resp: Response, csrf: &str, set: bool) -> Response {
    if set {
        set_cookie(
            &mut resp,
            CSRF_COOKIE,
            csrf,
            state.oidc.secure_cookies(),
            None,
        );
    }
    resp
}

fn message(status: StatusCode, title: &str, text: &str, error: bool) -> Response {
    html(status, web::message_page(title, text, error))
}

fn message_with_link(status: StatusCode, title: &str, text: &str, error: bool) -> Response {
    html(
        status,
        web::render(
            "message.html",
            web::MessagePage {
                title,
                message: text,
                error,
                link: Some("/login"),
                link_text: Some("Sign in"),
            },
        ),
    )
}

fn forbidden_form() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "The form expired or was not sent by this site. Go back and try again.",
    )
}

fn problem_text(e: &IdentityError) -> String {
    match e {
        IdentityError::Invalid { message, .. } => message.clone(),
        IdentityError::TokenInvalid => "This link is not valid.".into(),
        IdentityError::TokenExpired => "This link has expired.".into(),
        IdentityError::TokenUsed => "This link has already been used.".into(),
        IdentityError::InvalidCredentials => "The current password is wrong.".into(),
        IdentityError::MfaCodeInvalid | IdentityError::MfaCodeReplayed => {
            "That code is not valid.".into()
        }
        IdentityError::Conflict { .. } => "An account with this address already exists.".into(),
        IdentityError::Forbidden { .. } => "Sign-up is not open.".into(),
        _ => "Something went wrong. Try again later.".into(),
    }
}

fn internal(e: &IdentityError) -> bool {
    matches!(e, IdentityError::Store(_) | IdentityError::Internal(_))
}

// ---------------------------------------------------------------------------------------
// Forgot / reset password, email verification, sign-up

async fn forgot_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = csrf_token(&headers);
    let page = web::render(
        "forgot.html",
        web::FormPage {
            csrf: &csrf,
            ..Default::default()
        },
    );
    with_csrf(&state, html(StatusCode::OK, page), &csrf, set)
}

/// The same answer whether or not the address has an account.
async fn forgot(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if !csrf_ok(&headers, &params) {
        return forbidden_form();
    }
    if let Some(r) = login_limited(&state, &Some(ci)).await {
        return r;
    }
    let email = field(&params, "email").unwrap_or("");
    match tokens::request_password_reset(&state.identity, email).await {
        Err(e) if internal(&e) => {
            tracing::error!(error = %e, "password reset request failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                &problem_text(&e),
                true,
            )
        }
        _ => message(
            StatusCode::OK,
            "Check your email",
            "If an account exists for that address, we sent it a link to choose a new password.",
            false,
        ),
    }
}

async fn reset_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (csrf, set) = csrf_token(&headers);
    let page = web::render(
        "reset.html",
        web::FormPage {
            csrf: &csrf,
            token: q.get("token").map(String::as_str).unwrap_or(""),
            ..Default::default()
        },
    );
    with_csrf(&state, html(StatusCode::OK, page), &csrf, set)
}

async fn reset(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    if !csrf_ok(&headers, &params) {
        return forbidden_form();
    }
    let token = field(&params, "token").unwrap_or("");
    let new = field(&params, "new_password").unwrap_or("");
    let result = if Some(new) != field(&params, "confirm_password") {
        Err(IdentityError::invalid(
            "new_password",
            "the passwords differ",
        ))
    } else {
        tokens::reset_password(&state.identity, token, &Secret::new(new.to_string()))
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => message(
            StatusCode::OK,
            "Password changed",
            "Your password was changed and your sessions were signed out. Sign in again from your application.",
            false,
        ),
        Err(e) => {
            let (csrf, _) = csrf_token(&headers);
            let text = problem_text(&e);
            html(
                if internal(&e) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::BAD_REQUEST
                },
                web::render(
                    "reset.html",
                    web::FormPage {
                        csrf: &csrf,
                        token,
                        error: Some(&text),
                        ..Default::default()
                    },
                ),
            )
        }
    }
}

async fn verify_email(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or("");
    match tokens::verify_email(&state.identity, token).await {
        Ok(u) => message(
            StatusCode::OK,
            "Email verified",
            &format!("{} is verified. You can close this page.", u.email),
            false,
        ),
        Err(e) => message(
            if internal(&e) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            },
            "Email not verified",
            &problem_text(&e),
            true,
        ),
    }
}

async fn signup_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mode = state.config.signup.mode;
    let invitation = q.get("invitation").map(String::as_str);
    match (mode, invitation) {
        (SignupMode::Closed, _) => {
            return message(
                StatusCode::NOT_FOUND,
                "Sign-up is closed",
                "Ask your administrator for an account.",
                true,
            );
        }
        (SignupMode::Invitation, None) => {
            return message(
                StatusCode::NOT_FOUND,
                "Sign-up is by invitation",
                "Join the waitlist; you will receive an invitation link.",
                true,
            );
        }
        _ => {}
    }
    let (csrf, set) = csrf_token(&headers);
    let page = web::render(
        "signup.html",
        web::FormPage {
            csrf: &csrf,
            invitation: invitation.unwrap_or(""),
            ask_email: invitation.is_none(),
            ..Default::default()
        },
    );
    with_csrf(&state, html(StatusCode::OK, page), &csrf, set)
}

async fn signup(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if !csrf_ok(&headers, &params) {
        return forbidden_form();
    }
    if let Some(r) = login_limited(&state, &Some(ci)).await {
        return r;
    }
    let invitation = field(&params, "invitation").unwrap_or("");
    let new = field(&params, "new_password").unwrap_or("");
    let mode = state.config.signup.mode;
    let result =
        if mode == SignupMode::Closed || (invitation.is_empty() && mode != SignupMode::Open) {
            Err(IdentityError::Forbidden {
                reason: "sign-up is not open".into(),
            })
        } else if Some(new) != field(&params, "confirm_password") {
            Err(IdentityError::invalid(
                "new_password",
                "the passwords differ",
            ))
        } else if invitation.is_empty() {
            // Open sign-up: the account exists at once; its address is verified by email.
            let created = users::create(
                &state.identity,
                users::NewUser {
                    email: field(&params, "email").unwrap_or("").to_string(),
                    password: Some(Secret::new(new.to_string())),
                    first_name: field(&params, "first_name").map(String::from),
                    last_name: field(&params, "last_name").map(String::from),
                    org_id: None,
                },
            )
            .await;
            match created {
                Ok((u, _)) => tokens::send_email_verification(&state.identity, u.user_id).await,
                Err(e) => Err(e),
            }
        } else {
            waitlist::accept_invitation(
                &state.identity,
                invitation,
                Some(&Secret::new(new.to_string())),
                field(&params, "first_name"),
                field(&params, "last_name"),
            )
            .await
            .map(|_| ())
        };
    match result {
        Ok(()) => message(
            StatusCode::CREATED,
            "Account created",
            "Your account is ready. Sign in from your application.",
            false,
        ),
        Err(e) => {
            let (csrf, _) = csrf_token(&headers);
            let text = problem_text(&e);
            html(
                StatusCode::BAD_REQUEST,
                web::render(
                    "signup.html",
                    web::FormPage {
                        csrf: &csrf,
                        invitation,
                        ask_email: invitation.is_empty(),
                        error: Some(&text),
                        ..Default::default()
                    },
                ),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// The account page

/// The signed-in user's session and identity services acting as them.
/// A form post of a signed-in user: its fields (CSRF checked), session and identity.
async fn signed_in_form(
    state: &AppState,
    headers: &HeaderMap,
    ci: &ConnectInfo<SocketAddr>,
    body: &[u8],
) -> Result<(Vec<(String, String)>, Session, Identity), Response> {
    let params = form(body);
    if !csrf_ok(headers, &params) {
        return Err(forbidden_form());
    }
    let (s, id) = signed_in(state, headers, ci).await?;
    Ok((params, s, id))
}

async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    ci: &ConnectInfo<SocketAddr>,
) -> Result<(Session, Identity), Response> {
    match browser_session(state, headers).await {
        Ok(Some(s)) => {
            let id = state.identity.acting_as(Actor {
                kind: ActorKind::User(s.user_id),
                impersonator: None,
                ip: peer(&Some(ConnectInfo(ci.0))),
                user_agent: user_agent(headers),
            });
            Ok((s, id))
        }
        Ok(None) => Err(message_with_link(
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "Sign in to see your account.",
            true,
        )),
        Err(e) => Err(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.description(),
        )),
    }
}

async fn account_page(
    state: &AppState,
    headers: &HeaderMap,
    id: &Identity,
    current: &Session,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let (csrf, set) = csrf_token(headers);
    let user = match users::get(id, current.user_id).await {
        Ok(u) => u,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &problem_text(&e)),
    };
    let list = sessions::list_active(id, current.user_id)
        .await
        .unwrap_or_default();
    let rows = list
        .into_iter()
        .map(|s| web::SessionRow {
            id: s.session_id.to_string(),
            created_at: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            user_agent: s.user_agent,
            current: s.session_id == current.session_id,
        })
        .collect();
    let page = web::render(
        "account.html",
        web::AccountPage {
            csrf: &csrf,
            email: &user.email,
            mfa_enabled: user.mfa_enabled,
            sessions: rows,
            notice,
            error,
        },
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    with_csrf(state, html(status, page), &csrf, set)
}

async fn account(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match signed_in(&state, &headers, &ci).await {
        Ok((s, id)) => account_page(&state, &headers, &id, &s, None, None).await,
        Err(r) => r,
    }
}

async fn change_password(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, s, id) = match signed_in_form(&state, &headers, &ci, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let new = field(&params, "new_password").unwrap_or("");
    let current = Secret::new(field(&params, "current_password").unwrap_or("").to_string());
    let result = if Some(new) != field(&params, "confirm_password") {
        Err(IdentityError::invalid(
            "new_password",
            "the passwords differ",
        ))
    } else {
        tokens::change_password(
            &id,
            s.user_id,
            Some(&current),
            &Secret::new(new.to_string()),
            Some(s.session_id),
        )
        .await
    };
    match result {
        Ok(()) => {
            account_page(
                &state,
                &headers,
                &id,
                &s,
                Some("Your password was changed; your other sessions were signed out."),
                None,
            )
            .await
        }
        Err(e) => account_page(&state, &headers, &id, &s, None, Some(&problem_text(&e))).await,
    }
}

async fn revoke_session(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, s, id) = match signed_in_form(&state, &headers, &ci, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(target) = field(&params, "session_id").and_then(|v| uuid::Uuid::parse_str(v).ok())
    else {
        return account_page(&state, &headers, &id, &s, None, Some("No such session.")).await;
    };
    // Another user's session id is not found (identity::sessions::revoke).
    match sessions::revoke(&id, s.user_id, target).await {
        Ok(()) if target == s.session_id => {
            let mut r = redirect("/account");
            set_cookie(
                &mut r,
                SESSION_COOKIE,
                "",
                state.oidc.secure_cookies(),
                Some(0),
            );
            r
        }
        Ok(()) => redirect("/account"),
        Err(e) => account_page(&state, &headers, &id, &s, None, Some(&problem_text(&e))).await,
    }
}

async fn totp_begin(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, s, id) = match signed_in_form(&state, &headers, &ci, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match mfa::begin_totp_enrolment(&id, s.user_id).await {
        Ok(e) => {
            let (csrf, _) = csrf_token(&headers);
            let device_id = e.device_id.to_string();
            html(
                StatusCode::OK,
                web::render(
                    "totp.html",
                    web::TotpPage {
                        csrf: &csrf,
                        device_id: &device_id,
                        secret: &e.secret_base32,
                        otpauth_uri: &e.otpauth_uri,
                        qr_svg: web::qr_svg(&e.otpauth_uri),
                        error: None,
                    },
                ),
            )
        }
        Err(e) => account_page(&state, &headers, &id, &s, None, Some(&problem_text(&e))).await,
    }
}

async fn totp_confirm(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, s, id) = match signed_in_form(&state, &headers, &ci, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(device) = field(&params, "device_id").and_then(|v| uuid::Uuid::parse_str(v).ok())
    else {
        return account_page(
            &state,
            &headers,
            &id,
            &s,
            None,
            Some("Start the set-up again."),
        )
        .await;
    };
    let code = field(&params, "code").unwrap_or("");
    match mfa::confirm_totp(&id, s.user_id, device, code).await {
        Ok(codes) => html(
            StatusCode::OK,
            web::render("recovery.html", minijinja::context! { codes => codes.0 }),
        ),
        Err(e) => {
            let (csrf, _) = csrf_token(&headers);
            let text = problem_text(&e);
            html(
                StatusCode::BAD_REQUEST,
                web::render(
                    "totp.html",
                    web::TotpPage {
                        csrf: &csrf,
                        device_id: field(&params, "device_id").unwrap_or(""),
                        secret: field(&params, "secret").unwrap_or(""),
                        otpauth_uri: field(&params, "otpauth_uri").unwrap_or(""),
                        qr_svg: web::qr_svg(field(&params, "otpauth_uri").unwrap_or("")),
                        error: Some(&text),
                    },
                ),
            )
        }
    }
}
