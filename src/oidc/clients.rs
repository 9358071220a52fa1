//! OIDC clients (relying parties): registration rules, redirect-URI matching and client
//! authentication. Secrets are 256-bit, shown once, stored as SHA-256 and compared in
//! constant time. Every change is audited (`oidc_client.*`).
use super::error::OidcError;
use crate::config::Secret;
use crate::identity::audit::{self, Event};
use crate::identity::sessions::{hash_token, new_token};
use crate::identity::{Identity, IdentityError};
use crate::store::oidc::OidcClient;
use crate::store::{self, TextList};
use serde_json::json;
use subtle::ConstantTimeEq;
use url::Url;
use uuid::Uuid;

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GRANT_TYPES: &[&str] = &[
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
];

/// Scopes Lintel knows. `org` adds the organization claims (`org_id`, `org_name`,
/// `org_slug`, `role`, `roles`, `permissions`) of the org the login is for.
pub const SCOPES: &[&str] = &["openid", "profile", "email", "offline_access", "org"];

/// Client authentication methods implemented (RFC 7591 §2 names; `private_key_jwt` is
/// RFC 7523 §2.2 with the client's registered `jwks`).
pub const AUTH_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];

/// RFC 7523 §2.2 `client_assertion_type`.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's registered JWK Set for `private_key_jwt`: public keys only, of a supported
/// algorithm (ES256 on P-256, RS256, EdDSA on Ed25519), at most 10.
pub fn check_jwks(v: &serde_json::Value) -> Result<(), String> {
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("must be a JWK Set ({\"keys\": [...]})")?;
    if keys.is_empty() || keys.len() > 10 {
        return Err("must hold 1 to 10 keys".into());
    }
    for k in keys {
        let map = k.as_object().ok_or("each key must be an object")?;
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|f| map.contains_key(*f))
        {
            return Err("keys must be public (no private members)".into());
        }
        let jwk = josekit::jwk::Jwk::from_map(map.clone()).map_err(|e| e.to_string())?;
        if verifier_for(&jwk).is_none() {
            return Err("each key must be an EC P-256, RSA or Ed25519 signing key".into());
        }
    }
    Ok(())
}

/// A verifier for a client's public key, by its key type (and `alg` when given).
pub fn verifier_for(jwk: &josekit::jwk::Jwk) -> Option<Box<dyn josekit::jws::JwsVerifier>> {
    use josekit::jws::{ES256, EdDSA, RS256};
    let alg = jwk.algorithm();
    match (jwk.key_type(), alg) {
        ("EC", None | Some("ES256")) => ES256.verifier_from_jwk(jwk).ok().map(|v| Box::new(v) as _),
        ("RSA", None | Some("RS256")) => {
            RS256.verifier_from_jwk(jwk).ok().map(|v| Box::new(v) as _)
        }
        ("OKP", None | Some("EdDSA")) => {
            EdDSA.verifier_from_jwk(jwk).ok().map(|v| Box::new(v) as _)
        }
        _ => None,
    }
}

/// Signing algorithms available for ID tokens (RS256 and EdDSA once a key of theirs exists:
/// `lintel keys rotate --alg RS256`).
pub const ID_TOKEN_ALGS: &[&str] = &["ES256", "RS256", "EdDSA"];

/// A client may use `alg` only when a key of that algorithm has been created.
async fn check_alg_has_key(a: &mut impl store::Access, alg: &str) -> Result<(), IdentityError> {
    if alg == "ES256"
        || store::signing_keys::list(a)
            .await?
            .iter()
            .any(|k| k.alg == alg)
    {
        return Ok(());
    }
    Err(invalid(
        "id_token_signed_response_alg",
        format!("no {alg} key exists yet (create one with `lintel keys rotate --alg {alg}`)"),
    ))
}

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_URIS: usize = 32;

/// What a client is registered with.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub name: String,
    pub org_id: Option<Uuid>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Default: `authorization_code`, `refresh_token`.
    pub grant_types: Option<Vec<String>>,
    /// Default: `openid profile email offline_access`.
    pub scopes: Option<Vec<String>>,
    /// Default: `none` for a public client, `client_secret_basic` otherwise.
    pub token_endpoint_auth_method: Option<String>,
    /// A public (native or browser) client: no secret, PKCE required.
    pub public: bool,
    pub first_party: bool,
    pub id_token_signed_response_alg: Option<String>,
    /// OIDC Back-Channel Logout 1.0: where logout tokens are POSTed.
    pub backchannel_logout_uri: Option<String>,
    /// The public keys of a `private_key_jwt` client (a JWK Set).
    pub jwks: Option<serde_json::Value>,
}

