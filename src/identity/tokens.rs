//! Email verification and password reset: single-use, expiring tokens mailed as links, and
//! password changes.
//!
//! A token is 256 random bits, given only to the user (base64url, 43 characters) and stored
//! only as its SHA-256. A token is void once used, once expired, once a newer one of the same
//! kind is issued to the user (the older ones are marked used), and once the user's email
//! differs from the address it was mailed to.
use super::audit::{self, Event};
use super::mailer::Email;
use super::users::normalize_email;
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::tokens::{Token, TokenKind};
use crate::store::users::User;
use crate::store::{self, StoreError, Tx};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq as _;
use url::Url;
use uuid::Uuid;

/// Random bytes per token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Length of a token as handed out: 32 bytes in unpadded base64url (RFC 4648 §5).
pub const TOKEN_LEN: usize = 43;
pub const VERIFY_EMAIL_PATH: &str = "/verify-email";
pub const RESET_PASSWORD_PATH: &str = "/reset-password";

/// How long expired tokens are kept before [`purge_expired`] deletes them (so a late click
/// still says "expired" rather than "invalid").
pub fn purge_grace() -> chrono::Duration {
    chrono::Duration::days(1)
}

/// A freshly generated token: the secret for the user and the hash for the store.
pub struct NewToken {
    pub secret: Secret<String>,
    /// SHA-256 of the 32 raw bytes, lower-case hex.
    pub hash: String,
}

/// 32 bytes from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn generate() -> NewToken {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    NewToken {
        secret: Secret::new(URL_SAFE_NO_PAD.encode(bytes)),
        hash: hash_bytes(&bytes),
    }
}

/// The stored hash of a presented token; `None` unless it is exactly 43 canonical base64url
/// characters (RFC 4648 §5, no padding) that decode to 32 bytes.
pub fn token_hash(token: &str) -> Option<String> {
    if token.len() != TOKEN_LEN {
        return None;
    }
    let bytes: [u8; TOKEN_BYTES] = URL_SAFE_NO_PAD.decode(token).ok()?.try_into().ok()?;
    Some(hash_bytes(&bytes))
}

