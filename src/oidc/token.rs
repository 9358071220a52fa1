//! The token endpoint's grants (RFC 6749 §4.1.3, §4.4, §6; RFC 8693) and the token
//! lifecycle around them (introspection RFC 7662, revocation RFC 7009, UserInfo).
//!
//! A grant is a `sessions` row (its refresh-token hash, expiry, revocation) plus an
//! `oidc_grants` row (client, scope, code it came from). Access tokens are RFC 9068 JWTs
//! whose `sid` names that session, so revoking the grant ends them too.
use super::Provider;
use super::claims::{self, AccessToken, IdToken, OrgInfo, has_scope, parse_scope};
use super::clients::{self, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE};
use super::error::OidcError;
use super::jwt::{self, TYP_ACCESS_TOKEN, TYP_JWT};
use crate::identity::audit::{self, Event};
use crate::identity::sessions::{hash_token, new_token};
use crate::identity::{Identity, IdentityError};
use crate::store::oidc::{Grant, OidcClient, RotatedToken};
use crate::store::sessions::Session;
use crate::store::users::User;
use crate::store::{self, Inet, TextList, Tx};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_REFRESH: &str = "urn:ietf:params:oauth:token-type:refresh_token";

/// The successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3, RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

fn ttl(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(600))
}

fn require_grant(client: &OidcClient, grant: &str) -> Result<(), OidcError> {
    if client.grant_types.0.iter().any(|g| g == grant) {
        Ok(())
    } else {
        Err(OidcError::UnauthorizedClient(format!(
            "the client may not use the {grant} grant"
        )))
    }
}

/// The user behind a grant, if still allowed to sign in.
async fn active_user(a: &mut impl store::Access, user_id: Uuid) -> Result<User, OidcError> {
    let user = store::users::get(a, user_id)
        .await?
        .ok_or_else(|| OidcError::invalid_grant("the user no longer exists"))?;
    check_active(&user)?;
    Ok(user)
}

fn check_active(user: &User) -> Result<(), OidcError> {
    if !user.enabled || user.locked {
        return Err(OidcError::invalid_grant(
            "the account is disabled or locked",
        ));
    }
    Ok(())
}

async fn org_info(
    a: &mut impl store::Access,
    org_id: Option<Uuid>,
    user_id: Uuid,
) -> Result<Option<OrgInfo>, OidcError> {
    let Some(org_id) = org_id else {
        return Ok(None);
    };
    let Some(org) = store::orgs::get(a, org_id).await? else {
        return Ok(None);
    };
    Ok(store::memberships::get(a, user_id, org_id)
        .await?
        .map(|m| OrgInfo::new(&org, &m)))
}

/// The session is usable: not revoked, not past its expiry.
fn live(s: &Session, now: chrono::DateTime<chrono::Utc>) -> Result<(), OidcError> {
    if s.revoked || now >= s.expires_at {
        return Err(OidcError::invalid_grant(
            "the grant has been revoked or has expired",
        ));
    }
    Ok(())
}

struct Issue<'a> {
    client: &'a OidcClient,
    user: &'a User,
    grant_session: &'a Session,
    scopes: Vec<String>,
    nonce: Option<&'a str>,
    browser_sid: Option<Uuid>,
    refresh_token: Option<String>,
    with_id_token: bool,
}

