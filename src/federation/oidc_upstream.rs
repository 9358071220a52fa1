//! Lintel as a relying party of an organization's OpenID Provider: the authorization code
//! flow (OIDC Core 1.0 §3.1) with PKCE S256 (RFC 7636), provider discovery (OIDC Discovery
//! 1.0 §4), ID token validation (Core §3.1.3.7) and, when configured, userinfo (Core §5.3).
//!
//! Protocol only: pending requests, provisioning and HTTP endpoints live elsewhere. The
//! `openidconnect` crate builds the requests and verifies tokens; it talks HTTP through our
//! reqwest client (`Http`). Discovery documents and JWK Sets are cached per issuer.
//! Secrets (client secret, tokens, codes, the PKCE verifier) never appear in errors or logs.
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreIdToken, CoreIdTokenVerifier,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthType, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, DiscoveryError, HttpRequest, HttpResponse, IssuerUrl,
    JsonWebKeySet, LoginHint, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, SubjectIdentifier,
    TokenResponse, UserInfoClaims, UserInfoError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a discovery document (and its JWK Set) is used before it is fetched again.
pub const METADATA_TTL: chrono::Duration = chrono::Duration::hours(1);
/// An ID token with an unknown `kid` makes us fetch the JWK Set again at most this often per
/// issuer, so forged tokens cannot make us hammer the provider.
pub const JWKS_REFETCH_INTERVAL: chrono::Duration = chrono::Duration::seconds(60);
/// Allowed clock difference with the provider (for `exp` and `iat`).
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);
/// An ID token issued longer ago than this is refused (Core §3.1.3.7 step 10: the range is the
/// client's choice; a code-flow token is minted moments before we receive it).
pub const MAX_ID_TOKEN_AGE: chrono::Duration = chrono::Duration::minutes(10);
/// The largest response body read from a provider.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Random bytes in `state` and `nonce` (256 bits; Core §15.5.2 asks for enough entropy).
const RANDOM_BYTES: u32 = 32;

/// Claims that identify the token rather than the user: the userinfo response never
/// overrides them (Core §5.3.2).
const TOKEN_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "azp",
    "auth_time",
    "acr",
    "amr",
    "at_hash",
    "c_hash",
    "sid",
];

/// The one error type of the upstream OIDC client. Messages never hold secrets or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The discovery document or JWK Set is missing, malformed or for another issuer
    /// (Discovery §4.3).
    #[error("discovery: {0}")]
    Discovery(String),
    /// The provider configuration (or a value passed in) is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The token endpoint refused the code (RFC 6749 §5.2 `error`), or answered with something
    /// that is not a token response (`error` = `invalid_response`).
    #[error("token endpoint: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenEndpoint {
        error: String,
        description: Option<String>,
    },
    /// The ID token failed a check of Core §3.1.3.7 (signature, alg, iss, aud, azp, exp, iat,
    /// nonce) or is missing.
    #[error("id token: {0}")]
    IdToken(String),
    /// The userinfo response failed (Core §5.3.2, including a `sub` that differs).
    #[error("userinfo: {0}")]
    Userinfo(String),
    /// The provider could not be reached or answered unreadably at the transport level.
    #[error("http: {0}")]
    Http(String),
}

impl UpstreamError {
    /// A short, stable name for logs, metrics and the error page.
    pub fn category(&self) -> &'static str {
        match self {
            UpstreamError::Discovery(_) => "discovery",
            UpstreamError::Config(_) => "config",
            UpstreamError::TokenEndpoint { .. } => "token_endpoint",
            UpstreamError::IdToken(_) => "id_token",
            UpstreamError::Userinfo(_) => "userinfo",
            UpstreamError::Http(_) => "http",
        }
    }
}

/// How we authenticate at the provider's token endpoint (OIDC Core §9).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    /// HTTP Basic with the url-encoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: `client_id` in the body, no secret (PKCE still applies).
    None,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

/// One upstream OpenID Provider of an organization (`identity_providers.config` for type
/// `oidc`; the client secret is stored apart, encrypted).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// Discovery at `{issuer}/.well-known/openid-configuration`; must equal the document's
    /// `issuer` and every ID token's `iss` exactly.
    pub issuer: String,
    pub client_id: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Also fetch userinfo and merge its claims (its `sub` must match, Core §5.3.2).
    #[serde(default)]
    pub use_userinfo: bool,
    #[serde(default)]
    pub token_endpoint_auth: TokenEndpointAuth,
}