fn hash_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `{issuer}{path}?token={token}`, with no double slash when the issuer ends in `/`.
/// The token is base64url, so it needs no percent-encoding.
pub fn link(issuer: &Url, path: &str, token: &str) -> String {
    format!(
        "{}/{}?token={token}",
        issuer.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// "24 hours", "1 hour", "90 minutes", "45 seconds": for the mail text.
pub fn describe_ttl(ttl: Duration) -> String {
    let s = ttl.as_secs();
    let (n, unit) = if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn same_email(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// Decides whether a stored token may be used at `now` by someone presenting a token whose
/// hash is `presented_hash`, for a user whose address is now `current_email`. Checks apply
/// in this order: wrong hash or changed address → invalid; used (or superseded) → used;
/// `now >= expires_at` → expired.
pub fn check(
    row: &Token,
    presented_hash: &str,
    current_email: &str,
    now: DateTime<Utc>,
) -> Result<(), IdentityError> {
    let hash_ok: bool = row
        .token_hash
        .as_bytes()
        .ct_eq(presented_hash.as_bytes())
        .into();
    if !hash_ok || !same_email(&row.email, current_email) {
        return Err(IdentityError::TokenInvalid);
    }
    if row.used_at.is_some() {
        return Err(IdentityError::TokenUsed);
    }
    if now >= row.expires_at {
        return Err(IdentityError::TokenExpired);
    }
    Ok(())
}

/// Hashes a new password; policy failures are `Invalid { field: "password" }`.
async fn hash_password(id: &Identity, password: &Secret<String>) -> Result<String, IdentityError> {
    Ok(id.passwords.hash(password).await?)
}

fn ttl(d: Duration) -> Result<chrono::Duration, IdentityError> {
    chrono::Duration::from_std(d).map_err(|e| IdentityError::Internal(e.to_string()))
}

/// Issues a token of `kind` for `user`, marking the user's older unused ones used, and
/// records `action` (never the token), in one transaction. Returns the secret (for the mail
/// only).
async fn issue(
    id: &Identity,
    kind: TokenKind,
    user: &User,
    lifetime: Duration,
    action: &'static str,
) -> Result<Secret<String>, IdentityError> {
    let new = generate();
    let now = id.clock.now();
    let row = Token {
        token_id: Uuid::now_v7(),
        user_id: user.user_id,
        created_at: now,
        expires_at: now + ttl(lifetime)?,
        used_at: None,
        token_hash: new.hash,
        email: user.email.clone(),
    };
    let mut tx = id.db.begin().await?;
    // Serializes concurrent requests for one user, so exactly one token stays live.
    store::users::get_for_update(&mut tx, user.user_id).await?;
    store::tokens::invalidate_unused_for_user(&mut tx, kind, user.user_id, now).await?;
    store::tokens::insert(&mut tx, kind, &row)
        .await
        .map_err(|e| match e {
            StoreError::ForeignKey => IdentityError::NotFound { what: "user" },
            other => other.into(),
        })?;
    let event = Event::new(action, "user", user.user_id).details(json!({
        "token_id": row.token_id,
        "expires_at": row.expires_at,
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(new.secret)
}

/// Finds and checks a presented token outside any transaction: (row, its user, the hash).
async fn find(
    id: &Identity,
    kind: TokenKind,
    token: &str,
) -> Result<(Token, User, String), IdentityError> {
    let hash = token_hash(token).ok_or(IdentityError::TokenInvalid)?;
    let mut c = id.db.conn().await?;
    let row = store::tokens::find_by_hash(&mut c, kind, &hash)
        .await?
        .ok_or(IdentityError::TokenInvalid)?;
    let user = store::users::get(&mut c, row.user_id)
        .await?
        .ok_or(IdentityError::TokenInvalid)?;
    check(&row, &hash, &user.email, id.clock.now())?;
    Ok((row, user, hash))
}

/// Uses the token inside `tx` and returns its user as now stored. The conditional update is
/// the transaction's first statement, so it takes the write lock (SQLite) or the row lock
/// (PostgreSQL) before anything is read: of two concurrent uses, the second waits, matches no
/// row and fails with the reason read back.
async fn consume(
    tx: &mut Tx,
    kind: TokenKind,
    row: &Token,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<User, IdentityError> {
    if !store::tokens::mark_used(tx, kind, row.token_id, now).await? {
        let fresh = store::tokens::get(tx, kind, row.token_id)
            .await?
            .ok_or(IdentityError::TokenInvalid)?;
        check(&fresh, hash, &fresh.email, now)?;
        return Err(IdentityError::TokenInvalid);
    }
    let user = store::users::get_for_update(tx, row.user_id)
        .await?
        .ok_or(IdentityError::TokenInvalid)?;
    // The address may have changed since `find`; dropping `tx` undoes the use.
    if !same_email(&row.email, &user.email) {
        return Err(IdentityError::TokenInvalid);
    }
    Ok(user)
}

/// Mails the user a link to confirm their address, voiding any earlier verification link.
/// A user whose address is already confirmed gets nothing (`Ok`, no token, no mail).
/// Mail failures are errors (the caller is the user or an admin, so nothing is revealed).
pub async fn send_email_verification(id: &Identity, user_id: Uuid) -> Result<(), IdentityError> {
    let user = {
        let mut c = id.db.conn().await?;
        store::users::get(&mut c, user_id)
            .await?
            .ok_or(IdentityError::NotFound { what: "user" })?
    };
    if user.email_confirmed {
        return Ok(());
    }
    let lifetime = id.config.tokens.email_verification_ttl;
    let secret = issue(
        id,
        TokenKind::EmailVerification,
        &user,
        lifetime,
        "user.email_verification_sent",
    )
    .await?;
    let url = link(&id.config.issuer, VERIFY_EMAIL_PATH, secret.expose());
    let text = format!(
        "Please confirm your email address by opening this link:\n\n{url}\n\n\
         The link works once and expires in {}. If you did not create an account, \
         you can ignore this message.\n",
        describe_ttl(lifetime)
    );
    id.mailer
        .send(Email {
            to: user.email,
            subject: "Confirm your email address".into(),
            text,
        })
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))
}

/// Confirms the address the token was mailed to: uses the token and sets
/// `email_confirmed`, in one transaction.
pub async fn verify_email(id: &Identity, token: &str) -> Result<User, IdentityError> {
    let kind = TokenKind::EmailVerification;
    let (row, _, hash) = find(id, kind, token).await?;
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    let mut user = consume(&mut tx, kind, &row, &hash, now).await?;
    let was_confirmed = user.email_confirmed;
    user.email_confirmed = true;
    store::users::update(&mut tx, &user).await?;
    store::tokens::invalidate_unused_for_user(&mut tx, kind, user.user_id, now).await?;
    let event = Event::new("user.email_verified", "user", user.user_id).details(json!({
        "token_id": row.token_id,
        "email": user.email,
        "email_confirmed": { "before": was_confirmed, "after": true },
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(user)
}

/// Mails a password reset link if `email` belongs to an enabled user. Answers `Ok(())` in
/// every case — unknown, malformed or disabled address, or a failed delivery (logged) — so the
/// answer does not tell whether an account exists (OWASP Forgot Password Cheat Sheet). For
/// unknown addresses a token is still generated, hashed and looked up, to keep the work
/// comparable; delivery time itself is not hidden.
pub async fn request_password_reset(id: &Identity, email: &str) -> Result<(), IdentityError> {
    let user = match normalize_email(email) {
        Ok(email) => {
            let mut c = id.db.conn().await?;
            store::users::find_by_email(&mut c, &email).await?
        }
        Err(_) => None,
    };
    let Some(user) = user.filter(|u| u.enabled) else {
        let decoy = generate();
        let mut c = id.db.conn().await?;
        store::tokens::find_by_hash(&mut c, TokenKind::PasswordReset, &decoy.hash).await?;
        return Ok(());
    };
    let lifetime = id.config.tokens.password_reset_ttl;
    // The audit row is one more insert in the transaction existing accounts already pay for.
    let secret = issue(
        id,
        TokenKind::PasswordReset,
        &user,
        lifetime,
        "user.password_reset_requested",
    )
    .await?;
    let url = link(&id.config.issuer, RESET_PASSWORD_PATH, secret.expose());
    let text = format!(
        "Someone asked to reset the password of your account. To choose a new password, \
         open this link:\n\n{url}\n\n\
         The link works once and expires in {}. Resetting signs you out everywhere. \
         If you did not ask for this, ignore this message: your password stays the same.\n",
        describe_ttl(lifetime)
    );
    // Delivered in the background: the answer must not wait for (and so reveal) a mail
    // that is only sent for existing accounts; a failure is logged, never returned.
    let mailer = id.mailer.clone();
    let email = Email {
        to: user.email,
        subject: "Reset your password".into(),
        text,
    };
    tokio::spawn(async move {
        if let Err(e) = mailer.send(email).await {
            tracing::error!(user_id = %user.user_id, error = %e, "password reset mail not sent");
        }
    });
    Ok(())
}

/// Sets a new password with a reset token. Checks the token, then the password policy
/// (a rejected password leaves the token unused), then in one transaction: uses the token,
/// stores the hash, clears `update_password_required`, marks the address confirmed (the
/// link reached it), ends a temporary lockout (not an admin lock), revokes every session of
/// the user and voids their other reset tokens.
pub async fn reset_password(
    id: &Identity,
    token: &str,
    new_password: &Secret<String>,
) -> Result<User, IdentityError> {
    let kind = TokenKind::PasswordReset;
    let (row, user, hash) = find(id, kind, token).await?;
    if !user.enabled {
        return Err(IdentityError::AccountDisabled);
    }
    let phc = hash_password(id, new_password).await?;
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    let mut user = consume(&mut tx, kind, &row, &hash, now).await?;
    if !user.enabled {
        return Err(IdentityError::AccountDisabled);
    }
    store::users::set_password_hash(&mut tx, user.user_id, &phc, now).await?;
    user.has_password = true;
    user.update_password_required = false;
    user.email_confirmed = true;
    store::users::update(&mut tx, &user).await?;
    store::users::clear_login_failures(&mut tx, user.user_id).await?;
    let revoked = store::sessions::revoke_all_for_user(&mut tx, user.user_id, None).await?;
    store::tokens::invalidate_unused_for_user(&mut tx, kind, user.user_id, now).await?;
    let event = Event::new("user.password_reset", "user", user.user_id).details(json!({
        "token_id": row.token_id,
        "sessions_revoked": revoked,
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(user)
}

/// Changes a signed-in user's password. With `current`, it must match the stored password
/// (else `InvalidCredentials`); pass `None` only where the caller has just authenticated the
/// user in this flow (a forced change after sign-in) or is an admin. In one transaction:
/// stores the new hash, clears `update_password_required`, revokes every session of the user
/// except `keep_session`, and voids outstanding reset tokens.
pub async fn change_password(
    id: &Identity,
    user_id: Uuid,
    current: Option<&Secret<String>>,
    new: &Secret<String>,
    keep_session: Option<Uuid>,
) -> Result<(), IdentityError> {
    let (user, stored) = {
        let mut c = id.db.conn().await?;
        let user = store::users::get(&mut c, user_id)
            .await?
            .ok_or(IdentityError::NotFound { what: "user" })?;
        let stored = store::users::password_hash(&mut c, user_id).await?;
        (user, stored)
    };
    if !user.enabled {
        return Err(IdentityError::AccountDisabled);
    }
    if let Some(current) = current {
        let ok = match stored {
            Some(phc) => id
                .passwords
                .verify(current, &phc)
                .await
                .map_err(|e| IdentityError::Internal(e.to_string()))?,
            None => false,
        };
        if !ok {
            return Err(IdentityError::InvalidCredentials);
        }
    }
    let phc = hash_password(id, new).await?;
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    store::users::set_password_hash(&mut tx, user_id, &phc, now).await?;
    let mut user = store::users::get_for_update(&mut tx, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    user.update_password_required = false;
    store::users::update(&mut tx, &user).await?;
    let revoked = store::sessions::revoke_all_for_user(&mut tx, user_id, keep_session).await?;
    store::tokens::invalidate_unused_for_user(&mut tx, TokenKind::PasswordReset, user_id, now)
        .await?;
    let event = Event::new("user.password_changed", "user", user_id).details(json!({
        "current_password_checked": current.is_some(),
        "sessions_revoked": revoked,
        "kept_session_id": keep_session,
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(())
}

/// Deletes tokens of both kinds that expired more than [`purge_grace`] ago; returns how many.
pub async fn purge_expired(id: &Identity) -> Result<u64, IdentityError> {
    let before = id.clock.now() - purge_grace();
    let mut tx = id.db.begin().await?;
    let mut n = 0;
    for kind in TokenKind::ALL {
        n += store::tokens::delete_expired_before(&mut tx, kind, before).await?;
    }
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn generated_tokens_are_43_chars_and_hash_back() {
        let a = generate();
        let b = generate();
        assert_eq!(a.secret.expose().len(), TOKEN_LEN);
        assert!(
            a.secret
                .expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert_eq!(a.hash.len(), 64);
        assert_ne!(&a.hash, a.secret.expose());
        assert_eq!(
            token_hash(a.secret.expose()).as_deref(),
            Some(a.hash.as_str())
        );
        assert_eq!(format!("{:?}", a.secret), "[redacted]");
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        let good = generate().secret.expose().clone();
        let padded = format!("{good}=");
        let short = &good[..42];
        let std_alphabet = format!("{}+", &good[..42]);
        // 43 chars whose last one carries non-zero trailing bits (not canonical).
        let noncanonical = format!("{}B", "A".repeat(42));
        for bad in [
            "",
            "garbage",
            padded.as_str(),
            short,
            std_alphabet.as_str(),
            noncanonical.as_str(),
            &format!("{}a", "é".repeat(21)),
        ] {
            assert_eq!(token_hash(bad), None, "{bad:?}");
        }
        assert!(token_hash(&format!("{}A", "A".repeat(42))).is_some());
    }

    #[test]
    fn known_hash() {
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            token_hash(&"A".repeat(43)).unwrap(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn links_have_one_slash() {
        let t = "abc";
        for (issuer, want) in [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/verify-email?token=abc",
            ),
            (
                "https://id.example/",
                "https://id.example/verify-email?token=abc",
            ),
            (
                "https://example.com/auth/",
                "https://example.com/auth/verify-email?token=abc",
            ),
            (
                "https://example.com/auth",
                "https://example.com/auth/verify-email?token=abc",
            ),
        ] {
            let issuer = Url::parse(issuer).unwrap();
            assert_eq!(link(&issuer, VERIFY_EMAIL_PATH, t), want);
        }
    }

    #[test]
    fn ttl_descriptions() {
        assert_eq!(describe_ttl(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(describe_ttl(Duration::from_secs(3600)), "1 hour");
        assert_eq!(describe_ttl(Duration::from_secs(5400)), "90 minutes");
        assert_eq!(describe_ttl(Duration::from_secs(60)), "1 minute");
        assert_eq!(describe_ttl(Duration::from_secs(61)), "61 seconds");
        assert_eq!(describe_ttl(Duration::from_secs(1)), "1 second");
    }

    fn row(hash: &str) -> Token {
        Token {
            token_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            created_at: at("2026-01-01T00:00:00Z"),
            expires_at: at("2026-01-01T01:00:00Z"),
            used_at: None,
            token_hash: hash.into(),
            email: "ada@example.com".into(),
        }
    }

    #[test]
    fn check_order_and_boundaries() {
        let t = generate();
        let r = row(&t.hash);
        let before = at("2026-01-01T00:59:59.999999Z");
        assert!(check(&r, &t.hash, "ada@example.com", before).is_ok());
        assert!(check(&r, &t.hash, "ADA@example.com", before).is_ok());
        // Expiry is exclusive: at `expires_at` the token is expired.
        assert!(matches!(
            check(&r, &t.hash, "ada@example.com", r.expires_at),
            Err(IdentityError::TokenExpired)
        ));
        assert!(matches!(
            check(&r, &generate().hash, "ada@example.com", before),
            Err(IdentityError::TokenInvalid)
        ));
        assert!(matches!(
            check(&r, &t.hash, "ada@other.example", before),
            Err(IdentityError::TokenInvalid)
        ));
        let used = Token {
            used_at: Some(before),
            ..r.clone()
        };
        assert!(matches!(
            check(&used, &t.hash, "ada@example.com", before),
            Err(IdentityError::TokenUsed)
        ));
        // Used wins over expired; invalid wins over both.
        assert!(matches!(
            check(&used, &t.hash, "ada@example.com", r.expires_at),
            Err(IdentityError::TokenUsed)
        ));
        assert!(matches!(
            check(&used, &t.hash, "eve@example.com", r.expires_at),
            Err(IdentityError::TokenInvalid)
        ));
    }
}