/// A change to a client; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub first_party: Option<bool>,
    pub enabled: Option<bool>,
    pub id_token_signed_response_alg: Option<String>,
    /// `Some("")` removes it.
    pub backchannel_logout_uri: Option<String>,
    /// New public keys of a `private_key_jwt` client.
    pub jwks: Option<serde_json::Value>,
}

fn check_backchannel(uri: Option<String>) -> Result<Option<String>, IdentityError> {
    match uri.filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(u) => {
            // Back-Channel Logout §2.2: an absolute https (or loopback http) URL.
            let web = u.starts_with("https://") || u.starts_with("http://");
            match check_redirect_uri(&u) {
                Ok(()) if web => Ok(Some(u)),
                Ok(()) => Err(invalid("backchannel_logout_uri", "must be an http(s) URL")),
                Err(why) => Err(invalid("backchannel_logout_uri", why)),
            }
        }
    }
}

/// Whether the client is public (authenticates with nothing; RFC 6749 §2.1).
pub fn is_public(c: &OidcClient) -> bool {
    c.token_endpoint_auth_method == "none"
}

fn loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A registrable redirect URI (RFC 6749 §3.1.2, RFC 8252 §7, OAuth 2.0 Security BCP §4.1):
/// absolute, no fragment, no wildcard; `https`, or `http` on a loopback host, or a
/// private-use scheme in reverse-domain form (`com.example.app:/cb`) for native apps.
pub fn check_redirect_uri(raw: &str) -> Result<(), String> {
    if raw.contains('*') {
        return Err("wildcards are not allowed".into());
    }
    let u = Url::parse(raw).map_err(|e| format!("not an absolute URI ({e})"))?;
    if u.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback_host(&u) => Ok(()),
        "http" => Err("http is only allowed for loopback hosts (use https)".into()),
        s if s.contains('.') => Ok(()),
        "javascript" | "data" | "file" | "vbscript" => Err("scheme not allowed".into()),
        _ => Err("use https, http on loopback, or a reverse-domain private-use scheme".into()),
    }
}

/// Whether `requested` is one of the `registered` redirect URIs: exact string comparison
/// (RFC 6749 §3.1.2.3, Security BCP §4.1.3), except that for a native (public) client a
/// registered loopback IP literal URI matches on any port (RFC 8252 §7.3).
pub fn redirect_uri_matches(registered: &[String], requested: &str, public: bool) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    if !public {
        return false;
    }
    let Ok(req) = Url::parse(requested) else {
        return false;
    };
    let ip_loopback = |u: &Url| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                _ => false,
            }
    };
    if !ip_loopback(&req) {
        return false;
    }
    registered.iter().any(|r| {
        let Ok(mut reg) = Url::parse(r) else {
            return false;
        };
        if !ip_loopback(&reg) {
            return false;
        }
        let _ = reg.set_port(req.port());
        reg.as_str() == req.as_str()
    })
}

fn invalid(field: &'static str, message: impl Into<String>) -> IdentityError {
    IdentityError::invalid(field, message)
}

fn check_uris(field: &'static str, uris: &[String]) -> Result<Vec<String>, IdentityError> {
    if uris.len() > MAX_URIS {
        return Err(invalid(field, format!("at most {MAX_URIS} URIs")));
    }
    let mut out: Vec<String> = Vec::with_capacity(uris.len());
    for u in uris {
        check_redirect_uri(u).map_err(|why| invalid(field, format!("`{u}`: {why}")))?;
        if !out.contains(u) {
            out.push(u.clone());
        }
    }
    Ok(out)
}

fn check_list(
    field: &'static str,
    values: &[String],
    allowed: &[&str],
) -> Result<Vec<String>, IdentityError> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !allowed.contains(&v.as_str()) {
            return Err(invalid(
                field,
                format!("`{v}` is not supported (one of: {})", allowed.join(", ")),
            ));
        }
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} printable characters"),
        ));
    }
    Ok(name.to_string())
}

