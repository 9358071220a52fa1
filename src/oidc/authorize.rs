//! The authorization endpoint's rules (RFC 6749 §4.1.1, OIDC Core §3.1.2, RFC 7636, RFC 9207):
//! parsing, which errors may be redirected, what the user must do next, issuing the code.
use super::OidcError;
use super::claims::{self, parse_scope};
use super::clients::{self, GRANT_AUTHORIZATION_CODE, redirect_uri_matches};
use crate::identity::sessions::{hash_token, new_token};
use crate::identity::{Identity, IdentityError};
use crate::store::oidc::{AuthorizationCode, OidcClient};
use crate::store::sessions::Session;
use crate::store::{self};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use url::Url;
use uuid::Uuid;

pub const MAX_PARAM_LEN: usize = 2048;

/// A request that must not be redirected: the user sees an error page (RFC 6749 §4.1.2.1:
/// the client or redirect URI cannot be trusted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PageError(pub String);

/// The validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
    pub acr_values: Option<String>,
}

fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut found = params.iter().filter(|(k, _)| k == name);
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(format!("`{name}` is repeated"));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// Step one: the client and redirect URI, checked before anything may be redirected.
/// Returns the client id, the redirect URI and the state.
pub fn front(params: &[(String, String)]) -> Result<(String, String, Option<String>), PageError> {
    let client_id = single(params, "client_id")
        .map_err(PageError)?
        .ok_or_else(|| PageError("the request has no client_id".into()))?;
    let redirect_uri = single(params, "redirect_uri")
        .map_err(PageError)?
        .ok_or_else(|| PageError("the request has no redirect_uri".into()))?;
    let state = single(params, "state").ok().flatten().map(str::to_string);
    Ok((client_id.to_string(), redirect_uri.to_string(), state))
}

/// The client may receive the user at `redirect_uri`: it exists, is enabled, and
/// registered the URI (exactly).
pub fn check_client(client: Option<&OidcClient>, redirect_uri: &str) -> Result<(), PageError> {
    let client = client
        .filter(|c| c.enabled)
        .ok_or_else(|| PageError("unknown or disabled client".into()))?;
    if !redirect_uri_matches(
        &client.redirect_uris.0,
        redirect_uri,
        clients::is_public(client),
    ) {
        return Err(PageError(
            "the redirect_uri is not registered for this client".into(),
        ));
    }
    Ok(())
}

fn is_pkce_value(s: &str) -> bool {
    // RFC 7636 §4.1: 43–128 unreserved characters.
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Step two, once the redirect URI is trusted: every other parameter. Unknown parameters
/// are ignored (RFC 6749 §3.1).
pub fn parse(params: &[(String, String)], client: &OidcClient) -> Result<AuthRequest, OidcError> {
    fn inv(s: impl Into<String>) -> OidcError {
        OidcError::InvalidRequest(s.into())
    }
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in params {
        if seen.contains(&k.as_str()) {
            return Err(inv(format!("`{k}` is repeated")));
        }
        seen.push(k);
        if v.len() > MAX_PARAM_LEN && k != "id_token_hint" {
            return Err(inv(format!("`{k}` is too long")));
        }
    }
    let get = |n: &str| single(params, n).map_err(inv);
    // OIDC Core §6: request objects are not supported.
    if get("request")?.is_some() {
        return Err(OidcError::RequestNotSupported);
    }
    if get("request_uri")?.is_some() {
        return Err(OidcError::RequestUriNotSupported);
    }
    match get("response_type")? {
        None => return Err(inv("response_type is required")),
        Some("code") => {}
        Some(other) => {
            return Err(OidcError::UnsupportedResponseType(format!(
                "response_type `{other}` is not supported (use `code`)"
            )));
        }
    }
    if let Some(mode) = get("response_mode")?
        && mode != "query"
    {
        return Err(inv(format!("response_mode `{mode}` is not supported")));
    }
    if !client
        .grant_types
        .0
        .iter()
        .any(|g| g == GRANT_AUTHORIZATION_CODE)
    {
        return Err(OidcError::UnauthorizedClient(
            "the client may not use the authorization code grant".into(),
        ));
    }
    let scope = parse_scope(get("scope")?.unwrap_or(""));
    if !claims::has_scope(&scope, "openid") {
        return Err(OidcError::InvalidScope(
            "the `openid` scope is required".into(),
        ));
    }
    if let Some(bad) = scope.iter().find(|s| !client.scopes.0.contains(s)) {
        return Err(OidcError::InvalidScope(format!(
            "scope `{bad}` is not allowed for this client"
        )));
    }
    let code_challenge = get("code_challenge")?;
    let method = get("code_challenge_method")?;
    let code_challenge = match (code_challenge, method) {
        (None, None) => None,
        (None, Some(_)) => return Err(inv("code_challenge_method without code_challenge")),
        // RFC 7636 §4.3: the method defaults to `plain`, which is refused.
        (Some(_), None | Some("plain")) => {
            return Err(inv("PKCE method `plain` is not allowed; use S256"));
        }
        (Some(c), Some("S256")) if is_pkce_value(c) => Some(c.to_string()),
        (Some(_), Some("S256")) => return Err(inv("code_challenge is malformed")),
        (Some(_), Some(m)) => {
            return Err(inv(format!("code_challenge_method `{m}` is not supported")));
        }
    };
    if code_challenge.is_none() && clients::is_public(client) {
        return Err(inv("PKCE (S256) is required for public clients"));
    }
    let prompt = parse_scope(get("prompt")?.unwrap_or(""));
    for p in &prompt {
        if !["none", "login", "consent", "select_account"].contains(&p.as_str()) {
            return Err(inv(format!("prompt `{p}` is not supported")));
        }
    }
    if prompt.len() > 1 && prompt.iter().any(|p| p == "none") {
        return Err(inv("prompt=none cannot be combined with other values"));
    }
    let max_age = match get("max_age")? {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| inv("max_age must be a non-negative integer"))?,
        ),
    };
    Ok(AuthRequest {
        client_id: client.client_id.clone(),
        redirect_uri: get("redirect_uri")?.unwrap_or_default().to_string(),
        scope,
        state: get("state")?.map(String::from),
        nonce: get("nonce")?.map(String::from),
        code_challenge,
        prompt,
        max_age,
        login_hint: get("login_hint")?.map(String::from),
        id_token_hint: get("id_token_hint")?.map(String::from),
        acr_values: get("acr_values")?.map(String::from),
    })
}