impl UpstreamConfig {
    /// A configuration with the default scopes, no userinfo, `client_secret_basic`.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        UpstreamConfig {
            issuer: issuer.into(),
            client_id: client_id.into(),
            scopes: default_scopes(),
            use_userinfo: false,
            token_endpoint_auth: TokenEndpointAuth::default(),
        }
    }

    /// Checks what can be checked without asking the provider.
    pub fn validate(&self) -> Result<(), UpstreamError> {
        let bad = |m: String| Err(UpstreamError::Config(m));
        // Discovery §2 / RFC 8414 §2: https, no query or fragment. Plain http only on the
        // loopback interface (development and tests).
        let url = match url::Url::parse(&self.issuer) {
            Ok(u) => u,
            Err(e) => return bad(format!("issuer is not a URL: {e}")),
        };
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return bad("issuer must be an https URL".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return bad("issuer must have no query or fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return bad("issuer must not contain credentials".into());
        }
        // RFC 6749 Appendix A.1: VSCHAR.
        if self.client_id.is_empty() || !self.client_id.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return bad("client_id must be non-empty printable ASCII".into());
        }
        // RFC 6749 §3.3: scope-token = 1*NQCHAR; Core §3.1.2.1: `openid` is required.
        let nqchar = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
        for (i, s) in self.scopes.iter().enumerate() {
            if s.is_empty() || !s.bytes().all(nqchar) {
                return bad(format!("scope {s:?} is not a valid scope token"));
            }
            if self.scopes[..i].contains(s) {
                return bad(format!("scope {s:?} is listed twice"));
            }
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return bad("scopes must include openid".into());
        }
        Ok(())
    }
}

/// What `start` hands back: the URL to send the browser to, and the values to keep with the
/// pending request (bound to this browser) until the callback.
#[derive(Clone)]
pub struct Started {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A verified upstream login.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamIdentity {
    /// The provider's issuer (as configured and discovered).
    pub issuer: String,
    /// The `sub` claim: with `issuer`, the stable key of the upstream account.
    pub subject: String,
    /// The ID token's claims, with the userinfo claims merged in when configured.
    pub claims: Map<String, Value>,
}

impl UpstreamIdentity {
    /// The `email` claim, when it is a string.
    pub fn email(&self) -> Option<&str> {
        self.claims.get("email").and_then(Value::as_str)
    }

    /// Whether the provider asserts the email verified (`email_verified`, Core §5.1; a
    /// string "true" is accepted as some providers send it).
    pub fn email_verified(&self) -> bool {
        match self.claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }
}

/// Every claim beyond the standard ones (for userinfo responses).
#[derive(Clone, Debug, Deserialize, Serialize)]
struct OtherClaims {
    #[serde(flatten)]
    rest: Map<String, Value>,
}
impl AdditionalClaims for OtherClaims {}

/// Our reqwest client as the `openidconnect` HTTP client: no redirects (an IdP that
/// redirects its endpoints is refused rather than followed), a timeout, a body size limit.
#[derive(Clone)]
struct Http(reqwest::Client);

/// A transport failure of [`Http`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl Http {
    fn new(timeout: Duration) -> Result<Self, UpstreamError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lintel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(Http)
            .map_err(|e| UpstreamError::Http(format!("HTTP client: {e}")))
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|e| HttpError(format!("bad request: {e}")))?;
        let mut resp = self
            .0
            .execute(request)
            .await
            .map_err(|e| HttpError(e.to_string()))?;
        let mut builder = openidconnect::http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            builder = builder.header(k, v);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError(e.to_string()))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(HttpError(format!(
                    "response from {} is larger than {MAX_RESPONSE_BYTES} bytes",
                    resp.url()
                )));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| HttpError(format!("bad response: {e}")))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// A provider as last discovered.
struct Cached {
    metadata: Arc<CoreProviderMetadata>,
    fetched_at: DateTime<Utc>,
    /// When an unknown `kid` last made us fetch the JWK Set again.
    jwks_refetched_at: Option<DateTime<Utc>>,
}

