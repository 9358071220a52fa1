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

/// Who must hear of an ended session (Back-Channel Logout): the user, the browser session,
/// and the clients with a `backchannel_logout_uri` that hold grants made from it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub clients: Vec<crate::store::oidc::OidcClient>,
}

/// Ends a browser session and every grant made from it (RP-Initiated Logout §2, §3).
pub async fn end(id: &Identity, session_id: Uuid) -> Result<Option<Ended>, OidcError> {
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    let Some(s) = store::sessions::get(&mut tx, session_id).await? else {
        return Ok(None);
    };
    let clients = store::oidc::clients_of_browser_session(&mut tx, session_id)
        .await?
        .into_iter()
        .filter(|c| c.enabled && c.backchannel_logout_uri.is_some())
        .collect();
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
    Ok(Some(Ended {
        user_id: s.user_id,
        session_id,
        clients,
    }))
}

/// Sends each client a logout token (Back-Channel Logout §2.5), in the background: a POST
/// of `logout_token=<JWT>` with a 5 s timeout; failures are logged, not retried.
pub async fn notify_backchannel(id: &Identity, p: &super::Provider, ended: Ended) {
    for client in ended.clients {
        let Some(uri) = client.backchannel_logout_uri.clone() else {
            continue;
        };
        let key = match p
            .keyring
            .active_for(id, &client.id_token_signed_response_alg)
            .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "no key for a logout token");
                continue;
            }
        };
        let claims = super::claims::logout_token_claims(
            &p.issuer,
            &client.client_id,
            ended.user_id,
            ended.session_id,
            Uuid::now_v7(),
            id.clock.now(),
        );
        let token = match super::jwt::sign(&key, "logout+jwt", claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign a logout token");
                continue;
            }
        };
        let client_id = client.client_id.clone();
        tokio::spawn(async move {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("logout_token", &token)
                .finish();
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build();
            let sent = match http {
                Ok(h) => h
                    .post(&uri)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(s) if s.is_success() => {}
                Ok(s) => tracing::warn!(%client_id, status = %s, "back-channel logout refused"),
                Err(e) => tracing::warn!(%client_id, error = %e, "back-channel logout failed"),
            }
        });
    }
}