/// What the browser's current login looks like.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub auth_time: DateTime<Utc>,
}

/// What happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Show the login page (email prefilled with the hint, if any).
    Login,
    /// Ask the user to approve the client (third-party clients).
    Consent,
    /// Issue the code.
    Issue,
}

/// Decides the next step (OIDC Core §3.1.2.3). `fresh` is true right after the user
/// authenticated for this very request; `hint_sub` is the `sub` of a valid
/// `id_token_hint`.
pub fn decide(
    req: &AuthRequest,
    session: Option<&SessionView>,
    hint_sub: Option<Uuid>,
    fresh: bool,
    consent_needed: bool,
    consent_given: bool,
    now: DateTime<Utc>,
) -> Result<Next, OidcError> {
    let has = |p: &str| req.prompt.iter().any(|x| x == p);
    let must_login = match session {
        None => true,
        Some(_) if fresh => false,
        Some(s) => {
            has("login")
                || has("select_account")
                || req
                    .max_age
                    .is_some_and(|m| (now - s.auth_time).num_seconds() > m)
                || hint_sub.is_some_and(|sub| sub != s.user_id)
                || req
                    .login_hint
                    .as_deref()
                    .is_some_and(|h| h.contains('@') && !h.eq_ignore_ascii_case(&s.email))
        }
    };
    if must_login {
        if has("none") {
            return Err(OidcError::LoginRequired("the user must sign in".into()));
        }
        return Ok(Next::Login);
    }
    if let (Some(sub), Some(s)) = (hint_sub, session)
        && sub != s.user_id
    {
        return Err(OidcError::LoginRequired(
            "the signed-in user is not the one in id_token_hint".into(),
        ));
    }
    if (consent_needed || has("consent")) && !consent_given {
        if has("none") {
            return Err(OidcError::ConsentRequired(
                "the user must approve this client".into(),
            ));
        }
        return Ok(Next::Consent);
    }
    Ok(Next::Issue)
}

/// `uri` with `params` added to its query (RFC 6749 §4.1.2: keeping its own query).
pub fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    match Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

/// The error redirect (RFC 6749 §4.1.2.1 with RFC 9207 `iss`).
pub fn error_redirect(
    redirect_uri: &str,
    e: &OidcError,
    state: Option<&str>,
    issuer: &str,
) -> String {
    let desc = e.description();
    let mut p = vec![("error", e.code()), ("error_description", desc.as_str())];
    if let Some(s) = state {
        p.push(("state", s));
    }
    p.push(("iss", issuer));
    redirect_with(redirect_uri, &p)
}

