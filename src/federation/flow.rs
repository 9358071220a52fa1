//! The federated login, step by step: start (a pending request bound to this browser by a
//! cookie, then the redirect to the IdP), the SAML ACS, the upstream OIDC callback, and the
//! completion that provisions the user. Time comes from the identity clock.
use super::FederationError;
use super::jit::{self, Provisioned};
use super::mapping::{self, Asserted, JitSettings};
use super::oidc_upstream::Upstream;
use super::providers::{self, ProtocolConfig};
use crate::identity::login::LoginContext;
use crate::identity::orgs::LoginMethod;
use crate::identity::sessions::{hash_token, new_token};
use crate::identity::{Identity, IdentityError};
use crate::saml::config::{IdpConfig, SpConfig};
use crate::saml::response::{self, Expect};
use crate::saml::sp_key::SpKey;
use crate::store::federation::{FederationRequest, IdentityProvider};
use crate::store::{self, Json, StoreError};
use chrono::Duration;
use std::sync::Arc;
use uuid::Uuid;

const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// How long a started federated login may take.
pub const REQUEST_TTL_SECS: i64 = 600;

/// The SP side's fixed parts.
pub struct Federation {
    /// The public base URL (the OIDC issuer), without a trailing slash.
    pub base_url: String,
    pub sp_key: Arc<SpKey>,
    pub upstream: Upstream,
}

impl Federation {
    pub fn metadata_url(&self, provider_id: Uuid) -> String {
        providers::metadata_url(&self.base_url, provider_id)
    }

    pub fn acs_url(&self, provider_id: Uuid) -> String {
        providers::acs_url(&self.base_url, provider_id)
    }

    pub fn oidc_redirect_uri(&self, provider_id: Uuid) -> String {
        providers::oidc_redirect_uri(&self.base_url, provider_id)
    }

    /// Our SP URLs for a provider: entity ID = its metadata URL.
    pub fn sp_urls(&self, provider_id: Uuid) -> SpUrls {
        SpUrls {
            entity_id: self.metadata_url(provider_id),
            acs_url: self.acs_url(provider_id),
        }
    }
}

/// Our entity ID and ACS URL for one provider.
pub struct SpUrls {
    pub entity_id: String,
    pub acs_url: String,
}

impl SpUrls {
    pub fn config<'a>(&'a self, fed: &'a Federation) -> SpConfig<'a> {
        SpConfig {
            entity_id: &self.entity_id,
            acs_url: &self.acs_url,
            key: Some(&fed.sp_key),
        }
    }
}

/// The browser a step comes from.
#[derive(Debug, Clone, Default)]
pub struct Browser {
    /// The value of the federation cookie, if the browser sent one.
    pub cookie: Option<String>,
    pub ctx: LoginContext,
}

/// A started login: where to send the browser, and the cookie value to (re)set.
#[derive(Debug)]
pub struct Started {
    pub location: String,
    pub cookie: String,
}

/// A completed login: the user and org, how, and the authorization request to continue
/// ('' for none).
#[derive(Debug)]
pub struct Finished {
    pub provisioned: Provisioned,
    pub method: &'static str,
    pub auth: String,
}

/// What the ACS answers.
#[derive(Debug)]
pub enum AcsOutcome {
    /// SP-initiated: continue at `/sso/complete` in the browser that started it.
    Continue { request_id: String },
    /// IdP-initiated (when the provider allows it): signed in.
    Finished(Box<Finished>),
}

async fn enabled_provider(
    id: &Identity,
    provider_id: Uuid,
) -> Result<(IdentityProvider, ProtocolConfig, JitSettings), FederationError> {
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let p = store::federation::get_provider(&mut c, provider_id)
        .await
        .map_err(IdentityError::from)?
        .ok_or(FederationError::UnknownProvider)?;
    if !p.enabled {
        return Err(FederationError::ProviderDisabled);
    }
    let (protocol, jit) = providers::parse_config(&p.kind, &p.config.0)
        .map_err(|e| FederationError::Config(e.to_string()))?;
    Ok((p, protocol, jit))
}

