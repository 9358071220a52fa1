//! Signing and verifying JWTs with the keyring (josekit).
use super::OidcError;
use super::keys::{ActiveKey, Keyring};
use crate::identity::Identity;
use josekit::jws::JwsHeader;
use josekit::jwt::JwtPayload;
use serde_json::{Map, Value};

/// `typ` of RFC 9068 access tokens.
pub const TYP_ACCESS_TOKEN: &str = "at+jwt";
/// `typ` of ID tokens.
pub const TYP_JWT: &str = "JWT";

fn server(e: impl std::fmt::Display) -> OidcError {
    OidcError::ServerError(e.to_string())
}

/// Signs `claims` as a compact JWS with the key's `kid` and the given `typ`.
pub fn sign(key: &ActiveKey, typ: &str, claims: Map<String, Value>) -> Result<String, OidcError> {
    let mut header = JwsHeader::new();
    header.set_token_type(typ);
    header.set_key_id(&key.kid);
    let payload = JwtPayload::from_map(claims).map_err(server)?;
    josekit::jwt::encode_with_signer(&payload, &header, key.signer.as_ref()).map_err(server)
}

/// What a verified token said.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub typ: Option<String>,
}

/// Verifies a JWT's signature against a published key and its `iss`; with `check_exp`,
/// also that it has not expired. Anything wrong is `invalid_token`.
pub async fn verify(
    id: &Identity,
    keyring: &Keyring,
    token: &str,
    issuer: &str,
    check_exp: bool,
) -> Result<Verified, OidcError> {
    let bad = |why: &str| OidcError::invalid_token(why.to_string());
    if token.len() > 16 * 1024 || token.split('.').count() != 3 {
        return Err(bad("malformed token"));
    }
    let header = josekit::jwt::decode_header(token).map_err(|_| bad("malformed token"))?;
    let kid = header
        .claim("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("unknown key"))?
        .to_string();
    let typ = header
        .claim("typ")
        .and_then(Value::as_str)
        .map(str::to_string);
    let verifier = keyring
        .verifier(id, &kid)
        .await
        .map_err(OidcError::from)?
        .ok_or_else(|| bad("unknown key"))?;
    let (payload, _) = josekit::jwt::decode_with_verifier(token, verifier.as_ref())
        .map_err(|_| bad("bad signature"))?;
    let claims = payload.claims_set().clone();
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(bad("wrong issuer"));
    }
    if check_exp {
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("no expiry"))?;
        if id.clock.now().timestamp() >= exp {
            return Err(bad("the token has expired"));
        }
    }
    Ok(Verified { claims, typ })
}
