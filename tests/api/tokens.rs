//! Email verification, password reset and password change over the real store (both
//! backends), reading links from the dev outbox or from a scripted SMTP server.
use crate::helpers::{TestDb, identity_with_clock, test_config};
use crate::on_both_databases;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use lintel::clock::FixedClock;
use lintel::config::{Config, Secret};
use lintel::identity::tokens::{self, RESET_PASSWORD_PATH, VERIFY_EMAIL_PATH};
use lintel::identity::users::{self, NewUser};
use lintel::identity::{Identity, IdentityError, mailer};
use lintel::store::sessions::Session;
use lintel::store::tokens::{Token, TokenKind};
use lintel::store::users::User;
use lintel::store::{self, TextList};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use uuid::Uuid;

on_both_databases!(
    verification_link_confirms_the_address_once,
    verification_expires_after_its_ttl,
    reset_expires_after_its_ttl,
    forged_and_malformed_tokens_are_invalid,
    a_newer_token_voids_the_older,
    confirmed_or_unknown_users_get_no_verification_mail,
    a_changed_address_voids_the_token,
    reset_requests_do_not_reveal_accounts,
    rejected_password_leaves_the_token_unused,
    reset_sets_the_password_and_ends_every_session,
    reset_is_refused_for_disabled_users,
    concurrent_uses_of_one_token_succeed_once,
    change_password_keeps_only_the_given_session,
    purge_deletes_tokens_expired_over_a_day,
    smtp_delivers_the_links,
    failed_delivery_is_hidden_from_reset_requests,
);

const OLD_PW: &str = "old password 1234";
const NEW_PW: &str = "brand new password 5678";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn pw(s: &str) -> Secret<String> {
    Secret::new(s.to_string())
}

async fn setup(db: &TestDb) -> (Identity, FixedClock) {
    let clock = FixedClock::new(t0());
    (identity_with_clock(db, clock.clone()).await, clock)
}

async fn finish(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

async fn user(id: &Identity, email: &str) -> User {
    users::create(
        id,
        NewUser {
            email: email.into(),
            password: Some(pw(OLD_PW)),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .0
}

async fn reload(id: &Identity, user_id: Uuid) -> User {
    let mut c = id.db.conn().await.unwrap();
    store::users::get(&mut c, user_id).await.unwrap().unwrap()
}

async fn save(id: &Identity, u: &User) {
    let mut c = id.db.conn().await.unwrap();
    assert!(store::users::update(&mut c, u).await.unwrap());
}

async fn stored_tokens(id: &Identity, kind: TokenKind, user_id: Uuid) -> Vec<Token> {
    let mut c = id.db.conn().await.unwrap();
    store::tokens::list_for_user(&mut c, kind, user_id)
        .await
        .unwrap()
}

async fn password_is(id: &Identity, user_id: Uuid, candidate: &str) -> bool {
    let mut c = id.db.conn().await.unwrap();
    let phc = store::users::password_hash(&mut c, user_id)
        .await
        .unwrap()
        .unwrap();
    id.passwords.verify(&pw(candidate), &phc).await.unwrap()
}

fn sha256_hex(token: &str) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap();
    hex::encode(Sha256::digest(raw))
}

// ---- the dev outbox and RFC 5322 / MIME parsing ----

fn outbox_files(id: &Identity) -> Vec<PathBuf> {
    let dir = id.config.data_dir.join("outbox");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
}

#[derive(Debug)]
struct Mail {
    headers: Vec<(String, String)>,
    body: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The token of the first `{issuer}{path}?token=` link in the body.
    fn token(&self, id: &Identity, path: &str) -> String {
        let prefix = format!(
            "{}{path}?token=",
            id.config.issuer.as_str().trim_end_matches('/')
        );
        let start = self
            .body
            .find(&prefix)
            .unwrap_or_else(|| panic!("no {prefix} link in {:?}", self.body))
            + prefix.len();
        let token: String = self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert_eq!(token.len(), 43, "{token}");
        token
    }
}

/// Splits headers (unfolded, RFC 5322 §2.2.3) from the body, decoded per its
/// Content-Transfer-Encoding (RFC 2045 §6).
fn parse_mail(raw: &str) -> Mail {
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            headers.last_mut().unwrap().1.push_str(line);
        } else {
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.to_string(), v.trim().to_string()));
        }
    }
    let mut mail = Mail {
        headers,
        body: String::new(),
    };
    let cte = mail
        .header("Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    mail.body = match cte.as_str() {
        "7bit" | "8bit" => body.to_string(),
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap(),
            )
            .unwrap()
        }
        other => panic!("unexpected encoding {other}"),
    };
    mail
}

