//! Claim building: pure functions, time passed in.
//!
//! - ID token: OIDC Core §2 (`iss sub aud exp iat auth_time nonce azp sid amr acr at_hash`),
//!   plus §5.4 scope claims (`profile`, `email`) and the `org` scope's claims.
//! - Access token: RFC 9068 §2.2 (`iss exp aud sub client_id iat jti scope`, `auth_time`,
//!   `acr`, `amr`), `act` (RFC 8693 §4.1) while impersonating.
//! - UserInfo: OIDC Core §5.3.2, claims by scope.
use crate::store::memberships::Membership;
use crate::store::orgs::Org;
use crate::store::users::User;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `acr` values: a password alone, or a second factor too.
pub const ACR_PASSWORD: &str = "urn:lintel:acr:pwd";
pub const ACR_MFA: &str = "urn:lintel:acr:mfa";

/// The `acr` of a login by its `amr`.
pub fn acr_for(amr: &[String]) -> &'static str {
    if amr.iter().any(|m| m == "mfa" || m == "otp" || m == "hwk") {
        ACR_MFA
    } else {
        ACR_PASSWORD
    }
}

/// Splits a `scope` parameter (RFC 6749 §3.3: space-delimited, order irrelevant) into
/// distinct values.
pub fn parse_scope(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in s.split(' ').filter(|v| !v.is_empty()) {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

pub fn has_scope(scopes: &[String], s: &str) -> bool {
    scopes.iter().any(|x| x == s)
}

/// OIDC Core §3.1.3.6: base64url of the left half of the SHA-256 of the access token (for
/// ES256/RS256, whose hash is SHA-256).
pub fn at_hash(access_token: &str) -> String {
    let d = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..16])
}

/// The org a token is about (the `org` scope's claims).
#[derive(Debug, Clone, PartialEq)]
pub struct OrgInfo {
    pub org_id: Uuid,
    pub org_name: String,
    pub org_slug: String,
    pub role: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
}

impl OrgInfo {
    pub fn new(org: &Org, m: &Membership) -> Self {
        OrgInfo {
            org_id: org.org_id,
            org_name: org.org_name.clone(),
            org_slug: org.url_safe_org_name.clone(),
            role: m.user_role.clone(),
            roles: m.inherited_user_roles_plus_current_role.0.clone(),
            permissions: m.user_permissions.0.clone(),
        }
    }
}

/// Claims about the user released for `scopes` (OIDC Core §5.4; the `org` scope).
pub fn user_claims(user: &User, scopes: &[String], org: Option<&OrgInfo>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("sub".into(), json!(user.user_id.to_string()));
    if has_scope(scopes, "profile") {
        let name = match (&user.first_name, &user.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.clone()),
            (None, Some(l)) => Some(l.clone()),
            (None, None) => None,
        };
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        put("name", name);
        put("given_name", user.first_name.clone());
        put("family_name", user.last_name.clone());
        put("picture", user.picture_url.clone());
        put("preferred_username", user.username.clone());
    }
    if has_scope(scopes, "email") {
        m.insert("email".into(), json!(user.email));
        m.insert("email_verified".into(), json!(user.email_confirmed));
    }
    if has_scope(scopes, "org")
        && let Some(o) = org
    {
        m.insert("org_id".into(), json!(o.org_id.to_string()));
        m.insert("org_name".into(), json!(o.org_name));
        m.insert("org_slug".into(), json!(o.org_slug));
        m.insert("role".into(), json!(o.role));
        m.insert("roles".into(), json!(o.roles));
        m.insert("permissions".into(), json!(o.permissions));
    }
    m
}

/// Everything an ID token is built from.
#[derive(Debug, Clone)]
pub struct IdToken<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub user: &'a User,
    pub scopes: &'a [String],
    pub org: Option<&'a OrgInfo>,
    pub nonce: Option<&'a str>,
    pub auth_time: DateTime<Utc>,
    /// The OP (browser) session, for logout (OIDC Front/Back-Channel Logout `sid`).
    pub sid: Option<Uuid>,
    pub amr: &'a [String],
    pub access_token: Option<&'a str>,
    pub impersonator: Option<Uuid>,
    pub now: DateTime<Utc>,
    pub ttl: chrono::Duration,
}

