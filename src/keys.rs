//! The signing-key store: private keys as PEM files in `keys/` (mode 0600), one per key,
//! named `<alg>-<kid>.pem`; `kid` is the RFC 7638 JWK thumbprint of the public key.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jwk::KeyPair;
use josekit::jws::{ES256, EdDSA, RS256};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A signing key loaded from `keys/`.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: &'static str,
    /// Public JWK with `kid`, `alg` and `use` set.
    pub public_jwk: Jwk,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("key generation failed: {0}")]
    Generate(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Jwk) -> Result<String, KeyError> {
    let get = |k: &str| {
        jwk.parameter(k)
            .and_then(|v| v.as_str())
            .ok_or_else(|| KeyError::Generate(format!("JWK lacks `{k}`")))
    };
    let canonical = match jwk.key_type() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            get("crv")?,
            get("x")?,
            get("y")?
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            get("crv")?,
            get("x")?
        ),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, get("e")?, get("n")?),
        other => return Err(KeyError::Generate(format!("unsupported key type {other}"))),
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

fn public_jwk(pair: &impl KeyPair, alg: &str) -> Result<(String, Jwk), KeyError> {
    let mut jwk = pair.to_jwk_public_key();
    let kid = thumbprint(&jwk)?;
    jwk.set_key_id(&kid);
    jwk.set_algorithm(alg);
    jwk.set_key_use("sig");
    Ok((kid, jwk))
}

/// Loads every key in `dir`; when there is none, generates an ES256 key first.
/// Returns the keys and whether one was generated.
pub fn ensure(dir: &Path) -> Result<(Vec<SigningKey>, bool), KeyError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut keys = load(dir)?;
    let mut generated = false;
    if keys.is_empty() {
        keys.push(generate_es256(dir)?);
        generated = true;
    }
    Ok((keys, generated))
}

/// Loads the `*.pem` keys in `dir` (sorted by file name).
pub fn load(dir: &Path) -> Result<Vec<SigningKey>, KeyError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| file_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    paths.sort();
    let mut keys = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(alg) = ALGS
            .iter()
            .find(|(_, prefix)| name.starts_with(prefix))
            .map(|(a, _)| *a)
        else {
            return Err(file_err(
                &path,
                "unknown key file (expected es256-, rs256- or eddsa-<kid>.pem)",
            ));
        };
        let pem = std::fs::read(&path).map_err(|e| file_err(&path, e))?;
        let (kid, public_jwk) = match alg {
            "RS256" => public_jwk(
                &RS256
                    .key_pair_from_pem(&pem)
                    .map_err(|e| file_err(&path, e))?,
                alg,
            )?,
            "EdDSA" => public_jwk(
                &EdDSA
                    .key_pair_from_pem(&pem)
                    .map_err(|e| file_err(&path, e))?,
                alg,
            )?,
            _ => public_jwk(
                &ES256
                    .key_pair_from_pem(&pem)
                    .map_err(|e| file_err(&path, e))?,
                alg,
            )?,
        };
        keys.push(SigningKey {
            kid,
            alg,
            public_jwk,
            path,
        });
    }
    Ok(keys)
}

/// The signing algorithms and their key-file prefixes.
pub const ALGS: &[(&str, &str)] = &[
    ("ES256", "es256-"),
    ("RS256", "rs256-"),
    ("EdDSA", "eddsa-"),
];

/// Generates a key pair for `alg` (`ES256`, `RS256` with 2048-bit RSA, `EdDSA` with
/// Ed25519) and writes its private key with mode 0600.
pub fn generate(dir: &Path, alg: &str) -> Result<SigningKey, KeyError> {
    let g = |e: josekit::JoseError| KeyError::Generate(e.to_string());
    let (kid, public_jwk, pem, alg, prefix) = match alg {
        "ES256" => return generate_es256(dir),
        "RS256" => {
            let pair = RS256.generate_key_pair(2048).map_err(g)?;
            let (kid, jwk) = public_jwk(&pair, "RS256")?;
            (kid, jwk, pair.to_pem_private_key(), "RS256", "rs256-")
        }
        "EdDSA" => {
            let pair = EdDSA
                .generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)
                .map_err(g)?;
            let (kid, jwk) = public_jwk(&pair, "EdDSA")?;
            (kid, jwk, pair.to_pem_private_key(), "EdDSA", "eddsa-")
        }
        other => return Err(KeyError::Generate(format!("unsupported algorithm {other}"))),
    };
    let path = dir.join(format!("{prefix}{kid}.pem"));
    write_private(&path, &pem)?;
    Ok(SigningKey {
        kid,
        alg,
        public_jwk,
        path,
    })
}