/// RFC 2045 §6.7: `=XX` is a byte, `=` at the end of a line is a soft line break.
fn decode_quoted_printable(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b[i + 1..].starts_with(b"\r\n") {
                i += 3;
            } else if b[i + 1..].starts_with(b"\n") {
                i += 2;
            } else {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn read_mail(path: &PathBuf) -> Mail {
    parse_mail(&std::fs::read_to_string(path).unwrap())
}

/// The only new outbox message since `before` files were there (reset mails are sent in
/// the background: wait for it, up to 5 s).
async fn new_mail(id: &Identity, before: usize) -> Mail {
    for _ in 0..250 {
        if outbox_files(id).len() > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let files = outbox_files(id);
    assert_eq!(files.len(), before + 1, "{files:?}");
    read_mail(files.last().unwrap())
}

async fn verification_token(id: &Identity, user_id: Uuid) -> String {
    let before = outbox_files(id).len();
    tokens::send_email_verification(id, user_id).await.unwrap();
    new_mail(id, before).await.token(id, VERIFY_EMAIL_PATH)
}

async fn reset_token(id: &Identity, email: &str) -> String {
    let before = outbox_files(id).len();
    tokens::request_password_reset(id, email).await.unwrap();
    new_mail(id, before).await.token(id, RESET_PASSWORD_PATH)
}

fn session(user_id: Uuid, now: DateTime<Utc>) -> Session {
    Session {
        session_id: Uuid::now_v7(),
        user_id,
        refresh_token: None,
        created_at: now,
        expires_at: now + Duration::hours(8),
        revoked: false,
        ip_address: None,
        user_agent: None,
        org_id: None,
        auth_methods: TextList(vec!["pwd".into()]),
        auth_time: now,
        last_seen_at: now,
        impersonator_id: None,
    }
}

async fn add_session(id: &Identity, user_id: Uuid) -> Uuid {
    let s = session(user_id, id.clock.now());
    let mut c = id.db.conn().await.unwrap();
    store::sessions::insert(&mut c, &s).await.unwrap();
    s.session_id
}

async fn revoked(id: &Identity, session_id: Uuid) -> bool {
    let mut c = id.db.conn().await.unwrap();
    store::sessions::get(&mut c, session_id)
        .await
        .unwrap()
        .unwrap()
        .revoked
}

// ---- email verification ----

async fn verification_link_confirms_the_address_once(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "Ada@Example.com").await;
    tokens::send_email_verification(&id, ada.user_id)
        .await
        .unwrap();
    let mail = new_mail(&id, 0).await;
    assert_eq!(mail.header("To"), Some("ada@example.com"));
    assert_eq!(mail.header("Subject"), Some("Confirm your email address"));
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .contains("charset=utf-8")
    );
    assert!(
        mail.body
            .contains("http://127.0.0.1:8080/verify-email?token="),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("expires in 24 hours"), "{}", mail.body);
    let token = mail.token(&id, VERIFY_EMAIL_PATH);

    // Stored as SHA-256 of the 32 raw bytes, never as the token.
    let rows = stored_tokens(&id, TokenKind::EmailVerification, ada.user_id).await;
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].token_hash, token);
    assert!(!rows[0].token_hash.contains(&token));
    assert_eq!(rows[0].token_hash, sha256_hex(&token));
    assert_eq!(rows[0].expires_at, t0() + Duration::hours(24));
    assert_eq!(rows[0].used_at, None);
    assert_eq!(rows[0].email, "ada@example.com");

    assert!(!reload(&id, ada.user_id).await.email_confirmed);
    let confirmed = tokens::verify_email(&id, &token).await.unwrap();
    assert_eq!(confirmed.user_id, ada.user_id);
    assert!(confirmed.email_confirmed);
    assert!(reload(&id, ada.user_id).await.email_confirmed);
    let rows = stored_tokens(&id, TokenKind::EmailVerification, ada.user_id).await;
    assert_eq!(rows[0].used_at, Some(t0()));

    let err = tokens::verify_email(&id, &token).await.unwrap_err();
    assert!(matches!(err, IdentityError::TokenUsed), "{err:?}");
    finish(id, db).await;
}