pub fn id_token_claims(t: &IdToken<'_>) -> Map<String, Value> {
    let mut m = user_claims(t.user, t.scopes, t.org);
    m.insert("iss".into(), json!(t.issuer));
    m.insert("aud".into(), json!(t.client_id));
    m.insert("azp".into(), json!(t.client_id));
    m.insert("iat".into(), json!(t.now.timestamp()));
    m.insert("exp".into(), json!((t.now + t.ttl).timestamp()));
    m.insert("auth_time".into(), json!(t.auth_time.timestamp()));
    if let Some(n) = t.nonce {
        m.insert("nonce".into(), json!(n));
    }
    if let Some(sid) = t.sid {
        m.insert("sid".into(), json!(sid.to_string()));
    }
    if !t.amr.is_empty() {
        m.insert("amr".into(), json!(t.amr));
    }
    m.insert("acr".into(), json!(acr_for(t.amr)));
    if let Some(at) = t.access_token {
        m.insert("at_hash".into(), json!(at_hash(at)));
    }
    if let Some(admin) = t.impersonator {
        m.insert("act".into(), json!({ "sub": admin.to_string() }));
    }
    m
}

/// Everything a JWT access token is built from.
#[derive(Debug, Clone)]
pub struct AccessToken<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The user, or `None` for a client-credentials token (whose `sub` is the client).
    pub subject: Option<Uuid>,
    pub scopes: &'a [String],
    /// The grant (session) the token belongs to: revoking it ends the token.
    pub grant_id: Option<Uuid>,
    pub auth_time: Option<DateTime<Utc>>,
    pub amr: &'a [String],
    pub org_id: Option<Uuid>,
    pub impersonator: Option<Uuid>,
    pub jti: Uuid,
    pub now: DateTime<Utc>,
    pub ttl: chrono::Duration,
}

pub fn access_token_claims(t: &AccessToken<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("iss".into(), json!(t.issuer));
    m.insert(
        "sub".into(),
        json!(
            t.subject
                .map_or_else(|| t.client_id.to_string(), |u| u.to_string())
        ),
    );
    // RFC 9068 §3: the resource is Lintel itself (UserInfo); no resource indicators.
    m.insert("aud".into(), json!(t.issuer));
    m.insert("client_id".into(), json!(t.client_id));
    m.insert("iat".into(), json!(t.now.timestamp()));
    m.insert("exp".into(), json!((t.now + t.ttl).timestamp()));
    m.insert("jti".into(), json!(t.jti.to_string()));
    m.insert("scope".into(), json!(t.scopes.join(" ")));
    if let Some(g) = t.grant_id {
        m.insert("sid".into(), json!(g.to_string()));
    }
    if let Some(at) = t.auth_time {
        m.insert("auth_time".into(), json!(at.timestamp()));
        m.insert("acr".into(), json!(acr_for(t.amr)));
    }
    if !t.amr.is_empty() {
        m.insert("amr".into(), json!(t.amr));
    }
    if let Some(o) = t.org_id {
        m.insert("org_id".into(), json!(o.to_string()));
    }
    if let Some(admin) = t.impersonator {
        m.insert("act".into(), json!({ "sub": admin.to_string() }));
    }
    m
}