/// The rules that tie a client's fields together.
pub fn check_consistency(c: &OidcClient) -> Result<(), IdentityError> {
    let grants = &c.grant_types.0;
    if grants.is_empty() {
        return Err(invalid(
            "grant_types",
            "at least one grant type is required",
        ));
    }
    if grants.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) && c.redirect_uris.0.is_empty() {
        return Err(invalid(
            "redirect_uris",
            "the authorization_code grant needs at least one redirect URI",
        ));
    }
    if is_public(c)
        && grants
            .iter()
            .any(|g| g == GRANT_CLIENT_CREDENTIALS || g == GRANT_TOKEN_EXCHANGE)
    {
        return Err(invalid(
            "grant_types",
            "a public client cannot use client_credentials or token exchange",
        ));
    }
    if !c.scopes.0.iter().any(|s| s == "openid")
        && grants.iter().any(|g| g == GRANT_AUTHORIZATION_CODE)
    {
        return Err(invalid("scopes", "must include `openid`"));
    }
    Ok(())
}

/// Registers a client; returns it and, for a confidential client, its secret (shown once).
pub async fn create(
    id: &Identity,
    new: NewClient,
) -> Result<(OidcClient, Option<Secret<String>>), IdentityError> {
    let name = check_name(&new.name)?;
    let method = match (&new.token_endpoint_auth_method, new.public) {
        (None, true) => "none".to_string(),
        (None, false) => "client_secret_basic".to_string(),
        (Some(m), public) => {
            check_list(
                "token_endpoint_auth_method",
                std::slice::from_ref(m),
                AUTH_METHODS,
            )?;
            if public != (m == "none") {
                return Err(invalid(
                    "token_endpoint_auth_method",
                    "`none` is the method of public clients, and only of them",
                ));
            }
            m.clone()
        }
    };
    let grant_types = check_list(
        "grant_types",
        &new.grant_types
            .unwrap_or_else(|| vec![GRANT_AUTHORIZATION_CODE.into(), GRANT_REFRESH_TOKEN.into()]),
        GRANT_TYPES,
    )?;
    let scopes = check_list(
        "scopes",
        &new.scopes.unwrap_or_else(|| {
            ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec()
        }),
        SCOPES,
    )?;
    let alg = new
        .id_token_signed_response_alg
        .unwrap_or_else(|| "ES256".into());
    check_list(
        "id_token_signed_response_alg",
        std::slice::from_ref(&alg),
        ID_TOKEN_ALGS,
    )?;
    let jwks = match (&new.jwks, method.as_str()) {
        (Some(j), "private_key_jwt") => {
            check_jwks(j).map_err(|why| invalid("jwks", why))?;
            Some(crate::store::Json(j.clone()))
        }
        (None, "private_key_jwt") => {
            return Err(invalid(
                "jwks",
                "private_key_jwt needs the client's public keys",
            ));
        }
        (Some(_), _) => return Err(invalid("jwks", "only for private_key_jwt clients")),
        (None, _) => None,
    };
    let secret = (method != "none" && method != "private_key_jwt").then(new_token);
    let client = OidcClient {
        client_id: Uuid::now_v7().to_string(),
        org_id: new.org_id,
        name,
        secret_hash: secret.as_deref().map(hash_token),
        redirect_uris: TextList(check_uris("redirect_uris", &new.redirect_uris)?),
        post_logout_redirect_uris: TextList(check_uris(
            "post_logout_redirect_uris",
            &new.post_logout_redirect_uris,
        )?),
        grant_types: TextList(grant_types),
        scopes: TextList(scopes),
        token_endpoint_auth_method: method,
        id_token_signed_response_alg: alg,
        first_party: new.first_party,
        jwks,
        enabled: true,
        created_at: id.clock.now(),
        updated_at: None,
        backchannel_logout_uri: check_backchannel(new.backchannel_logout_uri)?,
    };
    check_consistency(&client)?;
    let mut tx = id.db.begin().await?;
    check_alg_has_key(&mut tx, &client.id_token_signed_response_alg).await?;
    if let Some(org_id) = client.org_id
        && store::orgs::get(&mut tx, org_id).await?.is_none()
    {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    store::oidc::insert_client(&mut tx, &client)
        .await
        .map_err(|e| IdentityError::from_store_conflict(e, |f| format!("{f} is taken")))?;
    audit::record(
        &mut tx,
        id,
        event("oidc_client.created", &client).details(public_view(&client)),
    )
    .await?;
    tx.commit().await?;
    Ok((client, secret.map(Secret::new)))
}

fn event<'a>(action: &'a str, c: &OidcClient) -> Event<'a> {
    let e = Event::new(action, "oidc_client", &c.client_id);
    match c.org_id {
        Some(o) => e.org(o),
        None => e,
    }
}