async fn verification_expires_after_its_ttl(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ttl = Duration::from_std(id.config.tokens.email_verification_ttl).unwrap();
    assert_eq!(ttl, Duration::hours(24));

    let ada = user(&id, "ada@example.com").await;
    let bob = user(&id, "bob@example.com").await;
    let eve = user(&id, "eve@example.com").await;
    let for_ada = verification_token(&id, ada.user_id).await;
    let for_bob = verification_token(&id, bob.user_id).await;
    let for_eve = verification_token(&id, eve.user_id).await;

    clock.advance(ttl - Duration::seconds(1));
    tokens::verify_email(&id, &for_ada).await.unwrap();
    // At exactly `expires_at` the token is expired.
    clock.advance(Duration::seconds(1));
    let err = tokens::verify_email(&id, &for_eve).await.unwrap_err();
    assert!(matches!(err, IdentityError::TokenExpired), "{err:?}");
    clock.advance(Duration::seconds(1));
    let err = tokens::verify_email(&id, &for_bob).await.unwrap_err();
    assert!(matches!(err, IdentityError::TokenExpired), "{err:?}");
    assert!(!reload(&id, bob.user_id).await.email_confirmed);
    // An expired token stays unused.
    let rows = stored_tokens(&id, TokenKind::EmailVerification, bob.user_id).await;
    assert_eq!(rows[0].used_at, None);
    finish(id, db).await;
}

async fn reset_expires_after_its_ttl(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ttl = Duration::from_std(id.config.tokens.password_reset_ttl).unwrap();
    assert_eq!(ttl, Duration::hours(1));
    user(&id, "ada@example.com").await;
    let bob = user(&id, "bob@example.com").await;
    let for_ada = reset_token(&id, "ada@example.com").await;
    let for_bob = reset_token(&id, "bob@example.com").await;

    clock.advance(ttl - Duration::seconds(1));
    tokens::reset_password(&id, &for_ada, &pw(NEW_PW))
        .await
        .unwrap();
    clock.advance(Duration::seconds(2));
    let err = tokens::reset_password(&id, &for_bob, &pw(NEW_PW))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::TokenExpired), "{err:?}");
    assert!(password_is(&id, bob.user_id, OLD_PW).await);
    finish(id, db).await;
}