/// Starts a login at `provider_id`, continuing `auth` (a form-encoded authorization request,
/// or '') afterwards.
pub async fn start(
    fed: &Federation,
    id: &Identity,
    provider_id: Uuid,
    auth: &str,
    login_hint: Option<&str>,
    browser: &Browser,
) -> Result<Started, FederationError> {
    let (p, protocol, _) = enabled_provider(id, provider_id).await?;
    let now = id.clock.now();
    let cookie = browser
        .cookie
        .clone()
        .filter(|c| (20..=100).contains(&c.len()))
        .unwrap_or_else(new_token);
    let mut row = FederationRequest {
        request_id: String::new(),
        provider_id,
        browser_hash: hash_token(&cookie),
        auth: auth.chars().take(8192).collect(),
        nonce: None,
        pkce_verifier: None,
        created_at: now,
        expires_at: now + Duration::seconds(REQUEST_TTL_SECS),
        result: None,
        asserted_at: None,
        completed_at: None,
    };
    let location = match protocol {
        ProtocolConfig::Saml(idp) => {
            row.request_id = crate::saml::authn_request::new_request_id();
            crate::saml::authn_request::redirect_url(
                &fed.sp_urls(provider_id).config(fed),
                &idp,
                &row.request_id,
                &row.request_id,
                now,
            )?
        }
        ProtocolConfig::Oidc(cfg) => {
            let s = fed
                .upstream
                .start(&cfg, &fed.oidc_redirect_uri(provider_id), login_hint, now)
                .await?;
            row.request_id = s.state;
            row.nonce = Some(s.nonce);
            row.pkce_verifier = Some(
                id.data_key
                    .encrypt(s.pkce_verifier.as_bytes())
                    .map_err(|e| IdentityError::Internal(e.to_string()))?,
            );
            s.url
        }
    };
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    store::federation::insert_request(&mut c, &row)
        .await
        .map_err(IdentityError::from)?;
    tracing::debug!(provider_id = %p.provider_id, "federated login started");
    Ok(Started { location, cookie })
}

/// The SAML Assertion Consumer Service (HTTP-POST binding): validates the response, remembers
/// its assertion ID, and marks the pending request answered.
pub async fn saml_acs(
    fed: &Federation,
    id: &Identity,
    provider_id: Uuid,
    saml_response: &str,
    relay_state: Option<&str>,
    browser: &Browser,
) -> Result<AcsOutcome, FederationError> {
    let (p, protocol, jit_settings) = enabled_provider(id, provider_id).await?;
    let ProtocolConfig::Saml(idp) = protocol else {
        return Err(FederationError::UnknownProvider);
    };
    let r = acs_checked(fed, id, &p, &idp, saml_response, relay_state).await;
    let (assertion_asserted, pending) = match r {
        Ok(x) => x,
        Err(e) => {
            failed(id, &p, browser, &e).await;
            return Err(e);
        }
    };
    match pending {
        Some(request_id) => Ok(AcsOutcome::Continue { request_id }),
        None => {
            let provisioned =
                finish_provision(id, &p, &jit_settings, &assertion_asserted, browser).await?;
            Ok(AcsOutcome::Finished(Box::new(Finished {
                provisioned,
                method: "saml",
                auth: String::new(),
            })))
        }
    }
}

async fn acs_checked(
    fed: &Federation,
    id: &Identity,
    p: &IdentityProvider,
    idp: &IdpConfig,
    saml_response: &str,
    relay_state: Option<&str>,
) -> Result<(Asserted, Option<String>), FederationError> {
    let now = id.clock.now();
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    // RelayState names the pending request (SAML bindings §3.5.3: returned unchanged).
    let pending = match relay_state.filter(|r| !r.is_empty() && r.len() <= 80) {
        Some(r) => store::federation::get_request(&mut c, p.provider_id, r)
            .await
            .map_err(IdentityError::from)?,
        None => None,
    };
    drop(c);
    let expect = match &pending {
        Some(r) => Expect::InResponseTo(&r.request_id),
        None => Expect::Unsolicited,
    };
    let urls = fed.sp_urls(p.provider_id);
    let a = response::validate(saml_response, idp, &urls.config(fed), expect, now)?;
    // SAML core §8.3.8: a transient identifier is for one session only.
    if a.name_id_format.as_deref() == Some(TRANSIENT) {
        return Err(FederationError::TransientNameId);
    }
    let asserted = Asserted {
        subject: a.name_id.clone(),
        attributes: a.attributes.clone(),
        email_verified: None,
    };
    let skew = Duration::seconds(idp.clock_skew_secs.max(0));
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    // Assertion IDs are remembered until they expire: a replay fails (SAML profiles §4.1.4.5).
    store::federation::use_assertion(
        &mut tx,
        p.provider_id,
        &a.assertion_id,
        a.not_on_or_after + skew,
    )
    .await
    .map_err(|e| match e {
        StoreError::Conflict { .. } => FederationError::Replay,
        e => IdentityError::from(e).into(),
    })?;
    if let Some(r) = &pending {
        let result =
            serde_json::to_value(&asserted).map_err(|e| IdentityError::Internal(e.to_string()))?;
        // InResponseTo answers an outstanding request only once, before it expires.
        if !store::federation::assert_request(&mut tx, &r.request_id, &Json(result), now)
            .await
            .map_err(IdentityError::from)?
        {
            return Err(FederationError::Request(
                "the request was already answered or expired",
            ));
        }
    }
    tx.commit().await.map_err(IdentityError::from)?;
    Ok((asserted, pending.map(|r| r.request_id)))
}

