//! Business rules shared by every protocol: users, organizations, memberships, credentials.
//! Knows nothing of HTTP; persists through `store`.
use crate::clock::SharedClock;
use crate::store::{Db, StoreError};

pub mod orgs;
pub mod passwords;
pub mod users;

pub use passwords::Passwords;

/// What the identity rules need: the store, the clock and the password hasher.
#[derive(Clone)]
pub struct Identity {
    pub db: Db,
    pub clock: SharedClock,
    pub passwords: Passwords,
}

/// An identity-rule failure. Messages are safe to show (no secrets, no SQL).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Input that breaks a rule; `field` names the offending input.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Another record already holds this unique value.
    #[error("{message}")]
    Conflict { field: String, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The store failed; logged by whoever answers, never shown.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl IdentityError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        IdentityError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Turns a store conflict into a readable one naming the field; other errors pass through.
    pub(crate) fn from_store_conflict(
        e: StoreError,
        describe: impl FnOnce(&str) -> String,
    ) -> Self {
        match e.conflict_field() {
            Some(field) => {
                let field = field.to_string();
                IdentityError::Conflict {
                    message: describe(&field),
                    field,
                }
            }
            None => IdentityError::Store(e),
        }
    }
}