async fn forged_and_malformed_tokens_are_invalid(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let verify = verification_token(&id, ada.user_id).await;
    let reset = reset_token(&id, "ada@example.com").await;

    // One character changed (in the middle, so the encoding stays canonical).
    let mut altered = verify.clone().into_bytes();
    altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let unissued = tokens::generate().secret.expose().clone();
    let padded = format!("{verify}=");
    let truncated = verify[..42].to_string();
    let forged = [
        "",
        "garbage",
        "   ",
        altered.as_str(),
        unissued.as_str(),
        padded.as_str(),
        truncated.as_str(),
        "%00%00",
    ];
    for bad in forged {
        let err = tokens::verify_email(&id, bad).await.unwrap_err();
        assert!(
            matches!(err, IdentityError::TokenInvalid),
            "{bad:?}: {err:?}"
        );
        let err = tokens::reset_password(&id, bad, &pw(NEW_PW))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::TokenInvalid),
            "{bad:?}: {err:?}"
        );
    }
    // A token of one kind is unknown to the other.
    let err = tokens::reset_password(&id, &verify, &pw(NEW_PW))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::TokenInvalid), "{err:?}");
    let err = tokens::verify_email(&id, &reset).await.unwrap_err();
    assert!(matches!(err, IdentityError::TokenInvalid), "{err:?}");

    // The attempts burned nothing: the real tokens still work.
    assert!(password_is(&id, ada.user_id, OLD_PW).await);
    tokens::verify_email(&id, &verify).await.unwrap();
    tokens::reset_password(&id, &reset, &pw(NEW_PW))
        .await
        .unwrap();
    finish(id, db).await;
}

async fn a_newer_token_voids_the_older(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let first = verification_token(&id, ada.user_id).await;
    clock.advance(Duration::seconds(5));
    let second = verification_token(&id, ada.user_id).await;
    assert_ne!(first, second);
    // Superseded tokens are marked used (not deleted), so they answer TokenUsed.
    let err = tokens::verify_email(&id, &first).await.unwrap_err();
    assert!(matches!(err, IdentityError::TokenUsed), "{err:?}");
    let rows = stored_tokens(&id, TokenKind::EmailVerification, ada.user_id).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].used_at, Some(t0() + Duration::seconds(5)));
    assert_eq!(rows[1].used_at, None);
    tokens::verify_email(&id, &second).await.unwrap();

    let first = reset_token(&id, "ada@example.com").await;
    let second = reset_token(&id, "ada@example.com").await;
    let err = tokens::reset_password(&id, &first, &pw(NEW_PW))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::TokenUsed), "{err:?}");
    assert!(password_is(&id, ada.user_id, OLD_PW).await);
    tokens::reset_password(&id, &second, &pw(NEW_PW))
        .await
        .unwrap();
    finish(id, db).await;
}

async fn confirmed_or_unknown_users_get_no_verification_mail(db: TestDb) {
    let (id, _) = setup(&db).await;
    let err = tokens::send_email_verification(&id, Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    let mut ada = user(&id, "ada@example.com").await;
    ada.email_confirmed = true;
    save(&id, &ada).await;
    tokens::send_email_verification(&id, ada.user_id)
        .await
        .unwrap();
    assert!(outbox_files(&id).is_empty());
    assert!(
        stored_tokens(&id, TokenKind::EmailVerification, ada.user_id)
            .await
            .is_empty()
    );
    finish(id, db).await;
}

async fn a_changed_address_voids_the_token(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let verify = verification_token(&id, ada.user_id).await;
    let reset = reset_token(&id, "ada@example.com").await;
    let mut moved = reload(&id, ada.user_id).await;
    moved.email = "ada@elsewhere.example".into();
    save(&id, &moved).await;

    // The link went to the old address: it must not confirm the new one.
    let err = tokens::verify_email(&id, &verify).await.unwrap_err();
    assert!(matches!(err, IdentityError::TokenInvalid), "{err:?}");
    assert!(!reload(&id, ada.user_id).await.email_confirmed);
    let err = tokens::reset_password(&id, &reset, &pw(NEW_PW))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::TokenInvalid), "{err:?}");
    assert!(password_is(&id, ada.user_id, OLD_PW).await);
    // Changing it back revives them (they were never used).
    save(&id, &ada).await;
    tokens::verify_email(&id, &verify).await.unwrap();
    finish(id, db).await;
}

// ---- password reset ----