/// Completes an SP-initiated SAML login in the browser that started it.
pub async fn complete(
    id: &Identity,
    request_id: &str,
    browser: &Browser,
) -> Result<Finished, FederationError> {
    let row = take(id, request_id, browser, true).await?;
    let (p, _, jit_settings) = enabled_provider(id, row.provider_id).await?;
    let asserted: Asserted = row
        .result
        .as_ref()
        .and_then(|r| serde_json::from_value(r.0.clone()).ok())
        .ok_or(FederationError::Request("no accepted assertion"))?;
    let provisioned = finish_provision(id, &p, &jit_settings, &asserted, browser).await?;
    Ok(Finished {
        provisioned,
        method: LoginMethod::of_provider(&p.kind).as_str(),
        auth: row.auth,
    })
}

/// Consumes the browser's pending request (once; before it expires).
async fn take(
    id: &Identity,
    request_id: &str,
    browser: &Browser,
    asserted: bool,
) -> Result<FederationRequest, FederationError> {
    let cookie = browser.cookie.as_deref().ok_or(FederationError::Request(
        "the browser sent no sign-in cookie",
    ))?;
    if request_id.is_empty() || request_id.len() > 200 {
        return Err(FederationError::Request("no request id"));
    }
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    store::federation::complete_request(
        &mut c,
        request_id,
        &hash_token(cookie),
        asserted,
        id.clock.now(),
    )
    .await
    .map_err(IdentityError::from)?
    .ok_or(FederationError::Request(
        "unknown, used, expired, or started in another browser",
    ))
}

/// The upstream OIDC redirect back (`code` and `state`, or `error`).
pub async fn oidc_callback(
    fed: &Federation,
    id: &Identity,
    provider_id: Uuid,
    params: &[(String, String)],
    browser: &Browser,
) -> Result<Finished, FederationError> {
    let field = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let state = field("state").unwrap_or("");
    let (p, protocol, jit_settings) = enabled_provider(id, provider_id).await?;
    let ProtocolConfig::Oidc(cfg) = protocol else {
        return Err(FederationError::UnknownProvider);
    };
    let r = async {
        let row = take(id, state, browser, false).await?;
        if row.provider_id != provider_id {
            return Err(FederationError::Request(
                "the request belongs to another provider",
            ));
        }
        // RFC 9207: an `iss` in the response (errors too) must be the provider's.
        super::oidc_upstream::check_response_iss(&cfg, field("iss"))?;
        if let Some(err) = field("error") {
            return Err(FederationError::Refused(err.chars().take(100).collect()));
        }
        let code = field("code").ok_or(FederationError::Refused("no code".into()))?;
        let verifier = row
            .pkce_verifier
            .as_deref()
            .map(|v| id.data_key.decrypt(v))
            .transpose()
            .map_err(|e| IdentityError::Internal(e.to_string()))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let secret = client_secret(id, &p)?;
        let identity = fed
            .upstream
            .finish(
                &cfg,
                secret.as_deref(),
                &fed.oidc_redirect_uri(provider_id),
                code,
                row.nonce.as_deref().unwrap_or(""),
                &verifier,
                id.clock.now(),
            )
            .await?;
        Ok((row, identity))
    }
    .await;
    let (row, identity) = match r {
        Ok(x) => x,
        Err(e) => {
            failed(id, &p, browser, &e).await;
            return Err(e);
        }
    };
    let email_verified = identity.claims.get("email_verified").and_then(|v| {
        v.as_bool()
            .or_else(|| v.as_str().map(|s| s.eq_ignore_ascii_case("true")))
    });
    let asserted = Asserted {
        subject: identity.subject.clone(),
        attributes: mapping::claims_as_attributes(&identity.claims),
        email_verified,
    };
    let provisioned = finish_provision(id, &p, &jit_settings, &asserted, browser).await?;
    Ok(Finished {
        provisioned,
        method: "oidc",
        auth: row.auth,
    })
}