/// The upstream OIDC client: one per process, shared by every organization's providers.
pub struct Upstream {
    http: Http,
    cache: Mutex<HashMap<String, Cached>>,
    /// One discovery at a time per issuer (the others wait and use its result).
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn discovery_error(e: DiscoveryError<HttpError>) -> UpstreamError {
    match e {
        DiscoveryError::Request(e) => UpstreamError::Http(e.0),
        DiscoveryError::Response(status, _, msg) => {
            UpstreamError::Discovery(format!("HTTP {status}: {msg}"))
        }
        DiscoveryError::Parse(e) => UpstreamError::Discovery(format!("unreadable document: {e}")),
        DiscoveryError::Validation(m) => UpstreamError::Discovery(m),
        other => UpstreamError::Discovery(other.to_string()),
    }
}

fn token_error(
    e: RequestTokenError<
        HttpError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> UpstreamError {
    match e {
        RequestTokenError::ServerResponse(r) => UpstreamError::TokenEndpoint {
            error: r.error().to_string(),
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(e) => UpstreamError::Http(e.0),
        // The body may hold tokens: only the failing path is reported.
        RequestTokenError::Parse(e, _) => UpstreamError::TokenEndpoint {
            error: "invalid_response".into(),
            description: Some(format!("unreadable token response at `{}`", e.path())),
        },
        RequestTokenError::Other(m) => UpstreamError::TokenEndpoint {
            error: "invalid_response".into(),
            description: Some(m),
        },
    }
}

fn userinfo_error(e: UserInfoError<HttpError>) -> UpstreamError {
    match e {
        UserInfoError::Request(e) => UpstreamError::Http(e.0),
        UserInfoError::Response(status, _, msg) => {
            UpstreamError::Userinfo(format!("HTTP {status}: {msg}"))
        }
        UserInfoError::Parse(e) => {
            UpstreamError::Userinfo(format!("unreadable response at `{}`", e.path()))
        }
        UserInfoError::ClaimsVerification(e) => UpstreamError::Userinfo(e.to_string()),
        other => UpstreamError::Userinfo(other.to_string()),
    }
}

/// Signature algorithms we accept: asymmetric ones the provider advertises (Core §3.1.3.7
/// step 7; never `none`, never HMAC with the client secret).
pub fn allowed_algs(advertised: &[CoreJwsSigningAlgorithm]) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    const ASYMMETRIC: &[CoreJwsSigningAlgorithm] = &[
        A::RsaSsaPkcs1V15Sha256,
        A::RsaSsaPkcs1V15Sha384,
        A::RsaSsaPkcs1V15Sha512,
        A::RsaSsaPssSha256,
        A::RsaSsaPssSha384,
        A::RsaSsaPssSha512,
        A::EcdsaP256Sha256,
        A::EcdsaP384Sha384,
        A::EdDsa,
    ];
    advertised
        .iter()
        .filter(|a| ASYMMETRIC.contains(a))
        .cloned()
        .collect()
}

/// Core §3.1.3.7 step 10: `iat` neither in the future (beyond the skew) nor too old.
pub fn check_iat(iat: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    if iat > now + CLOCK_SKEW {
        return Err(format!("issued in the future ({iat}, now {now})"));
    }
    if iat < now - MAX_ID_TOKEN_AGE - CLOCK_SKEW {
        return Err(format!("issued too long ago ({iat}, now {now})"));
    }
    Ok(())
}

/// The checks of Core §3.1.3.7 the `openidconnect` verifier leaves to us, on the verified
/// claims: a non-empty `sub` (§2), and `azp` (steps 4–5): required and equal to our client
/// id when `aud` has several values, equal to it whenever present.
pub fn check_claims(claims: &Map<String, Value>, client_id: &str) -> Result<(), UpstreamError> {
    let err = |m: &str| Err(UpstreamError::IdToken(m.into()));
    match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => {}
        _ => return err("no sub claim"),
    }
    let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(_) => err("azp is not our client id"),
        None if several => err("several audiences and no azp"),
        None => Ok(()),
    }
}

/// Merges userinfo claims into the ID token's (Core §5.3.2): the `sub` must be the same;
/// userinfo values win for user attributes, never for the token's own claims.
pub fn merge_userinfo(
    mut id_claims: Map<String, Value>,
    userinfo: Map<String, Value>,
) -> Result<Map<String, Value>, UpstreamError> {
    let sub = id_claims.get("sub").and_then(Value::as_str);
    if sub.is_none() || userinfo.get("sub").and_then(Value::as_str) != sub {
        return Err(UpstreamError::Userinfo(
            "sub differs from the ID token's".into(),
        ));
    }
    for (k, v) in userinfo {
        if !TOKEN_CLAIMS.contains(&k.as_str()) && !v.is_null() {
            id_claims.insert(k, v);
        }
    }
    Ok(id_claims)
}

/// RFC 9207 §2.4: an `iss` parameter on the authorization response must be the issuer we sent
/// the user to (defeats mix-up between an organization's providers).
pub fn check_response_iss(cfg: &UpstreamConfig, iss: Option<&str>) -> Result<(), UpstreamError> {
    match iss {
        Some(i) if i != cfg.issuer => Err(UpstreamError::IdToken(format!(
            "authorization response iss {i:?} is not the configured issuer"
        ))),
        _ => Ok(()),
    }
}