async fn reset_requests_do_not_reveal_accounts(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let mut dis = user(&id, "disabled@example.com").await;
    dis.enabled = false;
    save(&id, &dis).await;

    // Unknown, malformed and disabled: the same Ok(()), and nothing sent or stored.
    for email in [
        "nobody@example.com",
        "not an email",
        "",
        "disabled@example.com",
    ] {
        let r = tokens::request_password_reset(&id, email).await;
        assert!(matches!(r, Ok(())), "{email:?}: {r:?}");
        assert!(outbox_files(&id).is_empty(), "{email:?}");
    }
    assert!(
        stored_tokens(&id, TokenKind::PasswordReset, dis.user_id)
            .await
            .is_empty()
    );

    // Known (any case, surrounding spaces): Ok(()) and one message to the stored address.
    let r = tokens::request_password_reset(&id, "  ADA@example.COM ").await;
    assert!(matches!(r, Ok(())), "{r:?}");
    let mail = new_mail(&id, 0).await;
    assert_eq!(mail.header("To"), Some("ada@example.com"));
    assert_eq!(mail.header("Subject"), Some("Reset your password"));
    assert!(mail.body.contains("expires in 1 hour"), "{}", mail.body);
    assert!(!mail.body.contains("//reset-password"), "{}", mail.body);
    let token = mail.token(&id, RESET_PASSWORD_PATH);
    let rows = stored_tokens(&id, TokenKind::PasswordReset, ada.user_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].token_hash, sha256_hex(&token));
    assert_ne!(rows[0].token_hash, token);
    assert_eq!(rows[0].expires_at, t0() + Duration::hours(1));
    finish(id, db).await;
}

async fn rejected_password_leaves_the_token_unused(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let s = add_session(&id, ada.user_id).await;
    let token = reset_token(&id, "ada@example.com").await;
    let long = "x".repeat(300);
    for bad in ["short", long.as_str()] {
        let err = tokens::reset_password(&id, &token, &pw(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Invalid {
                    field: "password",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let rows = stored_tokens(&id, TokenKind::PasswordReset, ada.user_id).await;
    assert_eq!(rows[0].used_at, None);
    assert!(password_is(&id, ada.user_id, OLD_PW).await);
    assert!(!revoked(&id, s).await);
    tokens::reset_password(&id, &token, &pw(NEW_PW))
        .await
        .unwrap();
    finish(id, db).await;
}

async fn lockout(id: &Identity, user_id: Uuid) -> (i32, Option<DateTime<Utc>>) {
    let mut c = id.db.conn().await.unwrap();
    lintel::with_conn!(&mut c, |c| {
        sqlx::query_as::<_, (i32, Option<DateTime<Utc>>)>(
            "SELECT failed_login_count, locked_until FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&mut *c)
        .await
        .unwrap()
    })
}

async fn reset_sets_the_password_and_ends_every_session(db: TestDb) {
    let (id, _) = setup(&db).await;
    let mut ada = user(&id, "ada@example.com").await;
    ada.update_password_required = true;
    ada.locked = true; // an admin lock: a reset must not lift it
    save(&id, &ada).await;
    // A temporary lockout after failed logins.
    let until = t0() + Duration::minutes(10);
    {
        let mut c = id.db.conn().await.unwrap();
        lintel::with_conn!(&mut c, |c| sqlx::query(
            "UPDATE users SET failed_login_count = $2, locked_until = $3 WHERE user_id = $1"
        )
        .bind(ada.user_id)
        .bind(5i32)
        .bind(until)
        .execute(&mut *c)
        .await
        .unwrap()
        .rows_affected());
    }
    assert_eq!(lockout(&id, ada.user_id).await, (5, Some(until)));
    let bob = user(&id, "bob@example.com").await;
    let sessions = [
        add_session(&id, ada.user_id).await,
        add_session(&id, ada.user_id).await,
    ];
    let bobs = add_session(&id, bob.user_id).await;

    let token = reset_token(&id, "ada@example.com").await;
    let updated = tokens::reset_password(&id, &token, &pw(NEW_PW))
        .await
        .unwrap();
    assert_eq!(updated, reload(&id, ada.user_id).await);
    assert!(!updated.update_password_required);
    assert!(updated.has_password);
    assert!(updated.email_confirmed, "the link proved the address");
    assert!(updated.locked, "admin lock kept");
    assert_eq!(lockout(&id, ada.user_id).await, (0, None));
    assert!(password_is(&id, ada.user_id, NEW_PW).await);
    assert!(!password_is(&id, ada.user_id, OLD_PW).await);
    for s in sessions {
        assert!(revoked(&id, s).await);
    }
    assert!(!revoked(&id, bobs).await, "other users keep their sessions");
    let rows = stored_tokens(&id, TokenKind::PasswordReset, ada.user_id).await;
    assert_eq!(rows[0].used_at, Some(t0()));

    let err = tokens::reset_password(&id, &token, &pw("yet another password"))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::TokenUsed), "{err:?}");
    assert!(password_is(&id, ada.user_id, NEW_PW).await);
    finish(id, db).await;
}

async fn reset_is_refused_for_disabled_users(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let token = reset_token(&id, "ada@example.com").await;
    let mut disabled = ada.clone();
    disabled.enabled = false;
    save(&id, &disabled).await;
    let err = tokens::reset_password(&id, &token, &pw(NEW_PW))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::AccountDisabled), "{err:?}");
    assert!(password_is(&id, ada.user_id, OLD_PW).await);
    let rows = stored_tokens(&id, TokenKind::PasswordReset, ada.user_id).await;
    assert_eq!(rows[0].used_at, None);
    let err = tokens::change_password(&id, ada.user_id, None, &pw(NEW_PW), None)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::AccountDisabled), "{err:?}");
    finish(id, db).await;
}