/// OIDC Back-Channel Logout 1.0 §2.4: the logout token's claims (never a `nonce`).
pub fn logout_token_claims(
    issuer: &str,
    client_id: &str,
    sub: Uuid,
    sid: Uuid,
    jti: Uuid,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("iss".into(), json!(issuer));
    m.insert("aud".into(), json!(client_id));
    m.insert("iat".into(), json!(now.timestamp()));
    m.insert("exp".into(), json!(now.timestamp() + 120));
    m.insert("jti".into(), json!(jti.to_string()));
    m.insert("sub".into(), json!(sub.to_string()));
    m.insert("sid".into(), json!(sid.to_string()));
    m.insert(
        "events".into(),
        json!({ "http://schemas.openid.net/event/backchannel-logout": {} }),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Json;

    fn user() -> User {
        User {
            user_id: Uuid::nil(),
            legacy_user_id: None,
            email: "ada@example.com".into(),
            email_confirmed: true,
            username: Some("ada".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            picture_url: None,
            properties: Json(json!({})),
            has_password: true,
            update_password_required: false,
            locked: false,
            enabled: true,
            mfa_enabled: false,
            can_create_orgs: false,
            created_at: 0,
            last_active_at: None,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn org() -> OrgInfo {
        OrgInfo {
            org_id: Uuid::from_u128(7),
            org_name: "Acme".into(),
            org_slug: "acme".into(),
            role: "admin".into(),
            roles: vec!["admin".into(), "member".into()],
            permissions: vec!["org:read".into()],
        }
    }

    #[test]
    fn scope_parsing_dedups_and_ignores_extra_spaces() {
        assert_eq!(parse_scope("openid  email openid"), vec!["openid", "email"]);
        assert!(parse_scope("").is_empty());
    }

    #[test]
    fn at_hash_matches_oidc_core_example() {
        // OIDC Core §A.3 uses RS256 (SHA-256) too: this is its access token and at_hash.
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn id_token_has_the_core_claims_and_scope_claims_only_when_asked() {
        let u = user();
        let amr = vec!["pwd".to_string(), "otp".to_string()];
        let scopes = vec!["openid".to_string()];
        let o = org();
        let sid = Uuid::from_u128(9);
        let t = IdToken {
            issuer: "https://id.example",
            client_id: "c1",
            user: &u,
            scopes: &scopes,
            org: Some(&o),
            nonce: Some("n-0S6"),
            auth_time: t0() - chrono::Duration::seconds(30),
            sid: Some(sid),
            amr: &amr,
            access_token: Some("tok"),
            impersonator: None,
            now: t0(),
            ttl: chrono::Duration::seconds(3600),
        };
        let c = id_token_claims(&t);
        assert_eq!(c["iss"], "https://id.example");
        assert_eq!(c["sub"], Uuid::nil().to_string());
        assert_eq!(c["aud"], "c1");
        assert_eq!(c["azp"], "c1");
        assert_eq!(c["iat"], 1_800_000_000);
        assert_eq!(c["exp"], 1_800_003_600);
        assert_eq!(c["auth_time"], 1_799_999_970);
        assert_eq!(c["nonce"], "n-0S6");
        assert_eq!(c["sid"], sid.to_string());
        assert_eq!(c["amr"], json!(["pwd", "otp"]));
        assert_eq!(c["acr"], ACR_MFA);
        assert_eq!(c["at_hash"], at_hash("tok"));
        for k in ["email", "name", "org_id", "act"] {
            assert!(c.get(k).is_none(), "{k} without its scope");
        }
        let scopes = ["openid", "profile", "email", "org"]
            .map(String::from)
            .to_vec();
        let c = id_token_claims(&IdToken {
            scopes: &scopes,
            nonce: None,
            impersonator: Some(Uuid::from_u128(5)),
            ..t
        });
        assert!(c.get("nonce").is_none());
        assert_eq!(c["email"], "ada@example.com");
        assert_eq!(c["email_verified"], true);
        assert_eq!(c["name"], "Ada Lovelace");
        assert_eq!(c["given_name"], "Ada");
        assert_eq!(c["family_name"], "Lovelace");
        assert!(c.get("picture").is_none(), "absent values are omitted");
        assert_eq!(c["org_slug"], "acme");
        assert_eq!(c["roles"], json!(["admin", "member"]));
        assert_eq!(c["permissions"], json!(["org:read"]));
        assert_eq!(c["act"]["sub"], Uuid::from_u128(5).to_string());
    }

    #[test]
    fn logout_tokens_name_the_session_and_the_event() {
        let c = logout_token_claims(
            "https://id.example",
            "c1",
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            t0(),
        );
        assert_eq!(c["aud"], "c1");
        assert_eq!(c["sid"], Uuid::from_u128(2).to_string());
        assert!(c["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
        assert!(c.get("nonce").is_none());
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
    }

    #[test]
    fn access_tokens_follow_rfc9068() {
        let scopes = vec!["openid".to_string(), "email".to_string()];
        let jti = Uuid::from_u128(1);
        let t = AccessToken {
            issuer: "https://id.example",
            client_id: "c1",
            subject: Some(Uuid::from_u128(2)),
            scopes: &scopes,
            grant_id: Some(Uuid::from_u128(3)),
            auth_time: Some(t0()),
            amr: &[],
            org_id: None,
            impersonator: Some(Uuid::from_u128(4)),
            jti,
            now: t0(),
            ttl: chrono::Duration::seconds(600),
        };
        let c = access_token_claims(&t);
        assert_eq!(c["sub"], Uuid::from_u128(2).to_string());
        assert_eq!(c["client_id"], "c1");
        assert_eq!(c["scope"], "openid email");
        assert_eq!(c["exp"], 1_800_000_600);
        assert_eq!(c["jti"], jti.to_string());
        assert_eq!(c["acr"], ACR_PASSWORD);
        assert_eq!(c["act"], json!({ "sub": Uuid::from_u128(4).to_string() }));
        // Client credentials: the client is the subject; no session, no auth_time.
        let c = access_token_claims(&AccessToken {
            subject: None,
            grant_id: None,
            auth_time: None,
            impersonator: None,
            ..t
        });
        assert_eq!(c["sub"], "c1");
        assert!(c.get("sid").is_none() && c.get("auth_time").is_none() && c.get("act").is_none());
    }
}