/// The payload of a compact JWS (already verified by the caller) as a JSON object.
fn payload(jwt: &str) -> Result<Map<String, Value>, UpstreamError> {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| UpstreamError::IdToken("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| UpstreamError::IdToken("payload is not a JSON object".into()))
}

/// The outcome of one verification attempt.
enum Verified {
    Ok(Map<String, Value>),
    UnknownKey,
}

impl Upstream {
    /// A client whose every HTTP exchange with a provider gives up after `http_timeout`.
    pub fn new(http_timeout: Duration) -> Result<Self, UpstreamError> {
        Ok(Upstream {
            http: Http::new(http_timeout)?,
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, issuer: &str, now: DateTime<Utc>) -> Option<Arc<CoreProviderMetadata>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(issuer)
            .filter(|c| now.signed_duration_since(c.fetched_at) < METADATA_TTL)
            .map(|c| Arc::clone(&c.metadata))
    }

    /// The provider's metadata and JWK Set, from the cache or discovered.
    async fn provider(
        &self,
        cfg: &UpstreamConfig,
        now: DateTime<Utc>,
    ) -> Result<Arc<CoreProviderMetadata>, UpstreamError> {
        if let Some(m) = self.cached(&cfg.issuer, now) {
            return Ok(m);
        }
        let lock = {
            let mut f = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(f.entry(cfg.issuer.clone()).or_default())
        };
        let _one = lock.lock().await;
        if let Some(m) = self.cached(&cfg.issuer, now) {
            return Ok(m);
        }
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| UpstreamError::Config(format!("issuer: {e}")))?;
        // Discovery §4.3: the crate refuses a document whose `issuer` is not exactly ours.
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(discovery_error)?;
        if allowed_algs(metadata.id_token_signing_alg_values_supported()).is_empty() {
            return Err(UpstreamError::Discovery(
                "no supported asymmetric ID token signing algorithm".into(),
            ));
        }
        let metadata = Arc::new(metadata);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            cfg.issuer.clone(),
            Cached {
                metadata: Arc::clone(&metadata),
                fetched_at: now,
                jwks_refetched_at: None,
            },
        );
        Ok(metadata)
    }

    /// Fetches the JWK Set again after an unknown `kid`, unless that was done for this
    /// issuer less than [`JWKS_REFETCH_INTERVAL`] ago. When suppressed: the cached metadata
    /// if another request has refreshed it since `metadata` was read, else `None`.
    async fn refetch_jwks(
        &self,
        cfg: &UpstreamConfig,
        metadata: &Arc<CoreProviderMetadata>,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<CoreProviderMetadata>>, UpstreamError> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let Some(c) = cache.get_mut(&cfg.issuer) else {
                return Ok(None);
            };
            if c.jwks_refetched_at
                .is_some_and(|t| now.signed_duration_since(t) < JWKS_REFETCH_INTERVAL)
            {
                let newer = !Arc::ptr_eq(&c.metadata, metadata);
                return Ok(newer.then(|| Arc::clone(&c.metadata)));
            }
            // Claimed before fetching, so concurrent requests do not fetch too.
            c.jwks_refetched_at = Some(now);
        }
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(discovery_error)?;
        let fresh = Arc::new((**metadata).clone().set_jwks(jwks));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get_mut(&cfg.issuer) {
            c.metadata = Arc::clone(&fresh);
        }
        Ok(Some(fresh))
    }

    /// Step 1 of the code flow (Core §3.1.2.1): the authorization URL with fresh `state`,
    /// `nonce` and PKCE S256 challenge. `login_hint` (e.g. the email typed on our login page)
    /// is passed on when given.
    pub async fn start(
        &self,
        cfg: &UpstreamConfig,
        redirect_uri: &str,
        login_hint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Started, UpstreamError> {
        cfg.validate()?;
        let metadata = self.provider(cfg, now).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(cfg.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect_url(redirect_uri)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                || CsrfToken::new_random_len(RANDOM_BYTES),
                || Nonce::new_random_len(RANDOM_BYTES),
            )
            .set_pkce_challenge(challenge);
        // The crate adds `openid` itself.
        for s in cfg.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(s.clone()));
        }
        if let Some(hint) = login_hint.filter(|h| !h.is_empty()) {
            request = request.set_login_hint(LoginHint::new(hint.to_string()));
        }
        let (url, state, nonce) = request.url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Step 2 (Core §3.1.3): redeems `code` at the token endpoint with the PKCE verifier,
    /// validates the ID token against `nonce` and `now`, fetches userinfo when configured.
    /// The caller has already matched `state` to the pending request of this browser.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        cfg: &UpstreamConfig,
        client_secret: Option<&str>,
        redirect_uri: &str,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
        now: DateTime<Utc>,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        cfg.validate()?;
        let secret = match (cfg.token_endpoint_auth, client_secret) {
            (TokenEndpointAuth::None, _) => None,
            (_, Some(s)) if !s.is_empty() => Some(ClientSecret::new(s.to_string())),
            _ => {
                return Err(UpstreamError::Config(
                    "the provider needs a client secret".into(),
                ));
            }
        };
        let auth_type = match cfg.token_endpoint_auth {
            TokenEndpointAuth::ClientSecretBasic => AuthType::BasicAuth,
            _ => AuthType::RequestBody,
        };
        let metadata = self.provider(cfg, now).await?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(cfg.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect_url(redirect_uri)?)
        .set_auth_type(auth_type);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| UpstreamError::Discovery(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| UpstreamError::IdToken("the token response has no id_token".into()))?;
        let mut claims = self
            .verify_with(cfg, metadata, &id_token.to_string(), nonce, now)
            .await?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if cfg.use_userinfo {
            let request = client
                .user_info(
                    response.access_token().clone(),
                    Some(SubjectIdentifier::new(subject.clone())),
                )
                .map_err(|_| {
                    UpstreamError::Discovery("the provider has no userinfo_endpoint".into())
                })?;
            let info: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
                .request_async(&self.http)
                .await
                .map_err(userinfo_error)?;
            let info = match serde_json::to_value(&info) {
                Ok(Value::Object(m)) => m,
                _ => return Err(UpstreamError::Userinfo("not a JSON object".into())),
            };
            claims = merge_userinfo(claims, info)?;
        }
        Ok(UpstreamIdentity {
            issuer: cfg.issuer.clone(),
            subject,
            claims,
        })
    }

    /// Validates a compact ID token from `cfg`'s provider (Core §3.1.3.7) and returns its
    /// claims: what [`Upstream::finish`] does with the token endpoint's `id_token`.
    pub async fn verify_id_token(
        &self,
        cfg: &UpstreamConfig,
        id_token: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        cfg.validate()?;
        let metadata = self.provider(cfg, now).await?;
        self.verify_with(cfg, metadata, id_token, nonce, now).await
    }

    async fn verify_with(
        &self,
        cfg: &UpstreamConfig,
        metadata: Arc<CoreProviderMetadata>,
        id_token: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        if let Verified::Ok(c) = verify_once(cfg, &metadata, id_token, nonce, now)? {
            return Ok(c);
        }
        // Unknown `kid`: the provider may have rotated its keys.
        let Some(fresh) = self.refetch_jwks(cfg, &metadata, now).await? else {
            return Err(UpstreamError::IdToken(
                "no key of the provider's JWK Set matches the token".into(),
            ));
        };
        match verify_once(cfg, &fresh, id_token, nonce, now)? {
            Verified::Ok(c) => Ok(c),
            Verified::UnknownKey => Err(UpstreamError::IdToken(
                "no key of the provider's JWK Set matches the token".into(),
            )),
        }
    }
}