async fn concurrent_uses_of_one_token_succeed_once(db: TestDb) {
    let (id, _) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let token = reset_token(&id, "ada@example.com").await;
    let run = |password: &'static str| {
        let (id, token) = (id.clone(), token.clone());
        tokio::spawn(async move { tokens::reset_password(&id, &token, &pw(password)).await })
    };
    let (a, b) = (run("first new password"), run("second new password"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let (winner, loser) = match (&a, &b) {
        (Ok(_), Err(e)) => ("first new password", e),
        (Err(e), Ok(_)) => ("second new password", e),
        other => panic!("expected exactly one success: {other:?}"),
    };
    assert!(matches!(loser, IdentityError::TokenUsed), "{loser:?}");
    assert!(password_is(&id, ada.user_id, winner).await);

    // The reset confirmed Ada's address, so verification is tried with Bob's.
    let bob = user(&id, "bob@example.com").await;
    let token = verification_token(&id, bob.user_id).await;
    let run = || {
        let (id, token) = (id.clone(), token.clone());
        tokio::spawn(async move { tokens::verify_email(&id, &token).await })
    };
    let (a, b) = (run(), run());
    let results = [a.await.unwrap(), b.await.unwrap()];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(IdentityError::TokenUsed))),
        "{results:?}"
    );
    finish(id, db).await;
}

// ---- password change ----

