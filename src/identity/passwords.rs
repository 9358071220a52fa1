//! Password hashing: argon2id on the blocking pool, at most one hash per core at a time so
//! logins cannot starve other requests.
use crate::config::PasswordConfig;
use crate::config::Secret;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Longest password accepted, in bytes (argon2 input is unbounded; the cap bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 256;

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    min_length: usize,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the current parameters, verified for unknown
    /// emails so a login's timing does not tell whether the account exists.
    dummy: Arc<tokio::sync::OnceCell<String>>,
    /// Verifications performed (real and dummy), for tests of uniform work.
    verifications: Arc<std::sync::atomic::AtomicU64>,
}

/// The kind of a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$…` (or argon2i/argon2d) PHC string.
    Argon2,
    /// `$2a$`/`$2b$`/`$2y$` bcrypt, from an imported legacy system.
    Bcrypt,
}

/// Recognizes a stored hash; `None` for anything Lintel cannot verify.
pub fn hash_kind(phc: &str) -> Option<HashKind> {
    if ["$argon2id$", "$argon2i$", "$argon2d$"]
        .iter()
        .any(|p| phc.starts_with(p))
    {
        PasswordHash::new(phc).ok().map(|_| HashKind::Argon2)
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| phc.starts_with(p)) {
        // $2b$NN$ + 53 characters of salt and hash.
        (phc.len() == 60
            && phc
                .as_bytes()
                .get(4..6)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit)))
        .then_some(HashKind::Bcrypt)
    } else {
        None
    }
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("min_length", &self.min_length)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {0} characters")]
    TooShort(usize),
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Policy failures are input errors on `password`; a hashing failure is internal.
impl From<PasswordError> for super::IdentityError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Hash(m) => super::IdentityError::Internal(m),
            other => super::IdentityError::invalid("password", other.to_string()),
        }
    }
}

impl Passwords {
    pub fn new(cfg: &PasswordConfig) -> Result<Self, PasswordError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            params,
            min_length: cfg.min_length,
            permits: Arc::new(Semaphore::new(cores)),
            dummy: Arc::new(tokio::sync::OnceCell::new()),
            verifications: Arc::default(),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Checks the policy: at least `min_length` characters, at most 256 bytes.
    pub fn check_policy(&self, password: &str) -> Result<(), PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        if password.chars().count() < self.min_length {
            return Err(PasswordError::TooShort(self.min_length));
        }
        Ok(())
    }

    /// Checks the policy, then hashes to a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &Secret<String>) -> Result<String, PasswordError> {
        self.check_policy(password.expose())?;
        let pw = password.clone();
        let argon2 = self.argon2();
        self.blocking(move || {
            argon2
                .hash_password(pw.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
        .await
    }

    /// Verifies against a stored hash (argon2 PHC, or imported bcrypt), in constant time
    /// (each algorithm's own comparison). An unrecognized hash never verifies.
    pub async fn verify(
        &self,
        password: &Secret<String>,
        phc: &str,
    ) -> Result<bool, PasswordError> {
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let Some(kind) = hash_kind(phc) else {
            return Ok(false);
        };
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pw = password.clone();
        let phc = phc.to_string();
        let argon2 = self.argon2();
        self.blocking(move || match kind {
            HashKind::Argon2 => {
                let parsed =
                    PasswordHash::new(&phc).map_err(|e| PasswordError::Hash(e.to_string()))?;
                Ok(argon2
                    .verify_password(pw.expose().as_bytes(), &parsed)
                    .is_ok())
            }
            HashKind::Bcrypt => Ok(bcrypt::verify(pw.expose().as_bytes(), &phc).unwrap_or(false)),
        })
        .await
    }

    /// How many hashes this hasher has verified (real or dummy).
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when a stored hash should be replaced by one with the current parameters
    /// (imported bcrypt, another argon2 variant, or other argon2 parameters).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(h) if phc.starts_with("$argon2id$") => {
                let p = &self.params;
                let get = |k: &str| h.params.get_decimal(k);
                get("m") != Some(p.m_cost())
                    || get("t") != Some(p.t_cost())
                    || get("p") != Some(p.p_cost())
            }
            _ => true,
        }
    }

    /// Spends the time of one verification without any account (for unknown emails).
    pub async fn verify_dummy(&self, password: &Secret<String>) -> Result<(), PasswordError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let random: [u8; 16] = rand::random();
                self.hash_unchecked(hex::encode(random)).await
            })
            .await?
            .clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    /// Hashes without the length policy (for rehashing a password that already verified).
    pub async fn hash_any(&self, password: &Secret<String>) -> Result<String, PasswordError> {
        self.hash_unchecked(password.expose().clone()).await
    }

    async fn hash_unchecked(&self, password: String) -> Result<String, PasswordError> {
        let argon2 = self.argon2();
        self.blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Passwords {
        Passwords::new(&PasswordConfig {
            min_length: 10,
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = fast();
        let pw = Secret::new("correct horse battery".to_string());
        let phc = p.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(p.verify(&pw, &phc).await.unwrap());
        assert!(
            !p.verify(&Secret::new("wrong password!".into()), &phc)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn legacy_hashes_verify_and_need_rehash() {
        let p = fast();
        let pw = Secret::new("correct horse battery".to_string());
        let bcrypt_hash = bcrypt::hash("correct horse battery", 4).unwrap();
        assert_eq!(hash_kind(&bcrypt_hash), Some(HashKind::Bcrypt));
        assert!(p.verify(&pw, &bcrypt_hash).await.unwrap());
        assert!(
            !p.verify(&Secret::new("nope nope nope".into()), &bcrypt_hash)
                .await
                .unwrap()
        );
        assert!(p.needs_rehash(&bcrypt_hash));
        // argon2 with other parameters verifies with its own and needs a rehash.
        let slow = Passwords::new(&PasswordConfig {
            min_length: 10,
            argon2_memory_kib: 128,
            argon2_iterations: 2,
            argon2_parallelism: 1,
        })
        .unwrap();
        let other = slow.hash(&pw).await.unwrap();
        assert!(p.verify(&pw, &other).await.unwrap());
        assert!(p.needs_rehash(&other));
        let current = p.hash(&pw).await.unwrap();
        assert!(!p.needs_rehash(&current));
        // Garbage never verifies and is not recognized.
        let multibyte = format!("$2b$€{}", "x".repeat(53));
        assert_eq!(multibyte.len(), 60);
        for bad in [
            "",
            "plaintext",
            "$2b$xx$short",
            "$argon2id$garbage",
            multibyte.as_str(),
        ] {
            assert_eq!(hash_kind(bad), None, "{bad}");
            assert!(!p.verify(&pw, bad).await.unwrap());
        }
        p.verify_dummy(&pw).await.unwrap();
    }

    #[test]
    fn policy_bounds() {
        let p = fast();
        assert!(matches!(
            p.check_policy("short"),
            Err(PasswordError::TooShort(10))
        ));
        assert!(p.check_policy("0123456789").is_ok());
        // Characters, not bytes, count towards the minimum.
        assert!(p.check_policy("ééééééééé").is_err());
        assert!(matches!(
            p.check_policy(&"x".repeat(257)),
            Err(PasswordError::TooLong)
        ));
        assert!(p.check_policy(&"x".repeat(256)).is_ok());
    }
}