/// What the audit log keeps of a client (never the secret hash).
fn public_view(c: &OidcClient) -> serde_json::Value {
    serde_json::to_value(c).unwrap_or_default()
}

pub async fn get(id: &Identity, client_id: &str) -> Result<OidcClient, IdentityError> {
    let mut c = id.db.conn().await?;
    store::oidc::get_client(&mut c, client_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "client" })
}

pub async fn list(
    id: &Identity,
    org_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<OidcClient>, IdentityError> {
    let mut c = id.db.conn().await?;
    let after = after.map(|u| u.to_string());
    Ok(store::oidc::list_clients(&mut c, org_id, after.as_deref(), limit).await?)
}

pub async fn update(
    id: &Identity,
    client_id: &str,
    patch: ClientPatch,
) -> Result<OidcClient, IdentityError> {
    let mut tx = id.db.begin().await?;
    let before = store::oidc::get_client(&mut tx, client_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "client" })?;
    let mut after = before.clone();
    if let Some(n) = patch.name {
        after.name = check_name(&n)?;
    }
    if let Some(u) = patch.redirect_uris {
        after.redirect_uris = TextList(check_uris("redirect_uris", &u)?);
    }
    if let Some(u) = patch.post_logout_redirect_uris {
        after.post_logout_redirect_uris = TextList(check_uris("post_logout_redirect_uris", &u)?);
    }
    if let Some(g) = patch.grant_types {
        after.grant_types = TextList(check_list("grant_types", &g, GRANT_TYPES)?);
    }
    if let Some(s) = patch.scopes {
        after.scopes = TextList(check_list("scopes", &s, SCOPES)?);
    }
    if let Some(a) = patch.id_token_signed_response_alg {
        check_list(
            "id_token_signed_response_alg",
            std::slice::from_ref(&a),
            ID_TOKEN_ALGS,
        )?;
        after.id_token_signed_response_alg = a;
    }
    if let Some(f) = patch.first_party {
        after.first_party = f;
    }
    if let Some(e) = patch.enabled {
        after.enabled = e;
    }
    if let Some(u) = patch.backchannel_logout_uri {
        after.backchannel_logout_uri = check_backchannel(Some(u))?;
    }
    if let Some(j) = patch.jwks {
        if after.token_endpoint_auth_method != "private_key_jwt" {
            return Err(invalid("jwks", "only for private_key_jwt clients"));
        }
        check_jwks(&j).map_err(|why| invalid("jwks", why))?;
        after.jwks = Some(crate::store::Json(j));
    }
    check_consistency(&after)?;
    check_alg_has_key(&mut tx, &after.id_token_signed_response_alg).await?;
    after.updated_at = Some(id.clock.now());
    store::oidc::update_client(&mut tx, &after).await?;
    let mut b = public_view(&before);
    let mut a = public_view(&after);
    for v in [&mut a, &mut b] {
        if let Some(o) = v.as_object_mut() {
            o.remove("updated_at");
        }
    }
    audit::record(
        &mut tx,
        id,
        event("oidc_client.updated", &after).details(audit::diff(&b, &a, &[])),
    )
    .await?;
    tx.commit().await?;
    forget(client_id);
    Ok(after)
}

/// Replaces a confidential client's secret; the old one stops working at once.
pub async fn rotate_secret(
    id: &Identity,
    client_id: &str,
) -> Result<(OidcClient, Secret<String>), IdentityError> {
    let mut tx = id.db.begin().await?;
    let mut client = store::oidc::get_client(&mut tx, client_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "client" })?;
    if client.secret_hash.is_none() {
        return Err(invalid(
            "token_endpoint_auth_method",
            "this client has no secret (public or private_key_jwt)",
        ));
    }
    let secret = new_token();
    client.secret_hash = Some(hash_token(&secret));
    client.updated_at = Some(id.clock.now());
    store::oidc::update_client(&mut tx, &client).await?;
    audit::record(&mut tx, id, event("oidc_client.secret_rotated", &client)).await?;
    tx.commit().await?;
    forget(client_id);
    Ok((client, Secret::new(secret)))
}

