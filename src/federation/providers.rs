//! Managing an org's identity providers (`identity_providers`): the stored `config` is the
//! protocol's settings ([`IdpConfig`] for SAML, [`UpstreamConfig`] for OIDC) plus the shared
//! [`JitSettings`], side by side in one JSON object. Every change is audited; the upstream
//! client secret is stored encrypted and never shown.
use super::mapping::JitSettings;
use super::oidc_upstream::UpstreamConfig;
use crate::config::Secret;
use crate::identity::audit::{self, Event};
use crate::identity::orgs::LoginMethod;
use crate::identity::{Identity, IdentityError, roles};
use crate::saml::config::IdpConfig;
use crate::store::federation::IdentityProvider;
use crate::store::{self, Json};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// Days before an IdP certificate expires from which it is reported.
pub const CERT_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub enum ProtocolConfig {
    Saml(IdpConfig),
    Oidc(UpstreamConfig),
}

fn keys_of<T: serde::Serialize>(v: &T) -> Vec<String> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Reads a stored or submitted config of a provider type: both parts, every key known.
pub fn parse_config(kind: &str, v: &Value) -> Result<(ProtocolConfig, JitSettings), String> {
    let obj = v.as_object().ok_or("must be a JSON object")?;
    let jit: JitSettings = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let (protocol, mut known) = match kind {
        "saml" => {
            let c: IdpConfig = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())?;
            let k = keys_of(&c);
            (ProtocolConfig::Saml(c), k)
        }
        "oidc" => {
            let c: UpstreamConfig = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())?;
            let k = keys_of(&c);
            (ProtocolConfig::Oidc(c), k)
        }
        _ => return Err("type must be saml or oidc".into()),
    };
    known.extend(keys_of(&jit));
    if let Some(unknown) = obj.keys().find(|k| !known.contains(k)) {
        return Err(format!("unknown setting `{unknown}`"));
    }
    Ok((protocol, jit))
}

/// The normalized JSON of a config (defaults filled in).
fn normalized(protocol: &ProtocolConfig, jit: &JitSettings) -> Value {
    let mut out = match protocol {
        ProtocolConfig::Saml(c) => serde_json::to_value(c),
        ProtocolConfig::Oidc(c) => serde_json::to_value(c),
    }
    .unwrap_or_else(|_| json!({}));
    if let (Some(o), Ok(Value::Object(j))) = (out.as_object_mut(), serde_json::to_value(jit)) {
        o.extend(j);
    }
    out
}

fn bad_config(message: String) -> IdentityError {
    IdentityError::Invalid {
        field: "config",
        message,
    }
}

/// A certificate of a SAML provider that expires within [`CERT_WARNING_DAYS`] (or has).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CertificateWarning {
    pub certificate: String,
    pub not_after: DateTime<Utc>,
    pub days_left: i64,
}

/// The provider's certificates close to (or past) expiry at `now`.
pub fn certificate_warnings(p: &IdentityProvider, now: DateTime<Utc>) -> Vec<CertificateWarning> {
    let Ok((ProtocolConfig::Saml(c), _)) = parse_config(&p.kind, &p.config.0) else {
        return Vec::new();
    };
    c.certificate_expiries()
        .into_iter()
        .filter_map(|(certificate, not_after)| {
            let days_left = (not_after - now).num_days();
            (days_left <= CERT_WARNING_DAYS).then_some(CertificateWarning {
                certificate,
                not_after,
                days_left,
            })
        })
        .collect()
}

/// What `create` needs.
#[derive(Debug, Default)]
pub struct NewProvider {
    /// `saml` or `oidc`.
    pub kind: String,
    pub name: String,
    pub config: Value,
    /// The upstream OIDC client secret.
    pub client_secret: Option<Secret<String>>,
    pub enabled: bool,
}

