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

    /// Verifies against a stored PHC string, in constant time (argon2's comparison).
    pub async fn verify(
        &self,
        password: &Secret<String>,
        phc: &str,
    ) -> Result<bool, PasswordError> {
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let pw = password.clone();
        let phc = phc.to_string();
        let argon2 = self.argon2();
        self.blocking(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| PasswordError::Hash(e.to_string()))?;
            Ok(argon2
                .verify_password(pw.expose().as_bytes(), &parsed)
                .is_ok())
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