pub async fn delete(id: &Identity, client_id: &str) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let client = store::oidc::get_client(&mut tx, client_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "client" })?;
    audit::record(
        &mut tx,
        id,
        event("oidc_client.deleted", &client).details(json!({ "name": client.name })),
    )
    .await?;
    store::oidc::delete_client(&mut tx, client_id).await?;
    tx.commit().await?;
    forget(client_id);
    Ok(())
}

/// How a client presented itself at the token, introspection or revocation endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// `Authorization: Basic` (RFC 6749 §2.3.1).
    Basic { client_id: String, secret: String },
    /// `client_id` and `client_secret` in the form body.
    Post { client_id: String, secret: String },
    /// Only `client_id` (public clients).
    None { client_id: String },
    /// An RFC 7523 client assertion (`private_key_jwt`).
    Jwt {
        client_id: String,
        assertion: String,
    },
}

impl ClientCredentials {
    pub fn client_id(&self) -> &str {
        match self {
            ClientCredentials::Basic { client_id, .. }
            | ClientCredentials::Post { client_id, .. }
            | ClientCredentials::None { client_id }
            | ClientCredentials::Jwt { client_id, .. } => client_id,
        }
    }
}

/// Whether `presented` is the secret whose hash is `hash` (constant time over the hashes).
pub fn secret_matches(hash: Option<&str>, presented: &str) -> bool {
    let Some(hash) = hash else { return false };
    let presented = hash_token(presented);
    bool::from(presented.as_bytes().ct_eq(hash.as_bytes()))
}