fn check_name(name: &str) -> Result<String, IdentityError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 {
        return Err(IdentityError::invalid(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    Ok(n.to_string())
}

fn seal(id: &Identity, secret: &Secret<String>) -> Result<String, IdentityError> {
    id.data_key
        .encrypt(secret.expose().as_bytes())
        .map_err(|e| IdentityError::Internal(e.to_string()))
}

/// An enabled provider needs its org to allow its method: allowed here unless the org
/// refused it explicitly (an `org_login_methods` row saying no stays).
async fn allow_method_by_default(
    tx: &mut crate::store::Tx,
    id: &Identity,
    org_id: Uuid,
    kind: &str,
) -> Result<(), IdentityError> {
    let m = LoginMethod::of_provider(kind);
    if store::org_settings::login_method(tx, org_id, m.as_str())
        .await?
        .is_none()
    {
        store::org_settings::set_login_method(tx, org_id, m.as_str(), true).await?;
        let event = Event::new(
            "org_login_method.enabled",
            "org_login_method",
            audit::pair(org_id, m.as_str()),
        )
        .org(org_id)
        .details(json!({ "method": m.as_str(), "enabled": { "before": false, "after": true } }));
        audit::record(tx, id, event).await?;
    }
    Ok(())
}

pub async fn create(
    id: &Identity,
    org_id: Uuid,
    new: NewProvider,
) -> Result<IdentityProvider, IdentityError> {
    let name = check_name(&new.name)?;
    let (protocol, jit) = parse_config(&new.kind, &new.config).map_err(bad_config)?;
    if new.kind == "saml" && new.client_secret.is_some() {
        return Err(IdentityError::invalid(
            "client_secret",
            "only OIDC providers have a client secret",
        ));
    }
    let now = id.clock.now();
    let p = IdentityProvider {
        provider_id: Uuid::now_v7(),
        org_id,
        kind: new.kind.clone(),
        name,
        config: Json(normalized(&protocol, &jit)),
        enabled: new.enabled,
        created_at: now,
        updated_at: None,
        secret: new
            .client_secret
            .as_ref()
            .map(|s| seal(id, s))
            .transpose()?,
    };
    let (mut tx, _) = roles::begin_org(id, org_id).await?;
    check_default_role(&mut tx, org_id, &jit).await?;
    store::federation::insert_provider(&mut tx, &p).await?;
    if p.enabled {
        allow_method_by_default(&mut tx, id, org_id, &p.kind).await?;
    }
    let event = Event::new(
        "identity_provider.created",
        "identity_provider",
        p.provider_id,
    )
    .org(org_id)
    .details(json!({
        "type": p.kind, "name": p.name, "enabled": p.enabled, "config": p.config.0,
        "client_secret_set": p.secret.is_some(),
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(p)
}

async fn check_default_role(
    tx: &mut crate::store::Tx,
    org_id: Uuid,
    jit: &JitSettings,
) -> Result<(), IdentityError> {
    if store::roles::find_role_by_name(tx, org_id, &jit.default_role)
        .await?
        .is_none()
    {
        return Err(bad_config(format!(
            "default_role: the organization has no role named `{}`",
            jit.default_role
        )));
    }
    Ok(())
}

pub async fn get(
    id: &Identity,
    org_id: Uuid,
    provider_id: Uuid,
) -> Result<IdentityProvider, IdentityError> {
    let mut c = id.db.conn().await?;
    store::federation::get_provider_in(&mut c, org_id, provider_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "identity provider",
        })
}

pub async fn list(
    id: &Identity,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<IdentityProvider>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::federation::list_providers(&mut c, org_id, after, limit).await?)
}

/// Changes to a provider; `None` keeps a field. `config` replaces the whole config.
#[derive(Debug, Default)]
pub struct ProviderPatch {
    pub name: Option<String>,
    pub config: Option<Value>,
    /// `Some(None)` removes the secret.
    pub client_secret: Option<Option<Secret<String>>>,
    pub enabled: Option<bool>,
}

pub async fn update(
    id: &Identity,
    org_id: Uuid,
    provider_id: Uuid,
    patch: ProviderPatch,
) -> Result<IdentityProvider, IdentityError> {
    let (mut tx, _) = roles::begin_org(id, org_id).await?;
    let before = store::federation::get_provider_in(&mut tx, org_id, provider_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "identity provider",
        })?;
    let mut p = before.clone();
    if let Some(n) = patch.name {
        p.name = check_name(&n)?;
    }
    if let Some(c) = patch.config {
        let (protocol, jit) = parse_config(&p.kind, &c).map_err(bad_config)?;
        check_default_role(&mut tx, org_id, &jit).await?;
        p.config = Json(normalized(&protocol, &jit));
    }
    if let Some(s) = patch.client_secret {
        if p.kind == "saml" && s.is_some() {
            return Err(IdentityError::invalid(
                "client_secret",
                "only OIDC providers have a client secret",
            ));
        }
        p.secret = s.as_ref().map(|s| seal(id, s)).transpose()?;
    }
    if let Some(e) = patch.enabled {
        p.enabled = e;
    }
    p.updated_at = Some(id.clock.now());
    store::federation::update_provider(&mut tx, &p).await?;
    if p.enabled && !before.enabled {
        allow_method_by_default(&mut tx, id, org_id, &p.kind).await?;
    }
    let mut details = audit::diff(
        &json!({ "name": before.name, "enabled": before.enabled, "config": before.config.0 }),
        &json!({ "name": p.name, "enabled": p.enabled, "config": p.config.0 }),
        &[],
    );
    if p.secret != before.secret {
        details["client_secret"] = json!("changed");
    }
    let event = Event::new(
        "identity_provider.updated",
        "identity_provider",
        provider_id,
    )
    .org(org_id)
    .details(details);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(p)
}

pub async fn delete(id: &Identity, org_id: Uuid, provider_id: Uuid) -> Result<(), IdentityError> {
    let (mut tx, _) = roles::begin_org(id, org_id).await?;
    let p = store::federation::get_provider_in(&mut tx, org_id, provider_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "identity provider",
        })?;
    // The audit row first: deleting the provider removes its links and pending requests.
    let event = Event::new(
        "identity_provider.deleted",
        "identity_provider",
        provider_id,
    )
    .org(org_id)
    .details(json!({ "type": p.kind, "name": p.name }));
    audit::record(&mut tx, id, event).await?;
    if !store::federation::delete_provider(&mut tx, org_id, provider_id).await? {
        return Err(IdentityError::NotFound {
            what: "identity provider",
        });
    }
    tx.commit().await?;
    Ok(())
}

/// Builds a SAML provider's config from IdP metadata XML, with `extra` settings (JIT,
/// mapping, skew, …) laid over it.
pub fn config_from_metadata(xml: &str, extra: &Value) -> Result<Value, IdentityError> {
    let idp = crate::saml::metadata::parse_idp_metadata(xml)
        .map_err(|e| IdentityError::invalid("saml_metadata", e.to_string()))?;
    let mut v = serde_json::to_value(idp).map_err(|e| IdentityError::Internal(e.to_string()))?;
    if let (Some(o), Some(x)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in x {
            o.insert(k.clone(), val.clone());
        }
    }
    Ok(v)
}

/// Where a provider's endpoints are, for the admin setting up the IdP side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Endpoints {
    /// Starts a login at this provider (`?auth=` continues an authorization request).
    pub login_url: String,
    /// SAML: our entity ID (the metadata URL), the metadata and the ACS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_entity_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
    /// OIDC: the redirect URI to register at the upstream provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
}