/// Signs the access token (and ID token) of a user grant.
async fn tokens_for(
    id: &Identity,
    p: &Provider,
    org: Option<OrgInfo>,
    i: Issue<'_>,
) -> Result<TokenResponse, OidcError> {
    let now = id.clock.now();
    let cfg = &id.config.oidc;
    let key = p.keyring.active(id).await?;
    let at_ttl = ttl(cfg.access_token_ttl);
    let amr = &i.grant_session.auth_methods.0;
    let access = jwt::sign(
        &key,
        TYP_ACCESS_TOKEN,
        claims::access_token_claims(&AccessToken {
            issuer: &p.issuer,
            client_id: &i.client.client_id,
            subject: Some(i.user.user_id),
            scopes: &i.scopes,
            grant_id: Some(i.grant_session.session_id),
            auth_time: Some(i.grant_session.auth_time),
            amr,
            org_id: org.as_ref().map(|o| o.org_id),
            impersonator: i.grant_session.impersonator_id,
            jti: Uuid::now_v7(),
            now,
            ttl: at_ttl,
        }),
    )?;
    let id_token = if i.with_id_token && has_scope(&i.scopes, "openid") {
        let id_key = if i.client.id_token_signed_response_alg == key.alg {
            key.clone()
        } else {
            p.keyring
                .active_for(id, &i.client.id_token_signed_response_alg)
                .await?
        };
        Some(jwt::sign(
            &id_key,
            TYP_JWT,
            claims::id_token_claims(&IdToken {
                issuer: &p.issuer,
                client_id: &i.client.client_id,
                user: i.user,
                scopes: &i.scopes,
                org: org.as_ref(),
                nonce: i.nonce,
                auth_time: i.grant_session.auth_time,
                sid: i.browser_sid,
                amr,
                access_token: Some(&access),
                impersonator: i.grant_session.impersonator_id,
                now,
                ttl: ttl(cfg.id_token_ttl),
            }),
        )?)
    } else {
        None
    };
    crate::identity::metrics::count_token_issued(id, i.grant_session.org_id, &i.client.client_id);
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: at_ttl.num_seconds(),
        scope: i.scopes.join(" "),
        refresh_token: i.refresh_token,
        id_token,
        issued_token_type: None,
    })
}

/// Revokes a grant's session in `tx` and audits why.
async fn revoke_grant_in(
    tx: &mut Tx,
    id: &Identity,
    session_id: Uuid,
    reason: &str,
) -> Result<(), OidcError> {
    if store::sessions::revoke(tx, session_id).await? {
        let s = store::sessions::get(tx, session_id).await?;
        let mut e = Event::new("session.revoked", "session", session_id)
            .details(json!({ "reason": reason, "user_id": s.as_ref().map(|s| s.user_id) }));
        if let Some(o) = s.and_then(|s| s.org_id) {
            e = e.org(o);
        }
        audit::record(tx, id, e).await?;
    }
    Ok(())
}

