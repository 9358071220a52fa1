//! Browser (SSO) sessions of the hosted pages: a `sessions` row whose bearer secret
//! (`refresh_token` column, hashed) is the cookie value, marked in `oidc_browser_sessions`.
//! One such session signs the user in to every client (SSO).
use super::OidcError;
use crate::identity::audit::{self, Event};
use crate::identity::sessions::{self, NewSession, hash_token};
use crate::identity::{Identity, IdentityError};
use crate::store::sessions::Session;
use crate::store::{self};
use serde_json::json;
use std::net::IpAddr;
use uuid::Uuid;

/// Opens a browser session after every required factor; returns it and the cookie value.
pub async fn open(
    id: &Identity,
    user_id: Uuid,
    org_id: Option<Uuid>,
    amr: Vec<String>,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<(Session, String), IdentityError> {
    let mut tx = id.db.begin().await?;
    let issued = sessions::create_in(
        &mut tx,
        id,
        NewSession {
            user_id,
            org_id,
            auth_methods: amr,
            ip,
            user_agent,
            with_refresh_token: true,
            impersonator_id: None,
        },
    )
    .await?;
    store::oidc::insert_browser_session(&mut tx, issued.session.session_id, id.clock.now()).await?;
    tx.commit().await?;
    let secret = issued
        .refresh_token
        .ok_or_else(|| IdentityError::Internal("no session secret".into()))?;
    Ok((issued.session, secret.expose().clone()))
}

/// The usable browser session a cookie value names, if any (idle timeout and expiry apply).
pub async fn current(id: &Identity, cookie: &str) -> Result<Option<Session>, IdentityError> {
    if cookie.is_empty() || cookie.len() > 100 {
        return Ok(None);
    }
    let mut c = id.db.conn().await?;
    let Some(s) = store::sessions::find_by_refresh_hash(&mut c, &hash_token(cookie)).await? else {
        return Ok(None);
    };
    if s.impersonator_id.is_some() || !store::oidc::is_browser_session(&mut c, s.session_id).await?
    {
        return Ok(None);
    }
    drop(c);
    match sessions::validate(id, s.session_id).await {
        Ok(s) => Ok(Some(s)),
        Err(
            IdentityError::SessionExpired
            | IdentityError::SessionRevoked
            | IdentityError::NotFound { .. },
        ) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Ends a browser session and every grant made from it (RP-Initiated Logout §2, §3);
/// false when there is no such session. The clients owed a logout token (Back-Channel
/// Logout 1.0) are enqueued by the database as the session is revoked, and this node's
/// worker is woken to send them.
pub async fn end(id: &Identity, session_id: Uuid) -> Result<bool, OidcError> {
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    let Some(s) = store::sessions::get(&mut tx, session_id).await? else {
        return Ok(false);
    };
    let was_live = store::sessions::revoke(&mut tx, session_id).await?;
    let grants = store::oidc::revoke_grants_of_browser_session(&mut tx, session_id).await?;
    if was_live || grants > 0 {
        let mut e = Event::new("session.revoked", "session", session_id).details(json!({
            "reason": "logout",
            "user_id": s.user_id,
            "grants_revoked": grants,
        }));
        if let Some(o) = s.org_id {
            e = e.org(o);
        }
        audit::record(&mut tx, id, e).await?;
    }
    tx.commit().await.map_err(IdentityError::from)?;
    if was_live {
        id.sessions_ended();
    }
    Ok(true)
}