fn client_secret(id: &Identity, p: &IdentityProvider) -> Result<Option<String>, IdentityError> {
    p.secret
        .as_deref()
        .map(|s| {
            id.data_key
                .decrypt(s)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| IdentityError::Internal(e.to_string()))
        })
        .transpose()
}

async fn finish_provision(
    id: &Identity,
    p: &IdentityProvider,
    settings: &JitSettings,
    asserted: &Asserted,
    browser: &Browser,
) -> Result<Provisioned, FederationError> {
    match jit::provision(id, p, settings, asserted, &browser.ctx).await {
        Ok(x) => Ok(x),
        Err(e) => {
            failed(id, p, browser, &e).await;
            Err(e)
        }
    }
}

/// Logs a refused login and records it (login attempt, metrics).
async fn failed(id: &Identity, p: &IdentityProvider, browser: &Browser, e: &FederationError) {
    if e.is_internal() {
        return;
    }
    tracing::warn!(provider_id = %p.provider_id, org_id = %p.org_id, error = %e,
        "federated login refused");
    if let Err(err) = jit::record_failure(id, p, &browser.ctx).await {
        tracing::error!(error = %err, "could not record a failed federated login");
    }
}

/// Deletes expired pending requests and remembered assertion IDs.
pub async fn purge_expired(id: &Identity) -> Result<u64, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::federation::purge_expired(&mut c, id.clock.now()).await?)
}

/// Logs a warning for every enabled SAML provider's certificate that expires within
/// [`providers::CERT_WARNING_DAYS`]; returns how many.
pub async fn warn_expiring_certificates(id: &Identity) -> Result<usize, IdentityError> {
    let mut c = id.db.conn().await?;
    let saml = store::federation::enabled_of_type(&mut c, "saml").await?;
    drop(c);
    let now = id.clock.now();
    let mut n = 0;
    for p in &saml {
        for w in providers::certificate_warnings(p, now) {
            tracing::warn!(provider_id = %p.provider_id, org_id = %p.org_id,
                certificate = %w.certificate, not_after = %w.not_after, days_left = w.days_left,
                "IdP signing certificate expires soon; add the new one to the provider");
            n += 1;
        }
    }
    Ok(n)
}

/// In the background: purges expired requests every `every`, and checks IdP certificates
/// at start and once a day.
pub fn spawn_purger(id: Identity, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let day = std::time::Duration::from_secs(86_400);
        let mut last_check: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            if last_check.is_none_or(|t| t.elapsed() >= day) {
                last_check = Some(tokio::time::Instant::now());
                if let Err(e) = warn_expiring_certificates(&id).await {
                    tracing::warn!(error = %e, "checking IdP certificates failed");
                }
            }
            if let Err(e) = purge_expired(&id).await {
                tracing::warn!(error = %e, "purging federation requests failed");
            }
        }
    })
}

/// Our SP metadata for a SAML provider (served whether or not it is enabled yet, so the
/// IdP side can be set up first).
pub async fn sp_metadata(
    fed: &Federation,
    id: &Identity,
    provider_id: Uuid,
) -> Result<String, FederationError> {
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let p = store::federation::get_provider(&mut c, provider_id)
        .await
        .map_err(IdentityError::from)?
        .filter(|p| p.kind == "saml")
        .ok_or(FederationError::UnknownProvider)?;
    let urls = fed.sp_urls(p.provider_id);
    Ok(crate::saml::metadata::sp_metadata(&urls.config(fed)))
}