fn redirect_url(uri: &str) -> Result<RedirectUrl, UpstreamError> {
    RedirectUrl::new(uri.to_string())
        .map_err(|e| UpstreamError::Config(format!("redirect_uri: {e}")))
}

/// One verification of `id_token` against `metadata` (issuer and JWK Set) at `now`.
fn verify_once(
    cfg: &UpstreamConfig,
    metadata: &CoreProviderMetadata,
    id_token: &str,
    nonce: &str,
    now: DateTime<Utc>,
) -> Result<Verified, UpstreamError> {
    let token = CoreIdToken::from_str(id_token)
        .map_err(|_| UpstreamError::IdToken("not a well-formed signed JWT".into()))?;
    // The crate checks, in Core §3.1.3.7 order: iss == the discovered issuer (itself equal to
    // the configured one), aud contains our client id, alg allowed, signature by a JWK of the
    // provider, exp > now - skew, iat (our rule), nonce (compared as digests).
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(cfg.client_id.clone()),
        metadata.issuer().clone(),
        metadata.jwks().clone(),
    )
    .set_allowed_algs(allowed_algs(
        metadata.id_token_signing_alg_values_supported(),
    ))
    // Other audiences are acceptable only with `azp` = us, checked in `check_claims`.
    .set_other_audience_verifier_fn(|_| true)
    .set_time_fn(move || now - CLOCK_SKEW)
    .set_issue_time_verifier_fn(move |iat| check_iat(iat, now));
    let expected = Nonce::new(nonce.to_string());
    match token.claims(&verifier, &expected) {
        Ok(_) => {}
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => return Ok(Verified::UnknownKey),
        Err(ClaimsVerificationError::SignatureVerification(e)) => {
            return Err(UpstreamError::IdToken(format!("signature: {e}")));
        }
        Err(e) => return Err(UpstreamError::IdToken(e.to_string())),
    }
    let claims = payload(id_token)?;
    check_claims(&claims, &cfg.client_id)?;
    Ok(Verified::Ok(claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn cfg() -> UpstreamConfig {
        UpstreamConfig::new("https://idp.example.com", "lintel")
    }

    /// An ES256 provider: its metadata (with JWK Set) and a signer for its key `k1`.
    struct Op {
        metadata: CoreProviderMetadata,
        signer: Box<dyn josekit::jws::JwsSigner>,
    }

    const ISS: &str = "https://idp.example.com";

    fn op() -> Op {
        use josekit::jws::ES256;
        let pair = ES256.generate_key_pair().unwrap();
        let mut public = pair.to_jwk_public_key();
        public.set_key_id("k1");
        let metadata: CoreProviderMetadata = serde_json::from_value(json!({
            "issuer": ISS,
            "authorization_endpoint": "https://idp.example.com/authorize",
            "token_endpoint": "https://idp.example.com/token",
            "jwks_uri": "https://idp.example.com/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "HS256", "none"],
        }))
        .unwrap();
        let jwks = serde_json::from_value(json!({ "keys": [public.as_ref()] })).unwrap();
        Op {
            metadata: metadata.set_jwks(jwks),
            signer: Box::new(ES256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap()),
        }
    }

    fn claims_at(now: DateTime<Utc>) -> Map<String, Value> {
        obj(json!({
            "iss": ISS, "sub": "u1", "aud": "lintel", "nonce": "n1",
            "iat": now.timestamp(), "exp": (now + chrono::Duration::minutes(5)).timestamp(),
        }))
    }

    fn sign(
        signer: &dyn josekit::jws::JwsSigner,
        kid: &str,
        claims: &Map<String, Value>,
    ) -> String {
        let mut h = josekit::jws::JwsHeader::new();
        h.set_key_id(kid);
        h.set_token_type("JWT");
        let p = josekit::jwt::JwtPayload::from_map(claims.clone()).unwrap();
        josekit::jwt::encode_with_signer(&p, &h, signer).unwrap()
    }

    fn check(op: &Op, token: &str, now: DateTime<Utc>) -> Result<Verified, UpstreamError> {
        let mut c = cfg();
        c.issuer = ISS.into();
        verify_once(&c, &op.metadata, token, "n1", now)
    }

    fn verified(r: Result<Verified, UpstreamError>) -> Map<String, Value> {
        match r {
            Ok(Verified::Ok(c)) => c,
            Ok(Verified::UnknownKey) => panic!("unknown key"),
            Err(e) => panic!("{e}"),
        }
    }

    fn refused(r: Result<Verified, UpstreamError>) -> String {
        match r {
            Err(UpstreamError::IdToken(m)) => m,
            Err(e) => panic!("wrong category: {e}"),
            Ok(Verified::Ok(_)) => panic!("accepted"),
            Ok(Verified::UnknownKey) => panic!("unknown key"),
        }
    }

    #[test]
    fn id_token_signed_by_the_provider_is_accepted_with_all_claims() {
        let op = op();
        let now = t(0);
        let mut claims = claims_at(now);
        claims.insert("groups".into(), json!(["eng"]));
        let got = verified(check(&op, &sign(op.signer.as_ref(), "k1", &claims), now));
        assert_eq!(got, claims);
        // Several audiences are fine when azp names us.
        claims.insert("aud".into(), json!(["lintel", "api"]));
        claims.insert("azp".into(), json!("lintel"));
        verified(check(&op, &sign(op.signer.as_ref(), "k1", &claims), now));
    }

    #[test]
    fn id_token_rules_of_core_3_1_3_7() {
        let op = op();
        let now = t(0);
        let good = claims_at(now);
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c.insert(k.into(), v);
            sign(op.signer.as_ref(), "k1", &c)
        };
        assert!(
            refused(check(&op, &with("iss", json!("https://evil.example")), now))
                .contains("issuer")
        );
        assert!(refused(check(&op, &with("aud", json!("someone-else")), now)).contains("audience"));
        assert!(refused(check(&op, &with("aud", json!(["lintel", "api"])), now)).contains("azp"));
        assert!(refused(check(&op, &with("azp", json!("api")), now)).contains("azp"));
        assert!(refused(check(&op, &with("nonce", json!("n2")), now)).contains("nonce"));
        let mut no_nonce = good.clone();
        no_nonce.remove("nonce");
        assert!(
            refused(check(&op, &sign(op.signer.as_ref(), "k1", &no_nonce), now)).contains("nonce")
        );
        // exp: accepted up to the skew past it, refused after.
        let token = sign(op.signer.as_ref(), "k1", &good);
        let exp = now + chrono::Duration::minutes(5);
        verified(check(
            &op,
            &token,
            exp + CLOCK_SKEW - chrono::Duration::seconds(1),
        ));
        assert!(refused(check(&op, &token, exp + CLOCK_SKEW)).contains("expired"));
        // iat in the future.
        assert!(
            refused(check(
                &op,
                &with(
                    "iat",
                    json!((now + chrono::Duration::minutes(3)).timestamp())
                ),
                now
            ))
            .contains("future")
        );
    }

    #[test]
    fn forged_id_tokens_are_refused() {
        use base64::Engine;
        let op = op();
        let now = t(0);
        let token = sign(op.signer.as_ref(), "k1", &claims_at(now));
        // Tampered payload.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut c = claims_at(now);
        c.insert("sub".into(), json!("admin"));
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&c).unwrap());
        assert!(refused(check(&op, &parts.join("."), now)).contains("Signature was wrong"));
        // alg none, advertised or not.
        let mut h = josekit::jws::JwsHeader::new();
        h.set_key_id("k1");
        let p = josekit::jwt::JwtPayload::from_map(claims_at(now)).unwrap();
        let none = josekit::jwt::encode_unsecured(&p, &h).unwrap();
        assert!(refused(check(&op, &none, now)).contains("No signature"));
        // HS256 keyed with anything (the client secret is no key of ours).
        let hs = josekit::jws::HS256
            .signer_from_bytes(b"client-secret-0123456789abcdef-0123456789")
            .unwrap();
        assert!(refused(check(&op, &sign(&hs, "k1", &claims_at(now)), now)).contains("HS256"));
        // Another key under the provider's kid.
        let stranger = josekit::jws::ES256.generate_key_pair().unwrap();
        let stranger = josekit::jws::ES256
            .signer_from_jwk(&stranger.to_jwk_private_key())
            .unwrap();
        assert!(
            refused(check(&op, &sign(&stranger, "k1", &claims_at(now)), now))
                .contains("Signature was wrong")
        );
        // Not a JWT.
        assert!(refused(check(&op, "a.b", now)).contains("well-formed"));
    }

    #[test]
    fn an_unknown_kid_is_told_apart() {
        let op = op();
        let now = t(0);
        let stranger = josekit::jws::ES256.generate_key_pair().unwrap();
        let stranger = josekit::jws::ES256
            .signer_from_jwk(&stranger.to_jwk_private_key())
            .unwrap();
        let r = check(&op, &sign(&stranger, "k2", &claims_at(now)), now);
        assert!(matches!(r, Ok(Verified::UnknownKey)));
    }

    #[test]
    fn the_client_and_its_futures_can_cross_threads() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<Upstream>();
        let up = Upstream::new(Duration::from_secs(1)).unwrap();
        let c = cfg();
        send(&up.start(&c, "https://rp/cb", None, t(0)));
        send(&up.finish(&c, Some("s"), "https://rp/cb", "c", "n", "v", t(0)));
        send(&up.verify_id_token(&c, "a.b.c", "n", t(0)));
    }

    #[test]
    fn config_defaults_from_json() {
        let c: UpstreamConfig =
            serde_json::from_value(json!({"issuer": "https://idp.example.com", "client_id": "x"}))
                .unwrap();
        assert_eq!(c.scopes, ["openid", "email", "profile"]);
        assert!(!c.use_userinfo);
        assert_eq!(c.token_endpoint_auth, TokenEndpointAuth::ClientSecretBasic);
        let c: UpstreamConfig = serde_json::from_value(json!({
            "issuer": "https://idp.example.com", "client_id": "x",
            "token_endpoint_auth": "client_secret_post", "use_userinfo": true
        }))
        .unwrap();
        assert_eq!(c.token_endpoint_auth, TokenEndpointAuth::ClientSecretPost);
        assert!(c.use_userinfo);
        assert!(
            serde_json::from_value::<UpstreamConfig>(json!({
                "issuer": "https://i", "client_id": "x", "token_endpoint_auth": "private_key_jwt"
            }))
            .is_err()
        );
    }

    #[test]
    fn config_validation() {
        assert_eq!(cfg().validate(), Ok(()));
        let with = |f: &dyn Fn(&mut UpstreamConfig)| {
            let mut c = cfg();
            f(&mut c);
            c.validate()
        };
        for issuer in [
            "http://idp.example.com",
            "https://idp.example.com/?tenant=1",
            "https://idp.example.com/#x",
            "https://user:pw@idp.example.com",
            "idp.example.com",
            "ftp://idp.example.com",
        ] {
            let r = with(&|c| c.issuer = issuer.into());
            assert!(
                matches!(r, Err(UpstreamError::Config(_))),
                "{issuer}: {r:?}"
            );
        }
        for issuer in [
            "http://127.0.0.1:8080",
            "http://localhost:9000/realms/x",
            "http://[::1]:1",
        ] {
            assert_eq!(with(&|c| c.issuer = issuer.into()), Ok(()), "{issuer}");
        }
        assert!(with(&|c| c.client_id = String::new()).is_err());
        assert!(with(&|c| c.client_id = "a\nb".into()).is_err());
        assert!(with(&|c| c.scopes = vec!["email".into()]).is_err());
        assert!(with(&|c| c.scopes = vec!["openid".into(), "a b".into()]).is_err());
        assert!(with(&|c| c.scopes = vec!["openid".into(), "x\"".into()]).is_err());
        assert!(with(&|c| c.scopes = vec!["openid".into(), String::new()]).is_err());
        assert!(with(&|c| c.scopes = vec!["openid".into(), "openid".into()]).is_err());
        assert_eq!(with(&|c| c.scopes = vec!["openid".into()]), Ok(()));
    }

    #[test]
    fn iat_window() {
        let now = t(0);
        assert!(check_iat(now, now).is_ok());
        assert!(check_iat(now + CLOCK_SKEW, now).is_ok());
        assert!(check_iat(now + CLOCK_SKEW + chrono::Duration::seconds(1), now).is_err());
        assert!(check_iat(now - MAX_ID_TOKEN_AGE, now).is_ok());
        let too_old = now - MAX_ID_TOKEN_AGE - CLOCK_SKEW - chrono::Duration::seconds(1);
        assert!(check_iat(too_old, now).is_err());
    }

    #[test]
    fn azp_and_sub_rules() {
        let ok = |v| check_claims(&obj(v), "c1");
        assert!(ok(json!({"sub": "u", "aud": "c1"})).is_ok());
        assert!(ok(json!({"sub": "u", "aud": ["c1"]})).is_ok());
        assert!(ok(json!({"sub": "u", "aud": ["c1", "api"], "azp": "c1"})).is_ok());
        assert!(ok(json!({"sub": "u", "aud": "c1", "azp": "c1"})).is_ok());
        for bad in [
            json!({"sub": "u", "aud": ["c1", "api"]}),
            json!({"sub": "u", "aud": ["c1", "api"], "azp": "api"}),
            json!({"sub": "u", "aud": "c1", "azp": "other"}),
            json!({"sub": "u", "aud": "c1", "azp": 1}),
            json!({"aud": "c1"}),
            json!({"sub": "", "aud": "c1"}),
            json!({"sub": 7, "aud": "c1"}),
        ] {
            assert!(
                matches!(ok(bad.clone()), Err(UpstreamError::IdToken(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn userinfo_merge_keeps_token_claims_and_needs_the_same_sub() {
        let id = obj(
            json!({"iss": "https://i", "sub": "u1", "aud": "c", "email": "old@x", "nonce": "n"}),
        );
        let merged = merge_userinfo(
            id.clone(),
            obj(json!({"sub": "u1", "email": "new@x", "iss": "https://evil", "groups": ["a"], "nonce": "m", "name": null})),
        )
        .unwrap();
        assert_eq!(merged["email"], "new@x");
        assert_eq!(merged["groups"], json!(["a"]));
        assert_eq!(merged["iss"], "https://i");
        assert_eq!(merged["nonce"], "n");
        assert!(!merged.contains_key("name"));
        let e = merge_userinfo(id.clone(), obj(json!({"sub": "u2", "email": "x"}))).unwrap_err();
        assert_eq!(e.category(), "userinfo");
        assert!(merge_userinfo(id, obj(json!({"email": "x"}))).is_err());
    }

    #[test]
    fn only_asymmetric_advertised_algs_are_allowed() {
        use CoreJwsSigningAlgorithm as A;
        assert_eq!(
            allowed_algs(&[
                A::None,
                A::HmacSha256,
                A::EcdsaP256Sha256,
                A::RsaSsaPkcs1V15Sha256
            ]),
            vec![A::EcdsaP256Sha256, A::RsaSsaPkcs1V15Sha256]
        );
        assert!(allowed_algs(&[A::None, A::HmacSha512]).is_empty());
    }

    #[test]
    fn response_iss_must_be_ours_when_present() {
        assert!(check_response_iss(&cfg(), None).is_ok());
        assert!(check_response_iss(&cfg(), Some("https://idp.example.com")).is_ok());
        assert!(check_response_iss(&cfg(), Some("https://idp.example.com/")).is_err());
        assert!(check_response_iss(&cfg(), Some("https://evil.example")).is_err());
    }

    #[test]
    fn payload_is_read_as_an_object() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!("{}.{}.sig", enc("{}"), enc(r#"{"sub":"u","x":[1]}"#));
        assert_eq!(payload(&jwt).unwrap(), obj(json!({"sub": "u", "x": [1]})));
        assert!(payload(&format!("h.{}.s", enc("[1]"))).is_err());
        assert!(payload("h.!!.s").is_err());
        assert!(payload("nodots").is_err());
    }

    #[test]
    fn started_debug_hides_secrets() {
        let s = Started {
            url: "https://idp/authorize".into(),
            state: "STATE".into(),
            nonce: "NONCE".into(),
            pkce_verifier: "VERIFIER".into(),
        };
        let d = format!("{s:?}");
        assert!(d.contains("https://idp/authorize"));
        assert!(!d.contains("STATE") && !d.contains("NONCE") && !d.contains("VERIFIER"));
    }

    #[test]
    fn categories_are_stable() {
        let all = [
            (UpstreamError::Discovery(String::new()), "discovery"),
            (UpstreamError::Config(String::new()), "config"),
            (
                UpstreamError::TokenEndpoint {
                    error: "invalid_grant".into(),
                    description: None,
                },
                "token_endpoint",
            ),
            (UpstreamError::IdToken(String::new()), "id_token"),
            (UpstreamError::Userinfo(String::new()), "userinfo"),
            (UpstreamError::Http(String::new()), "http"),
        ];
        for (e, c) in all {
            assert_eq!(e.category(), c);
        }
    }

    #[test]
    fn email_helpers() {
        let mut id = UpstreamIdentity {
            issuer: "https://i".into(),
            subject: "u".into(),
            claims: obj(json!({"email": "a@b.c", "email_verified": "TRUE"})),
        };
        assert_eq!(id.email(), Some("a@b.c"));
        assert!(id.email_verified());
        id.claims.insert("email_verified".into(), json!(false));
        assert!(!id.email_verified());
        id.claims.remove("email_verified");
        assert!(!id.email_verified());
    }
}