/// Generates an ES256 key pair and writes its private key with mode 0600.
pub fn generate_es256(dir: &Path) -> Result<SigningKey, KeyError> {
    let pair = ES256
        .generate_key_pair()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let (kid, public_jwk) = public_jwk(&pair, "ES256")?;
    let path = dir.join(format!("es256-{kid}.pem"));
    write_private(&path, &pair.to_pem_private_key())?;
    Ok(SigningKey {
        kid,
        alg: "ES256",
        public_jwk,
        path,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| file_err(path, e))
}

/// A 256-bit key for encrypting secrets at rest (e.g. TOTP seeds), kept in
/// `keys/data-encryption.key` (mode 0600, generated when absent). Ciphertexts are compact
/// JWE (`dir`, `A256GCM`) with the key's id in `kid`, so a future rotation can tell them apart.
#[derive(Clone)]
pub struct DataKey {
    kid: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

pub const DATA_KEY_FILE: &str = "data-encryption.key";

impl DataKey {
    /// Loads `dir/data-encryption.key`, generating it first when absent.
    pub fn ensure(dir: &Path) -> Result<DataKey, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let path = dir.join(DATA_KEY_FILE);
        if !path.exists() {
            let bytes: [u8; 32] = rand::random();
            match write_private(&path, URL_SAFE_NO_PAD.encode(bytes).as_bytes()) {
                Ok(()) => tracing::info!(path = %path.display(), "generated data-encryption key"),
                // Another process created it first: use theirs.
                Err(_) if path.exists() => {}
                Err(e) => return Err(e),
            }
        }
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| file_err(&path, "not a base64url key"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| file_err(&path, "expected 32 bytes"))?;
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(bytes)[..8]);
        Ok(DataKey { kid, bytes })
    }

    /// Encrypts to a compact JWE string.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, KeyError> {
        let mut header = josekit::jwe::JweHeader::new();
        header.set_content_encryption("A256GCM");
        header.set_key_id(&self.kid);
        let encrypter = josekit::jwe::Dir
            .encrypter_from_bytes(self.bytes)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        josekit::jwe::serialize_compact(plaintext, &header, &encrypter)
            .map_err(|e| KeyError::Generate(e.to_string()))
    }

    /// Decrypts a string made by [`DataKey::encrypt`]; any tampering is an error.
    pub fn decrypt(&self, jwe: &str) -> Result<Vec<u8>, KeyError> {
        let decrypter = josekit::jwe::Dir
            .decrypter_from_bytes(self.bytes)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let (plaintext, header) = josekit::jwe::deserialize_compact(jwe, &decrypter)
            .map_err(|_| KeyError::Generate("cannot decrypt: wrong key or tampered data".into()))?;
        if header.key_id() != Some(self.kid.as_str()) {
            return Err(KeyError::Generate("encrypted with another data key".into()));
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let k = DataKey::ensure(dir.path()).unwrap();
        let again = DataKey::ensure(dir.path()).unwrap();
        let ct = k.encrypt(b"JBSWY3DPEHPK3PXP").unwrap();
        assert!(!ct.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(again.decrypt(&ct).unwrap(), b"JBSWY3DPEHPK3PXP");
        let mut parts: Vec<String> = ct.split('.').map(String::from).collect();
        let last = parts[3].pop().unwrap();
        parts[3].push(if last == 'A' { 'B' } else { 'A' });
        assert!(k.decrypt(&parts.join(".")).is_err());
        let other = DataKey::ensure(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.decrypt(&ct).is_err());
        // Not picked up as a signing key.
        assert_eq!(load(dir.path()).unwrap().len(), 0);
    }

    #[test]
    fn generates_once_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, generated) = ensure(dir.path()).unwrap();
        assert!(generated);
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k.public_jwk.key_id(), Some(k.kid.as_str()));
        assert!(
            k.public_jwk.parameter("d").is_none(),
            "public JWK must not carry d"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, generated) = ensure(dir.path()).unwrap();
        assert!(!generated);
        assert_eq!(again[0].kid, k.kid);
    }

    #[test]
    fn rsa_and_ed25519_keys_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = generate(dir.path(), "RS256").unwrap();
        let e = generate(dir.path(), "EdDSA").unwrap();
        assert!(generate(dir.path(), "HS256").is_err());
        let loaded = load(dir.path()).unwrap();
        let found: Vec<(&str, &str)> = loaded.iter().map(|k| (k.alg, k.kid.as_str())).collect();
        assert!(found.contains(&("RS256", r.kid.as_str())));
        assert!(found.contains(&("EdDSA", e.kid.as_str())));
        assert_eq!(e.public_jwk.key_type(), "OKP");
        assert!(e.public_jwk.parameter("d").is_none() && r.public_jwk.parameter("d").is_none());
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = Jwk::from_bytes(br#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn foreign_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("es256-bad.pem"), "not a key").unwrap();
        let e = ensure(dir.path()).unwrap_err().to_string();
        assert!(e.contains("es256-bad.pem"), "{e}");
    }
}