async fn change_password_keeps_only_the_given_session(db: TestDb) {
    let (id, _) = setup(&db).await;
    let mut ada = user(&id, "ada@example.com").await;
    ada.update_password_required = true;
    save(&id, &ada).await;
    let [s1, s2, s3] = [
        add_session(&id, ada.user_id).await,
        add_session(&id, ada.user_id).await,
        add_session(&id, ada.user_id).await,
    ];
    let reset = reset_token(&id, "ada@example.com").await;

    let err = tokens::change_password(
        &id,
        ada.user_id,
        Some(&pw("not my password")),
        &pw(NEW_PW),
        Some(s1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IdentityError::InvalidCredentials), "{err:?}");
    let err = tokens::change_password(&id, ada.user_id, Some(&pw(OLD_PW)), &pw("short"), Some(s1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Invalid {
                field: "password",
                ..
            }
        ),
        "{err:?}"
    );
    // Neither attempt changed anything.
    assert!(password_is(&id, ada.user_id, OLD_PW).await);
    for s in [s1, s2, s3] {
        assert!(!revoked(&id, s).await);
    }
    assert!(reload(&id, ada.user_id).await.update_password_required);

    tokens::change_password(&id, ada.user_id, Some(&pw(OLD_PW)), &pw(NEW_PW), Some(s1))
        .await
        .unwrap();
    assert!(password_is(&id, ada.user_id, NEW_PW).await);
    assert!(!reload(&id, ada.user_id).await.update_password_required);
    assert!(!revoked(&id, s1).await);
    assert!(revoked(&id, s2).await);
    assert!(revoked(&id, s3).await);
    // An outstanding reset link is void after a change.
    let err = tokens::reset_password(&id, &reset, &pw("attacker password"))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::TokenUsed), "{err:?}");

    // Without the current password (a forced change) and no session kept: all revoked.
    tokens::change_password(&id, ada.user_id, None, &pw(OLD_PW), None)
        .await
        .unwrap();
    assert!(revoked(&id, s1).await);
    assert!(password_is(&id, ada.user_id, OLD_PW).await);

    let err = tokens::change_password(&id, Uuid::now_v7(), None, &pw(NEW_PW), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    finish(id, db).await;
}

// ---- purge ----

async fn purge_deletes_tokens_expired_over_a_day(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    verification_token(&id, ada.user_id).await; // expires t0 + 24h
    reset_token(&id, "ada@example.com").await; // expires t0 + 1h
    assert_eq!(tokens::purge_expired(&id).await.unwrap(), 0);

    // The reset token expired a day and a second ago; the verification token an hour ago.
    clock.set(t0() + Duration::hours(1) + Duration::days(1) + Duration::seconds(1));
    assert_eq!(lintel::identity::housekeeping::run_once(&id).await.0, 1);
    assert!(
        stored_tokens(&id, TokenKind::PasswordReset, ada.user_id)
            .await
            .is_empty()
    );
    assert_eq!(
        stored_tokens(&id, TokenKind::EmailVerification, ada.user_id)
            .await
            .len(),
        1
    );
    // Exactly a day after expiry it is still kept.
    clock.set(t0() + Duration::hours(24) + Duration::days(1));
    assert_eq!(tokens::purge_expired(&id).await.unwrap(), 0);
    clock.advance(Duration::seconds(1));
    assert_eq!(tokens::purge_expired(&id).await.unwrap(), 1);
    assert!(
        stored_tokens(&id, TokenKind::EmailVerification, ada.user_id)
            .await
            .is_empty()
    );
    finish(id, db).await;
}

// ---- SMTP ----