pub fn metadata_url(base_url: &str, provider_id: Uuid) -> String {
    format!("{base_url}/saml/{provider_id}/metadata")
}

pub fn acs_url(base_url: &str, provider_id: Uuid) -> String {
    format!("{base_url}/saml/{provider_id}/acs")
}

pub fn oidc_redirect_uri(base_url: &str, provider_id: Uuid) -> String {
    format!("{base_url}/sso/oidc/{provider_id}/callback")
}

pub fn endpoints(base_url: &str, p: &IdentityProvider) -> Endpoints {
    let base_url = base_url.trim_end_matches('/');
    let id = p.provider_id;
    if p.kind == "saml" {
        Endpoints {
            login_url: format!("{base_url}/saml/{id}/login"),
            sp_entity_id: Some(metadata_url(base_url, id)),
            metadata_url: Some(metadata_url(base_url, id)),
            acs_url: Some(acs_url(base_url, id)),
            redirect_uri: None,
        }
    } else {
        Endpoints {
            login_url: format!("{base_url}/sso/oidc/{id}/login"),
            sp_entity_id: None,
            metadata_url: None,
            acs_url: None,
            redirect_uri: Some(oidc_redirect_uri(base_url, id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};

    /// A self-signed certificate valid from `from` for `days` days, as PEM.
    fn cert(cn: &str, from: DateTime<Utc>, days: i64) -> String {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let nb = Asn1Time::from_unix(from.timestamp()).unwrap();
        let na = Asn1Time::from_unix((from + chrono::Duration::days(days)).timestamp()).unwrap();
        b.set_not_before(&nb).unwrap();
        b.set_not_after(&na).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        String::from_utf8(b.build().to_pem().unwrap()).unwrap()
    }

    fn provider(config: Value) -> IdentityProvider {
        IdentityProvider {
            provider_id: Uuid::nil(),
            org_id: Uuid::nil(),
            kind: "saml".into(),
            name: "x".into(),
            config: Json(config),
            enabled: true,
            created_at: Utc::now(),
            updated_at: None,
            secret: None,
        }
    }

    #[test]
    fn certificates_close_to_expiry_are_reported() {
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let start = now - chrono::Duration::days(300);
        let soon = cert("soon.idp.test", start, 310); // 10 days left
        let later = cert("later.idp.test", start, 700);
        let gone = cert("gone.idp.test", start, 299); // expired yesterday
        let p = provider(json!({
            "entity_id": "https://idp.test", "sso_url": "https://idp.test/sso",
            "certificates": [soon, later, gone],
        }));
        let w = certificate_warnings(&p, now);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].certificate.contains("soon.idp.test"), "{w:?}");
        assert_eq!(w[0].days_left, 10);
        assert!(w[1].certificate.contains("gone.idp.test"));
        assert!(w[1].days_left < 0);
        // At 31 days out nothing is reported yet.
        let fresh = provider(json!({
            "entity_id": "https://idp.test", "sso_url": "https://idp.test/sso",
            "certificates": [cert("new.idp.test", now, 31)],
        }));
        assert!(certificate_warnings(&fresh, now).is_empty());
    }

    #[test]
    fn configs_are_checked_per_type_and_typos_refused() {
        let c = cert("idp.test", Utc::now(), 365);
        let saml = json!({"entity_id": "https://idp.test", "sso_url": "https://idp.test/sso",
                          "certificates": [c], "default_role": "admin"});
        let (p, jit) = parse_config("saml", &saml).unwrap();
        assert!(matches!(p, ProtocolConfig::Saml(_)));
        assert_eq!(jit.default_role, "admin");
        let mut typo = saml.clone();
        typo["allow_idp_intiated"] = json!(true);
        assert!(
            parse_config("saml", &typo)
                .unwrap_err()
                .contains("allow_idp_intiated")
        );
        let mut no_cert = saml.clone();
        no_cert["certificates"] = json!([]);
        assert!(parse_config("saml", &no_cert).is_err());
        assert!(
            parse_config("oidc", &saml).is_err(),
            "a SAML config is no OIDC config"
        );
        let oidc = json!({"issuer": "https://login.example.com", "client_id": "c",
                          "group_roles": {"g": "admin"}});
        let (p, jit) = parse_config("oidc", &oidc).unwrap();
        assert!(matches!(p, ProtocolConfig::Oidc(_)));
        assert_eq!(jit.group_roles["g"], "admin");
        assert!(parse_config("ldap", &oidc).is_err());
        assert!(parse_config("oidc", &json!([])).is_err());
    }
}