/// `authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6). A code is single use: a second
/// use fails and revokes the grant issued from the first (§4.1.2, §10.5).
pub async fn authorization_code(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    code: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<TokenResponse, OidcError> {
    require_grant(client, clients::GRANT_AUTHORIZATION_CODE)?;
    let now = id.clock.now();
    let code_hash = hash_token(code);
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    let row = store::oidc::get_code(&mut tx, &code_hash)
        .await?
        .ok_or_else(|| OidcError::invalid_grant("unknown authorization code"))?;
    if row.client_id != client.client_id {
        return Err(OidcError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    let reused = || OidcError::invalid_grant("the authorization code has already been used");
    if row.used_at.is_some() {
        if let Some(g) = store::oidc::grant_by_code(&mut tx, &code_hash).await? {
            revoke_grant_in(&mut tx, id, g.session_id, "authorization_code_reuse").await?;
            tx.commit().await.map_err(IdentityError::from)?;
        }
        return Err(reused());
    }
    if now >= row.expires_at {
        return Err(OidcError::invalid_grant(
            "the authorization code has expired",
        ));
    }
    if redirect_uri != Some(row.redirect_uri.as_str()) {
        return Err(OidcError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    match (&row.code_challenge, code_verifier) {
        (Some(ch), Some(v)) if super::authorize::pkce_matches(v, ch) => {}
        (Some(_), _) => return Err(OidcError::invalid_grant("PKCE verification failed")),
        // A verifier without a challenge: refuse (PKCE downgrade).
        (None, Some(_)) => return Err(OidcError::invalid_grant("no PKCE challenge was sent")),
        (None, None) => {}
    }
    if !store::oidc::use_code(&mut tx, &code_hash, now).await? {
        return Err(reused());
    }
    let user = active_user(&mut tx, row.user_id).await?;
    let browser = match row.session_id {
        Some(sid) => store::sessions::get(&mut tx, sid).await?,
        None => None,
    };
    if let Some(b) = &browser {
        live(b, now)?;
    }
    let scopes = parse_scope(&row.scope);
    let refresh = client
        .grant_types
        .0
        .iter()
        .any(|g| g == GRANT_REFRESH_TOKEN)
        .then(new_token);
    let session = Session {
        session_id: Uuid::now_v7(),
        user_id: user.user_id,
        refresh_token: refresh.as_deref().map(hash_token),
        created_at: now,
        expires_at: now + ttl(id.config.oidc.refresh_token_ttl),
        revoked: false,
        ip_address: id.actor.ip.map(Inet),
        user_agent: id.actor.user_agent.clone(),
        org_id: row.org_id,
        auth_methods: browser
            .as_ref()
            .map(|b| b.auth_methods.clone())
            .unwrap_or_else(|| TextList(vec!["pwd".into()])),
        auth_time: row.auth_time,
        last_seen_at: now,
        impersonator_id: browser.as_ref().and_then(|b| b.impersonator_id),
    };
    store::sessions::insert(&mut tx, &session).await?;
    store::oidc::insert_grant(
        &mut tx,
        &Grant {
            session_id: session.session_id,
            client_id: client.client_id.clone(),
            browser_session_id: row.session_id,
            code_hash: Some(code_hash),
            scope: row.scope.clone(),
            acr: row.acr.clone(),
            created_at: now,
        },
    )
    .await?;
    let mut e = Event::new("session.created", "session", session.session_id).details(json!({
        "user_id": user.user_id,
        "client_id": client.client_id,
        "grant_type": "authorization_code",
        "scope": row.scope,
        "refresh_token_issued": refresh.is_some(),
        "expires_at": session.expires_at,
    }));
    if let Some(o) = session.org_id {
        e = e.org(o);
    }
    audit::record(&mut tx, id, e).await?;
    let org = org_info(&mut tx, session.org_id, user.user_id).await?;
    tx.commit().await.map_err(IdentityError::from)?;
    // Signing needs no lock: it runs after the commit.
    tokens_for(
        id,
        p,
        org,
        Issue {
            client,
            user: &user,
            grant_session: &session,
            scopes,
            nonce: row.nonce.as_deref(),
            browser_sid: row.session_id,
            refresh_token: refresh,
            with_id_token: true,
        },
    )
    .await
}

/// `refresh_token` (RFC 6749 §6; Security BCP §4.14.2): rotated on every use. A rotated
/// token presented again within `oidc.refresh_grace` gets the same successor (concurrent
/// refreshes); later, it revokes the whole grant.
pub async fn refresh_token(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    token: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, OidcError> {
    require_grant(client, GRANT_REFRESH_TOKEN)?;
    match refresh_once(id, p, client, token, scope).await {
        // A concurrent refresh rotated the token between our read and our write (possible
        // on PostgreSQL): answer as the grace window says, from the rotation it recorded.
        Err(Raced) => refresh_once(id, p, client, token, scope)
            .await
            .map_err(|_| OidcError::invalid_grant("the refresh token was just used"))?,
        Ok(r) => r,
    }
}

/// A refresh lost a race with a concurrent rotation of the same token.
struct Raced;

async fn refresh_once(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    token: &str,
    scope: Option<&str>,
) -> Result<Result<TokenResponse, OidcError>, Raced> {
    match refresh_inner(id, p, client, token, scope).await {
        Err(RefreshError::Raced) => Err(Raced),
        Err(RefreshError::Oidc(e)) => Ok(Err(e)),
        Ok(r) => Ok(Ok(r)),
    }
}

enum RefreshError {
    Raced,
    Oidc(OidcError),
}

impl<E: Into<OidcError>> From<E> for RefreshError {
    fn from(e: E) -> Self {
        RefreshError::Oidc(e.into())
    }
}

async fn refresh_inner(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    token: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, RefreshError> {
    let now = id.clock.now();
    let old_hash = hash_token(token);
    // The reads run first, on any connection; the rotation is then one statement
    // (`store::oidc::rotate_refresh`), conditional on the token still being current and its
    // session not revoked: a concurrent rotation or revocation in between is `Raced`.
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let Some(read) = store::oidc::refresh_read(&mut c, &old_hash).await? else {
        drop(c);
        return refresh_rotated(id, p, client, &old_hash, scope).await;
    };
    let store::oidc::RefreshRead {
        session,
        grant,
        user,
    } = read;
    let grant = for_client(Some(grant), client)?;
    live(&session, now)?;
    let scopes = narrowed_scopes(&grant, scope)?;
    check_active(&user)?;
    let org = org_info(&mut c, session.org_id, user.user_id).await?;
    drop(c);
    let fresh = new_token();
    let fresh_hash = hash_token(&fresh);
    let successor = id
        .data_key
        .encrypt(fresh.as_bytes())
        .map_err(|e| OidcError::ServerError(e.to_string()))?;
    let mut w = id.db.writer().await.map_err(IdentityError::from)?;
    let rotated = store::oidc::rotate_refresh(
        &mut w,
        &RotatedToken {
            token_hash: old_hash,
            session_id: session.session_id,
            successor,
            successor_hash: fresh_hash,
            rotated_at: now,
        },
    )
    .await?;
    drop(w);
    if !rotated {
        return Err(RefreshError::Raced);
    }
    let issue = refresh_issue(client, &user, &session, &grant, scopes, fresh);
    Ok(tokens_for(id, p, org, issue).await?)
}

/// A refresh token that was already rotated: within the grace window it gets the same
/// successor again (concurrent refreshes); later, its reuse revokes the whole family.
async fn refresh_rotated(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    old_hash: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, RefreshError> {
    let now = id.clock.now();
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    let rotated = store::oidc::get_rotated(&mut tx, old_hash)
        .await?
        .ok_or_else(|| OidcError::invalid_grant("unknown refresh token"))?;
    let grant = client_grant(&mut tx, client, rotated.session_id).await?;
    let session = store::sessions::get(&mut tx, grant.session_id)
        .await?
        .ok_or_else(|| OidcError::invalid_grant("unknown refresh token"))?;
    let grace = ttl(id.config.oidc.refresh_grace);
    let in_grace = now - rotated.rotated_at <= grace
        && session.refresh_token.as_deref() == Some(rotated.successor_hash.as_str())
        && live(&session, now).is_ok();
    if !in_grace {
        // Reuse of a rotated token: the family is compromised (BCP §4.14.2).
        revoke_grant_in(&mut tx, id, session.session_id, "refresh_token_reuse").await?;
        tx.commit().await.map_err(IdentityError::from)?;
        return Err(OidcError::invalid_grant("the refresh token has already been used").into());
    }
    let plain = id
        .data_key
        .decrypt(&rotated.successor)
        .map_err(|e| OidcError::ServerError(e.to_string()))?;
    let fresh = String::from_utf8(plain).map_err(|e| OidcError::ServerError(e.to_string()))?;
    let scopes = narrowed_scopes(&grant, scope)?;
    let user = active_user(&mut tx, session.user_id).await?;
    let org = org_info(&mut tx, session.org_id, user.user_id).await?;
    tx.commit().await.map_err(IdentityError::from)?;
    let issue = refresh_issue(client, &user, &session, &grant, scopes, fresh);
    Ok(tokens_for(id, p, org, issue).await?)
}

/// What a refresh issues: an access token, the rotated refresh token and an ID token
/// (OIDC Core §12.2) for the grant's session.
fn refresh_issue<'a>(
    client: &'a OidcClient,
    user: &'a User,
    session: &'a Session,
    grant: &Grant,
    scopes: Vec<String>,
    fresh: String,
) -> Issue<'a> {
    Issue {
        client,
        user,
        grant_session: session,
        scopes,
        nonce: None,
        browser_sid: grant.browser_session_id,
        refresh_token: Some(fresh),
        with_id_token: true,
    }
}

/// The grant behind a refresh token, if it was made for this client.
async fn client_grant(
    a: &mut impl store::Access,
    client: &OidcClient,
    session_id: Uuid,
) -> Result<Grant, OidcError> {
    for_client(store::oidc::get_grant(a, session_id).await?, client)
}

/// A grant stands behind a refresh token only for the client it was made for.
fn for_client(grant: Option<Grant>, client: &OidcClient) -> Result<Grant, OidcError> {
    grant
        .filter(|g| g.client_id == client.client_id)
        .ok_or_else(|| OidcError::invalid_grant("unknown refresh token"))
}

/// The scopes of a refreshed token: the granted ones, or a subset asked for (RFC 6749 §6).
fn narrowed_scopes(grant: &Grant, scope: Option<&str>) -> Result<Vec<String>, OidcError> {
    let granted = parse_scope(&grant.scope);
    let Some(s) = scope else {
        return Ok(granted);
    };
    let asked = parse_scope(s);
    if let Some(bad) = asked.iter().find(|a| !granted.contains(a)) {
        return Err(OidcError::InvalidScope(format!(
            "scope `{bad}` was not granted"
        )));
    }
    Ok(asked)
}

/// `client_credentials` (RFC 6749 §4.4): a stateless JWT whose subject is the client.
pub async fn client_credentials(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    scope: Option<&str>,
) -> Result<TokenResponse, OidcError> {
    require_grant(client, GRANT_CLIENT_CREDENTIALS)?;
    if clients::is_public(client) {
        return Err(OidcError::UnauthorizedClient(
            "public clients cannot".into(),
        ));
    }
    let machine: Vec<String> = client
        .scopes
        .0
        .iter()
        .filter(|s| !["openid", "offline_access", "profile", "email"].contains(&s.as_str()))
        .cloned()
        .collect();
    let scopes = match scope {
        None => machine,
        Some(s) => {
            let asked = parse_scope(s);
            if let Some(bad) = asked.iter().find(|a| !machine.contains(a)) {
                return Err(OidcError::InvalidScope(format!(
                    "scope `{bad}` is not available to this client"
                )));
            }
            asked
        }
    };
    let now = id.clock.now();
    let at_ttl = ttl(id.config.oidc.access_token_ttl);
    let key = p.keyring.active(id).await?;
    let access = jwt::sign(
        &key,
        TYP_ACCESS_TOKEN,
        claims::access_token_claims(&AccessToken {
            issuer: &p.issuer,
            client_id: &client.client_id,
            subject: None,
            scopes: &scopes,
            grant_id: None,
            auth_time: None,
            amr: &[],
            org_id: client.org_id,
            impersonator: None,
            jti: Uuid::now_v7(),
            now,
            ttl: at_ttl,
        }),
    )?;
    crate::identity::metrics::count_token_issued(id, client.org_id, &client.client_id);
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: at_ttl.num_seconds(),
        scope: scopes.join(" "),
        refresh_token: None,
        id_token: None,
        issued_token_type: None,
    })
}

/// A verified access token issued by this provider, whose grant still stands.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    pub claims: Map<String, Value>,
    pub client_id: String,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub scopes: Vec<String>,
}

/// Verifies an access token: signature by a published key, `typ: at+jwt`, issuer, expiry,
/// an enabled client, and a live grant session.
pub async fn check_access_token(
    id: &Identity,
    p: &Provider,
    token: &str,
) -> Result<AccessClaims, OidcError> {
    let v = jwt::verify(id, &p.keyring, token, &p.issuer, true).await?;
    if !v.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(TYP_ACCESS_TOKEN) || t.eq_ignore_ascii_case("application/at+jwt")
    }) {
        return Err(OidcError::invalid_token("not an access token"));
    }
    let c = v.claims;
    let str_claim = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let client_id =
        str_claim("client_id").ok_or_else(|| OidcError::invalid_token("no client_id"))?;
    let session_id = str_claim("sid").and_then(|s| Uuid::parse_str(&s).ok());
    let mut conn = id.db.conn().await.map_err(IdentityError::from)?;
    let client = store::oidc::get_client(&mut conn, &client_id).await?;
    if !client.is_some_and(|c| c.enabled) {
        return Err(OidcError::invalid_token("the client is disabled"));
    }
    let user_id = match session_id {
        Some(sid) => {
            let s = store::sessions::get(&mut conn, sid)
                .await?
                .ok_or_else(|| OidcError::invalid_token("the grant no longer exists"))?;
            if s.revoked || id.clock.now() >= s.expires_at {
                return Err(OidcError::invalid_token("the grant has been revoked"));
            }
            Some(s.user_id)
        }
        None => None,
    };
    Ok(AccessClaims {
        scopes: parse_scope(&str_claim("scope").unwrap_or_default()),
        client_id,
        user_id,
        session_id,
        claims: c,
    })
}

/// OIDC Core §5.3: the claims of the token's user for the token's scopes.
pub async fn userinfo(
    id: &Identity,
    p: &Provider,
    token: &str,
) -> Result<Map<String, Value>, OidcError> {
    let at = check_access_token(id, p, token).await?;
    if !has_scope(&at.scopes, "openid") {
        return Err(OidcError::InsufficientScope(
            "the openid scope is required".into(),
        ));
    }
    let user_id = at
        .user_id
        .ok_or_else(|| OidcError::invalid_token("the token has no user"))?;
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let user = store::users::get(&mut c, user_id)
        .await?
        .filter(|u| u.enabled && !u.locked)
        .ok_or_else(|| OidcError::invalid_token("the user is not active"))?;
    let org_id = at
        .claims
        .get("org_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    let org = org_info(&mut c, org_id, user_id).await?;
    Ok(claims::user_claims(&user, &at.scopes, org.as_ref()))
}

/// RFC 7662 §2.2: the state of a token issued to `client` (anything else, unknown or
/// expired is `{"active": false}`).
pub async fn introspect(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    token: &str,
) -> Result<Value, OidcError> {
    let inactive = json!({ "active": false });
    if token.split('.').count() == 3 {
        return Ok(match check_access_token(id, p, token).await {
            Ok(at) if at.client_id == client.client_id => {
                let mut m = at.claims;
                m.insert("active".into(), json!(true));
                m.insert("token_type".into(), json!("Bearer"));
                Value::Object(m)
            }
            Ok(_) | Err(OidcError::InvalidToken(_)) => inactive,
            Err(e) => return Err(e),
        });
    }
    let now = id.clock.now();
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let Some(s) = store::sessions::find_by_refresh_hash(&mut c, &hash_token(token)).await? else {
        return Ok(inactive);
    };
    let Some(g) = store::oidc::get_grant(&mut c, s.session_id).await? else {
        return Ok(inactive);
    };
    if g.client_id != client.client_id || s.revoked || now >= s.expires_at {
        return Ok(inactive);
    }
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "client_id": g.client_id,
        "scope": g.scope,
        "sub": s.user_id.to_string(),
        "exp": s.expires_at.timestamp(),
        "iat": s.created_at.timestamp(),
        "iss": p.issuer,
        "sid": s.session_id.to_string(),
    }))
}