/// RFC 7523 §3: checks a client assertion's claims (signature already verified): `iss` and
/// `sub` are the client, `aud` names the token endpoint or the issuer, `exp` is in the
/// future and at most an hour away, `jti` is present. Returns (jti, exp).
pub fn check_assertion_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    client_id: &str,
    audiences: &[&str],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, chrono::DateTime<chrono::Utc>), String> {
    let s = |k: &str| claims.get(k).and_then(|v| v.as_str());
    if s("iss") != Some(client_id) || s("sub") != Some(client_id) {
        return Err("iss and sub must be the client_id".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => audiences.contains(&a.as_str()),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .any(|x| x.as_str().is_some_and(|x| audiences.contains(&x))),
        _ => false,
    };
    if !aud_ok {
        return Err("aud must name the token endpoint".into());
    }
    let exp = claims
        .get("exp")
        // RFC 7519 §2: a NumericDate may have a fraction.
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
        .ok_or("exp is required")?;
    if exp <= now || exp > now + chrono::Duration::hours(1) {
        return Err("exp must be in the next hour".into());
    }
    let jti = s("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or("jti is required")?;
    Ok((jti.to_string(), exp))
}

/// Verifies a `private_key_jwt` assertion against the client's registered keys and
/// records its `jti` (a replay fails).
async fn verify_assertion(
    id: &Identity,
    client: &OidcClient,
    assertion: &str,
    audiences: &[&str],
) -> Result<(), OidcError> {
    let bad = |why: &str| OidcError::invalid_client(format!("client assertion: {why}"));
    let keys = client
        .jwks
        .as_ref()
        .and_then(|j| j.0.get("keys").and_then(|k| k.as_array()).cloned())
        .unwrap_or_default();
    let header = josekit::jwt::decode_header(assertion).map_err(|_| bad("malformed"))?;
    let kid = header.claim("kid").and_then(|v| v.as_str());
    let alg = header.claim("alg").and_then(|v| v.as_str());
    let mut verified = None;
    for k in &keys {
        let Some(map) = k.as_object() else { continue };
        let Ok(jwk) = josekit::jwk::Jwk::from_map(map.clone()) else {
            continue;
        };
        if kid.is_some() && jwk.key_id() != kid {
            continue;
        }
        let Some(v) = verifier_for(&jwk) else {
            continue;
        };
        if alg != Some(v.algorithm().name()) {
            continue;
        }
        if let Ok((payload, _)) = josekit::jwt::decode_with_verifier(assertion, v.as_ref()) {
            verified = Some(payload.claims_set().clone());
            break;
        }
    }
    let claims = verified.ok_or_else(|| bad("no registered key verifies it"))?;
    let now = id.clock.now();
    let (jti, exp) =
        check_assertion_claims(&claims, &client.client_id, audiences, now).map_err(|w| bad(&w))?;
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let _ = store::oidc::purge_assertions(&mut c, now).await;
    if !store::oidc::use_assertion(
        &mut c,
        &hash_token(&format!("{}\u{0}{jti}", client.client_id)),
        &client.client_id,
        exp,
    )
    .await?
    {
        return Err(bad("already used (jti)"));
    }
    Ok(())
}

/// Authenticates a client by its registered method (RFC 6749 §2.3, RFC 7523 §2.2).
/// Unknown, disabled, or wrongly authenticated clients are all `invalid_client`.
/// `audiences`: what a client assertion's `aud` may name (the endpoint URL, the issuer).
/// This node's memory of clients read for authentication, for
/// [`crate::identity::ttl_cache::TTL`] (the secret is still checked on every request).
/// A change on this node forgets the client at once; one on another node is seen within
/// the TTL.
fn remembered() -> &'static crate::identity::ttl_cache::Cache<OidcClient> {
    static C: std::sync::OnceLock<crate::identity::ttl_cache::Cache<OidcClient>> =
        std::sync::OnceLock::new();
    C.get_or_init(crate::identity::ttl_cache::Cache::new)
}

/// Forgets a remembered client (after a change to it on this node).
pub fn forget(client_id: &str) {
    remembered().retain(|k, _| k != client_id);
}

pub async fn authenticate(
    id: &Identity,
    creds: &ClientCredentials,
    audiences: &[&str],
) -> Result<OidcClient, OidcError> {
    let bad = || OidcError::invalid_client("client authentication failed");
    let client = match remembered().get(creds.client_id()) {
        Some(c) => c,
        None => {
            let mut c = id.db.conn().await?;
            let client = store::oidc::get_client(&mut c, creds.client_id())
                .await?
                .ok_or_else(bad)?;
            remembered().put(client.client_id.clone(), client.clone());
            client
        }
    };
    if !client.enabled {
        return Err(bad());
    }
    let ok = match (creds, client.token_endpoint_auth_method.as_str()) {
        (ClientCredentials::Basic { secret, .. }, "client_secret_basic")
        | (ClientCredentials::Post { secret, .. }, "client_secret_post") => {
            secret_matches(client.secret_hash.as_deref(), secret)
        }
        (ClientCredentials::None { .. }, "none") => true,
        (ClientCredentials::Jwt { assertion, .. }, "private_key_jwt") => {
            verify_assertion(id, &client, assertion, audiences).await?;
            true
        }
        _ => false,
    };
    if ok { Ok(client) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_registrable() {
        assert!(check_redirect_uri("https://app.example.com/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1/cb").is_ok());
        assert!(check_redirect_uri("http://localhost:3000/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/oauth2redirect").is_ok());
        assert!(check_redirect_uri("http://app.example.com/cb").is_err());
        assert!(check_redirect_uri("https://*.example.com/cb").is_err());
        assert!(check_redirect_uri("https://app.example.com/cb#x").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("/relative").is_err());
        assert!(check_redirect_uri("https://u:p@app.example.com/cb").is_err());
    }

    #[test]
    fn redirect_uri_exact_match_and_loopback_ports() {
        let reg = vec![
            "https://app.example.com/cb".to_string(),
            "http://127.0.0.1/native".to_string(),
        ];
        assert!(redirect_uri_matches(
            &reg,
            "https://app.example.com/cb",
            false
        ));
        // No prefix, case or trailing-slash leniency.
        assert!(!redirect_uri_matches(
            &reg,
            "https://app.example.com/cb/",
            false
        ));
        assert!(!redirect_uri_matches(
            &reg,
            "https://app.example.com/cb?x=1",
            false
        ));
        assert!(!redirect_uri_matches(
            &reg,
            "https://APP.example.com/cb",
            false
        ));
        // RFC 8252 §7.3: any port on a loopback IP, for public clients only.
        assert!(redirect_uri_matches(
            &reg,
            "http://127.0.0.1:51234/native",
            true
        ));
        assert!(!redirect_uri_matches(
            &reg,
            "http://127.0.0.1:51234/native",
            false
        ));
        assert!(!redirect_uri_matches(
            &reg,
            "http://127.0.0.1:51234/other",
            true
        ));
        assert!(!redirect_uri_matches(
            &reg,
            "http://localhost:51234/native",
            true
        ));
    }

    #[test]
    fn secrets_compare_by_hash() {
        let s = new_token();
        let h = hash_token(&s);
        assert!(secret_matches(Some(&h), &s));
        assert!(!secret_matches(Some(&h), "wrong"));
        assert!(!secret_matches(None, &s));
    }
}