/// Deletes authorization codes that expired more than an hour ago; returns how many.
pub async fn purge_codes(id: &Identity) -> Result<u64, IdentityError> {
    let before = id.clock.now() - chrono::Duration::hours(1);
    let mut c = id.db.conn().await?;
    Ok(store::oidc::purge_codes(&mut c, before).await?)
}

/// Purges expired codes every `every` until aborted.
pub fn spawn_code_purger(id: Identity, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = purge_codes(&id).await {
                tracing::warn!(error = %e, "purging expired authorization codes failed");
            }
        }
    })
}

/// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    is_pkce_value(verifier)
        && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// Issues a code for the request and the browser session; returns the redirect to the
/// client (`code`, `state`, `iss`).
pub async fn issue_code(
    id: &Identity,
    issuer: &str,
    client: &OidcClient,
    req: &AuthRequest,
    session: &Session,
    org_id: Option<Uuid>,
) -> Result<String, OidcError> {
    let now = id.clock.now();
    let code = new_token();
    let ttl = chrono::Duration::from_std(id.config.oidc.authorization_code_ttl)
        .unwrap_or(chrono::Duration::seconds(60));
    let row = AuthorizationCode {
        code_hash: hash_token(&code),
        client_id: client.client_id.clone(),
        user_id: session.user_id,
        session_id: Some(session.session_id),
        org_id,
        redirect_uri: req.redirect_uri.clone(),
        scope: req.scope.join(" "),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        code_challenge_method: req.code_challenge.as_ref().map(|_| "S256".to_string()),
        auth_time: session.auth_time,
        acr: Some(claims::acr_for(&session.auth_methods.0).to_string()),
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
    };
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    store::oidc::insert_code(&mut c, &row).await?;
    let mut p = vec![("code", code.as_str())];
    if let Some(s) = &req.state {
        p.push(("state", s));
    }
    p.push(("iss", issuer));
    Ok(redirect_with(&req.redirect_uri, &p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TextList;

    fn client(public: bool) -> OidcClient {
        OidcClient {
            client_id: "c1".into(),
            org_id: None,
            name: "c".into(),
            secret_hash: None,
            redirect_uris: TextList(vec!["https://rp.example/cb".into()]),
            post_logout_redirect_uris: TextList::default(),
            grant_types: TextList(vec!["authorization_code".into()]),
            scopes: TextList(vec!["openid".into(), "email".into()]),
            token_endpoint_auth_method: if public {
                "none"
            } else {
                "client_secret_basic"
            }
            .into(),
            id_token_signed_response_alg: "ES256".into(),
            first_party: true,
            jwks: None,
            enabled: true,
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            updated_at: None,
            backchannel_logout_uri: None,
        }
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("client_id", "c1"),
            ("redirect_uri", "https://rp.example/cb"),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", "xyz"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        let mut b = base();
        for (k, v) in extra {
            b.retain(|(bk, _)| bk != k);
            if !v.is_empty() {
                b.push((k, v));
            }
        }
        p(&b)
    }

    #[test]
    fn front_errors_are_pages() {
        assert!(front(&p(&[("redirect_uri", "https://rp.example/cb")])).is_err());
        assert!(front(&p(&[("client_id", "c1")])).is_err());
        let dup = p(&[
            ("client_id", "a"),
            ("client_id", "b"),
            ("redirect_uri", "x"),
        ]);
        assert!(front(&dup).is_err());
        let c = client(false);
        assert!(check_client(Some(&c), "https://rp.example/cb").is_ok());
        assert!(check_client(Some(&c), "https://rp.example/cb/../x").is_err());
        assert!(check_client(None, "https://rp.example/cb").is_err());
        let mut off = c.clone();
        off.enabled = false;
        assert!(check_client(Some(&off), "https://rp.example/cb").is_err());
    }

    #[test]
    fn parsing_rules() {
        let c = client(false);
        let r = parse(&with(&[("unknown", "ignored")]), &c).unwrap();
        assert_eq!(r.scope, vec!["openid", "email"]);
        assert_eq!(r.code_challenge.as_deref(), Some(CHALLENGE));
        let code =
            |extra: &[(&'static str, &'static str)]| parse(&with(extra), &c).unwrap_err().code();
        assert_eq!(code(&[("request", "eyJ...")]), "request_not_supported");
        assert_eq!(
            code(&[("request_uri", "https://x")]),
            "request_uri_not_supported"
        );
        assert_eq!(
            code(&[("response_type", "token")]),
            "unsupported_response_type"
        );
        assert_eq!(code(&[("response_type", "")]), "invalid_request");
        assert_eq!(code(&[("scope", "email")]), "invalid_scope");
        assert_eq!(code(&[("scope", "openid admin")]), "invalid_scope");
        assert_eq!(
            code(&[("code_challenge_method", "plain")]),
            "invalid_request"
        );
        assert_eq!(code(&[("code_challenge_method", "")]), "invalid_request");
        assert_eq!(code(&[("code_challenge", "short")]), "invalid_request");
        assert_eq!(code(&[("prompt", "none login")]), "invalid_request");
        assert_eq!(code(&[("prompt", "bogus")]), "invalid_request");
        assert_eq!(code(&[("max_age", "-1")]), "invalid_request");
        let mut dup = with(&[]);
        dup.push(("scope".into(), "openid".into()));
        assert_eq!(parse(&dup, &c).unwrap_err().code(), "invalid_request");
        // PKCE is optional for confidential clients, required for public ones.
        assert!(
            parse(
                &with(&[("code_challenge", ""), ("code_challenge_method", "")]),
                &c
            )
            .is_ok()
        );
        let public = client(true);
        assert_eq!(
            parse(
                &with(&[("code_challenge", ""), ("code_challenge_method", "")]),
                &public
            )
            .unwrap_err()
            .code(),
            "invalid_request"
        );
    }

    #[test]
    fn decisions() {
        let c = client(false);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let s = SessionView {
            session_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            email: "ada@example.com".into(),
            auth_time: now - chrono::Duration::seconds(10),
        };
        let req = |extra: &[(&'static str, &'static str)]| parse(&with(extra), &c).unwrap();
        let d = |r: &AuthRequest, s: Option<&SessionView>, hint, fresh, consent| {
            decide(r, s, hint, fresh, consent, false, now)
        };
        assert_eq!(d(&req(&[]), None, None, false, false), Ok(Next::Login));
        assert_eq!(d(&req(&[]), Some(&s), None, false, false), Ok(Next::Issue));
        assert_eq!(
            d(&req(&[("prompt", "none")]), None, None, false, false)
                .unwrap_err()
                .code(),
            "login_required"
        );
        assert_eq!(
            d(&req(&[("prompt", "login")]), Some(&s), None, false, false),
            Ok(Next::Login)
        );
        assert_eq!(
            d(&req(&[("prompt", "login")]), Some(&s), None, true, false),
            Ok(Next::Issue)
        );
        assert_eq!(
            d(&req(&[("max_age", "5")]), Some(&s), None, false, false),
            Ok(Next::Login)
        );
        assert_eq!(
            d(&req(&[("max_age", "60")]), Some(&s), None, false, false),
            Ok(Next::Issue)
        );
        assert_eq!(
            d(
                &req(&[("max_age", "5"), ("prompt", "none")]),
                Some(&s),
                None,
                false,
                false
            )
            .unwrap_err()
            .code(),
            "login_required"
        );
        let other = Some(Uuid::from_u128(99));
        assert_eq!(d(&req(&[]), Some(&s), other, false, false), Ok(Next::Login));
        assert_eq!(
            d(&req(&[("prompt", "none")]), Some(&s), other, false, false)
                .unwrap_err()
                .code(),
            "login_required"
        );
        assert_eq!(
            d(
                &req(&[("login_hint", "bob@example.com")]),
                Some(&s),
                None,
                false,
                false
            ),
            Ok(Next::Login)
        );
        assert_eq!(
            d(
                &req(&[("login_hint", "ADA@example.com")]),
                Some(&s),
                None,
                false,
                false
            ),
            Ok(Next::Issue)
        );
        assert_eq!(d(&req(&[]), Some(&s), None, false, true), Ok(Next::Consent));
        assert_eq!(
            d(&req(&[("prompt", "none")]), Some(&s), None, false, true)
                .unwrap_err()
                .code(),
            "consent_required"
        );
        assert_eq!(
            d(&req(&[("prompt", "consent")]), Some(&s), None, false, false),
            Ok(Next::Consent)
        );
    }

    #[test]
    fn redirects_keep_the_query_and_carry_iss() {
        let u = error_redirect(
            "https://rp.example/cb?x=1",
            &OidcError::LoginRequired("sign in".into()),
            Some("s t"),
            "https://id.example",
        );
        assert_eq!(
            u,
            "https://rp.example/cb?x=1&error=login_required&error_description=sign+in&state=s+t&iss=https%3A%2F%2Fid.example"
        );
    }

    #[test]
    fn pkce_s256_rfc7636_appendix_b() {
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            CHALLENGE
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            CHALLENGE
        ));
        assert!(!pkce_matches(CHALLENGE, CHALLENGE));
    }
}