/// RFC 7009 §2.1: revokes the grant of a refresh or access token issued to `client`.
/// Unknown tokens and other clients' tokens are ignored (the answer is the same).
pub async fn revoke(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    token: &str,
) -> Result<(), OidcError> {
    let session_id = if token.split('.').count() == 3 {
        match check_access_token(id, p, token).await {
            Ok(at) if at.client_id == client.client_id => at.session_id,
            Ok(_) | Err(OidcError::InvalidToken(_)) => None,
            Err(e) => return Err(e),
        }
    } else {
        let mut c = id.db.conn().await.map_err(IdentityError::from)?;
        match store::sessions::find_by_refresh_hash(&mut c, &hash_token(token)).await? {
            Some(s) => Some(s.session_id),
            None => store::oidc::get_rotated(&mut c, &hash_token(token))
                .await?
                .map(|r| r.session_id),
        }
    };
    let Some(session_id) = session_id else {
        return Ok(());
    };
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    let owned = store::oidc::get_grant(&mut tx, session_id)
        .await?
        .is_some_and(|g| g.client_id == client.client_id);
    if owned {
        revoke_grant_in(&mut tx, id, session_id, "revoked_by_client").await?;
        tx.commit().await.map_err(IdentityError::from)?;
    }
    Ok(())
}

