//! ES256 signing (RFC 7518 §3.4) on OpenSSL's ECDSA over a SHA-256 digest.
//!
//! josekit's own signer sets up an EVP signing context (algorithm fetch, key export to the
//! provider) on every call, which cost as much as the signature; this one keeps the EC key
//! and signs the digest directly. Output is the same JWS signature: `R || S`, 32 bytes each.
use josekit::JoseError;
use josekit::jws::{ES256, JwsAlgorithm, JwsSigner};
use openssl::bn::BigNumRef;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};

#[derive(Debug, Clone)]
pub struct Es256Signer {
    key: EcKey<Private>,
}

fn key_err(e: impl Into<anyhow::Error>) -> JoseError {
    JoseError::InvalidKeyFormat(e.into())
}

impl Es256Signer {
    /// A P-256 private key in PEM (PKCS#8 or SEC 1).
    pub fn from_pem(pem: &[u8]) -> Result<Self, JoseError> {
        let key = PKey::private_key_from_pem(pem)
            .map_err(key_err)?
            .ec_key()
            .map_err(key_err)?;
        if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(key_err(anyhow::anyhow!("ES256 needs a P-256 key")));
        }
        key.check_key().map_err(key_err)?;
        Ok(Es256Signer { key })
    }
}

fn push_padded(out: &mut Vec<u8>, n: &BigNumRef) -> Result<(), JoseError> {
    let bytes = n
        .to_vec_padded(32)
        .map_err(|e| JoseError::InvalidSignature(e.into()))?;
    out.extend_from_slice(&bytes);
    Ok(())
}

impl JwsSigner for Es256Signer {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        None
    }

    fn signature_len(&self) -> usize {
        64
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        let digest = openssl::sha::sha256(message);
        let sig = EcdsaSig::sign(&digest, &self.key)
            .map_err(|e| JoseError::InvalidSignature(e.into()))?;
        let mut out = Vec::with_capacity(64);
        push_padded(&mut out, sig.r())?;
        push_padded(&mut out, sig.s())?;
        Ok(out)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jws::{JwsHeader, JwsVerifier};
    use josekit::jwt::{self, JwtPayload};

    fn pem_pair() -> (Vec<u8>, Vec<u8>) {
        let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        (
            key.private_key_to_pem_pkcs8().unwrap(),
            key.public_key_to_pem().unwrap(),
        )
    }

    #[test]
    fn signatures_verify_with_josekit_and_fail_when_altered() {
        let (private, public) = pem_pair();
        let signer = Es256Signer::from_pem(&private).unwrap();
        let verifier = ES256.verifier_from_pem(&public).unwrap();
        let mut header = JwsHeader::new();
        header.set_key_id("k1");
        let mut payload = JwtPayload::new();
        payload.set_subject("alice");
        for _ in 0..20 {
            let token = jwt::encode_with_signer(&payload, &header, &signer).unwrap();
            let (claims, h) = jwt::decode_with_verifier(&token, &verifier).unwrap();
            assert_eq!(claims.subject(), Some("alice"));
            assert_eq!(h.algorithm(), Some("ES256"));
            let msg = token.rsplit_once('.').unwrap().0;
            let sig = signer.sign(msg.as_bytes()).unwrap();
            assert_eq!(sig.len(), 64);
            let mut bad = sig.clone();
            bad[63] ^= 1;
            assert!(verifier.verify(msg.as_bytes(), &bad).is_err());
            assert!(verifier.verify(msg.as_bytes(), &sig).is_ok());
        }
        // A verifier for another key refuses it.
        let (_, other) = pem_pair();
        let token = jwt::encode_with_signer(&payload, &header, &signer).unwrap();
        let other = ES256.verifier_from_pem(&other).unwrap();
        assert!(jwt::decode_with_verifier(&token, &other).is_err());
    }

    #[test]
    fn other_curves_are_refused() {
        let group = openssl::ec::EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        assert!(Es256Signer::from_pem(&pem).is_err());
    }
}