/// What the scripted SMTP server received in one transaction.
#[derive(Debug, Default)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// A minimal SMTP server (RFC 5321 §4.3.2 replies: 220, 250, 354, 221) on 127.0.0.1:0, plain
/// text, no extensions. Each completed DATA is sent on the channel before its 250 reply.
async fn scripted_smtp() -> (u16, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 test.invalid ESMTP\r\n").await.unwrap();
                let mut cur = Received::default();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("MAIL FROM:") {
                        cur.mail_from = line[10..].trim().to_string();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        cur.rcpt_to.push(line[8..].trim().to_string());
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        w.write_all(b"354 end with .\r\n").await.unwrap();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            // RFC 5321 §4.5.2: undo dot-stuffing.
                            cur.data.push_str(l.strip_prefix('.').unwrap_or(&l));
                            cur.data.push_str("\r\n");
                        }
                        let _ = tx.send(std::mem::take(&mut cur));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        // EHLO/HELO (no extensions offered), RSET, NOOP.
                        b"250 test.invalid\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

async fn identity_with_env(db: &TestDb, env: &[(&str, &str)]) -> Identity {
    let config = test_config(db, env);
    let store = lintel::app::open_store(&config).await.unwrap();
    lintel::app::identity(&config, store, Arc::new(FixedClock::new(t0()))).unwrap()
}

async fn smtp_delivers_the_links(db: TestDb) {
    let (port, mut rx) = scripted_smtp().await;
    // `smtp://` without `?tls=` is plain SMTP in lettre's URL scheme (no TLS, no STARTTLS).
    let url = format!("smtp://127.0.0.1:{port}");
    let id = identity_with_env(&db, &[("LINTEL_MAIL_SMTP_URL", url.as_str())]).await;
    let ada = user(&id, "ada@example.com").await;

    tokens::request_password_reset(&id, "ada@example.com")
        .await
        .unwrap();
    // Reset mail goes out in the background.
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("delivered within 5 s")
        .expect("one message delivered");
    assert_eq!(got.rcpt_to, vec!["<ada@example.com>".to_string()]);
    assert_eq!(got.mail_from, "<no-reply@localhost>");
    let mail = parse_mail(&got.data);
    assert_eq!(mail.header("To"), Some("ada@example.com"));
    assert_eq!(mail.header("Subject"), Some("Reset your password"));
    let token = mail.token(&id, RESET_PASSWORD_PATH);
    tokens::reset_password(&id, &token, &pw(NEW_PW))
        .await
        .unwrap();

    // The reset confirmed the address, so verification needs another user.
    let bob = user(&id, "bob@example.com").await;
    tokens::send_email_verification(&id, bob.user_id)
        .await
        .unwrap();
    let got = rx.try_recv().expect("one message delivered");
    assert_eq!(got.rcpt_to, vec!["<bob@example.com>".to_string()]);
    let token = parse_mail(&got.data).token(&id, VERIFY_EMAIL_PATH);
    tokens::verify_email(&id, &token).await.unwrap();

    // Unknown addresses send nothing; nothing went to the dev outbox.
    tokens::request_password_reset(&id, "nobody@example.com")
        .await
        .unwrap();
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(300), rx.recv()).await;
    assert!(nothing.is_err(), "no message for an unknown address");
    assert!(outbox_files(&id).is_empty());
    assert!(reload(&id, ada.user_id).await.has_password);
    finish(id, db).await;
}

async fn failed_delivery_is_hidden_from_reset_requests(db: TestDb) {
    // A port with nothing listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("smtp://127.0.0.1:{port}");
    let id = identity_with_env(&db, &[("LINTEL_MAIL_SMTP_URL", url.as_str())]).await;
    let ada = user(&id, "ada@example.com").await;
    // Same answer as for an unknown address: the failure is logged, not returned.
    tokens::request_password_reset(&id, "ada@example.com")
        .await
        .unwrap();
    tokens::request_password_reset(&id, "nobody@example.com")
        .await
        .unwrap();
    // Verification is asked for by the user or an admin: there the failure is reported.
    let err = tokens::send_email_verification(&id, ada.user_id)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Internal(_)), "{err:?}");
    finish(id, db).await;
}

#[tokio::test]
async fn malformed_smtp_urls_never_echo_credentials() {
    let secret = "hunter2-smtp";
    let load = |url: &str| {
        Config::from_sources(
            None,
            [("LINTEL_MAIL_SMTP_URL".to_string(), url.to_string())],
        )
    };
    for bad in [
        format!("smtp://user:{secret}@"),
        format!("ftp://user:{secret}@mail.example"),
        format!("smtp://user:{secret}@mail.example:notaport"),
        format!("user:{secret}@mail.example"),
    ] {
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("`mail.smtp_url`"), "{e}");
        assert!(!e.contains(secret), "secret leaked: {e}");
    }
    // Passes the config check, rejected when the transport is built: still not echoed.
    let c = load(&format!("smtp://user:{secret}@mail.example?tls=bogus")).unwrap();
    assert!(!format!("{c:?}").contains(secret));
    let e = mailer::from_config(&c).err().unwrap().to_string();
    assert!(e.contains("mail.smtp_url"), "{e}");
    assert!(!e.contains(secret), "secret leaked: {e}");
}