/// RFC 8693 token exchange for impersonation: `subject_token` is an access token of the
/// admin (issued by Lintel to a user), `requested_subject` the member to act as. Starts an
/// impersonation through the identity rules and answers with an access token whose `sub`
/// is the member and whose `act` names the admin (RFC 8693 §4.1). The org is the client's,
/// else the admin token's `org_id`.
pub async fn token_exchange(
    id: &Identity,
    p: &Provider,
    client: &OidcClient,
    subject_token: &str,
    subject_token_type: &str,
    requested_subject: Option<&str>,
    scope: Option<&str>,
) -> Result<TokenResponse, OidcError> {
    require_grant(client, GRANT_TOKEN_EXCHANGE)?;
    if subject_token_type != TOKEN_TYPE_ACCESS {
        return Err(OidcError::invalid_request(
            "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
        ));
    }
    let admin = check_access_token(id, p, subject_token)
        .await
        .map_err(|_| OidcError::invalid_grant("the subject_token is not valid"))?;
    if admin.claims.get("act").is_some() {
        return Err(OidcError::invalid_grant(
            "cannot impersonate while impersonating",
        ));
    }
    let admin_id = admin
        .user_id
        .ok_or_else(|| OidcError::invalid_grant("the subject_token has no user"))?;
    let target = requested_subject
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| OidcError::invalid_request("requested_subject (a user id) is required"))?;
    let org_id = client
        .org_id
        .or_else(|| {
            admin
                .claims
                .get("org_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
        })
        .ok_or_else(|| {
            OidcError::invalid_request(
                "no organization: use an org-bound client or an org-scoped subject_token",
            )
        })?;
    let started = crate::identity::impersonation::start(
        id,
        admin_id,
        org_id,
        target,
        id.actor.ip,
        id.actor.user_agent.as_deref(),
    )
    .await
    .map_err(|e| match e {
        IdentityError::Forbidden { reason } => OidcError::AccessDenied(reason),
        IdentityError::NotFound { what } => OidcError::invalid_grant(format!("{what} not found")),
        IdentityError::Invalid { message, .. } => OidcError::invalid_request(message),
        other => OidcError::from(other),
    })?;
    drop(started.refresh_token);
    let scopes = match scope {
        None => admin.scopes.clone(),
        Some(s) => parse_scope(s),
    };
    if let Some(bad) = scopes.iter().find(|s| !client.scopes.0.contains(s)) {
        return Err(OidcError::InvalidScope(format!(
            "scope `{bad}` is not allowed"
        )));
    }
    let now = id.clock.now();
    let session = started.session;
    let at_ttl = ttl(id.config.oidc.access_token_ttl).min(session.expires_at - now);
    let key = p.keyring.active(id).await?;
    let access = jwt::sign(
        &key,
        TYP_ACCESS_TOKEN,
        claims::access_token_claims(&AccessToken {
            issuer: &p.issuer,
            client_id: &client.client_id,
            subject: Some(session.user_id),
            scopes: &scopes,
            grant_id: Some(session.session_id),
            auth_time: Some(session.auth_time),
            amr: &[],
            org_id: Some(org_id),
            impersonator: session.impersonator_id,
            jti: Uuid::now_v7(),
            now,
            ttl: at_ttl,
        }),
    )?;
    crate::identity::metrics::count_token_issued(id, Some(org_id), &client.client_id);
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: at_ttl.num_seconds(),
        scope: scopes.join(" "),
        refresh_token: None,
        id_token: None,
        issued_token_type: Some(TOKEN_TYPE_ACCESS),
    })
}
