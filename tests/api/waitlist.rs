//! The waitlist over the real store (both backends): idempotent joins, listing, invitations
//! mailed to the dev outbox, and accepting them (single use, distinct failures, atomic).
use crate::helpers::{TestDb, identity_with_clock};
use crate::on_both_databases;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use lintel::clock::FixedClock;
use lintel::config::Secret;
use lintel::identity::users::{self, NewUser};
use lintel::identity::{Identity, IdentityError, audit, waitlist};
use lintel::store;
use lintel::store::audit::{AuditLog, Filter};
use lintel::store::waitlist::{Invitation, Signup};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use uuid::Uuid;

on_both_databases!(
    joining_twice_keeps_one_row_and_one_audit_row,
    invalid_emails_are_refused_with_nothing_written,
    listing_pages_and_filters_by_invited,
    invite_mails_a_single_use_link_and_sets_invited_at,
    inviting_unknown_signups_or_existing_accounts_is_refused,
    a_newer_invitation_voids_the_older,
    accepting_creates_a_confirmed_user_once,
    expired_used_forged_and_malformed_tokens_are_distinct,
    accepting_for_an_existing_account_is_a_conflict_with_nothing_written,
    a_rejected_password_leaves_the_invitation_unused,
    concurrent_joins_of_one_address_make_one_row,
    concurrent_accepts_of_one_invitation_make_one_user,
);

const PW: &str = "a long enough password";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-04-01T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn setup(db: &TestDb) -> (Identity, FixedClock) {
    let clock = FixedClock::new(t0());
    (identity_with_clock(db, clock.clone()).await, clock)
}

async fn finish(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

fn pw(s: &str) -> Secret<String> {
    Secret::new(s.to_string())
}

async fn all_signups(id: &Identity) -> Vec<Signup> {
    waitlist::list(id, None, 500, None).await.unwrap()
}

async fn audit_rows(id: &Identity, action: &str) -> Vec<AuditLog> {
    let f = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    audit::list(id, &f, None, 1000).await.unwrap()
}

async fn invitations(id: &Identity, signup_id: Uuid) -> Vec<Invitation> {
    let mut c = id.db.conn().await.unwrap();
    store::waitlist::list_invitations(&mut c, signup_id)
        .await
        .unwrap()
}

async fn user_count(id: &Identity) -> usize {
    users::list(id, None, 1000).await.unwrap().len()
}

fn sha256_hex(token: &str) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap();
    hex::encode(Sha256::digest(raw))
}

// ---- the dev outbox ----

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

/// Headers (unfolded) and body (decoded per Content-Transfer-Encoding, RFC 2045 §6).
fn parse_mail(raw: &str) -> (String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let cte = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-transfer-encoding:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "7bit".into());
    let body = match cte.as_str() {
        "7bit" | "8bit" => body.to_string(),
        "quoted-printable" => body
            .replace("=\r\n", "")
            .replace("=3D", "=")
            .replace("=\n", ""),
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
    (head, body)
}

/// Invites and returns the token of the one new message, checking its recipient and link.
async fn invite_and_read_token(id: &Identity, signup: &Signup) -> String {
    let before = outbox_files(id).len();
    waitlist::invite(id, signup.signup_id).await.unwrap();
    let files = outbox_files(id);
    assert_eq!(files.len(), before + 1, "{files:?}");
    let (head, body) = parse_mail(&std::fs::read_to_string(files.last().unwrap()).unwrap());
    assert!(head.contains(&format!("To: {}", signup.email)), "{head}");
    let prefix = format!(
        "{}/signup?invitation=",
        id.config.issuer.as_str().trim_end_matches('/')
    );
    let start = body
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {body:?}"))
        + prefix.len();
    let token: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "{token}");
    token
}

async fn accept(id: &Identity, token: &str) -> Result<store::users::User, IdentityError> {
    waitlist::accept_invitation(id, token, Some(&pw(PW)), Some("Ada"), Some("Lovelace")).await
}

// ---- tests ----

async fn joining_twice_keeps_one_row_and_one_audit_row(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let first = waitlist::join(&id, "  Ada@Example.COM ").await.unwrap();
    assert_eq!(first.email, "ada@example.com");
    assert!(!first.invited);
    assert_eq!(first.invited_at, None);
    assert_eq!(first.created_at, t0());
    clock.advance(Duration::minutes(5));
    let again = waitlist::join(&id, "ada@example.com").await.unwrap();
    assert_eq!(again, first);
    assert_eq!(all_signups(&id).await, vec![first.clone()]);
    let rows = audit_rows(&id, "waitlist.joined").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].object_id.as_deref(),
        Some(&*first.signup_id.to_string())
    );
    assert_eq!(rows[0].details.0["email"], "ada@example.com");
    // Another address is another row.
    let other = waitlist::join(&id, "bob@example.com").await.unwrap();
    assert_ne!(other.signup_id, first.signup_id);
    assert_eq!(audit_rows(&id, "waitlist.joined").await.len(), 2);
    finish(id, db).await;
}

async fn invalid_emails_are_refused_with_nothing_written(db: TestDb) {
    let (id, _) = setup(&db).await;
    for bad in [
        "",
        "ada",
        "ada@",
        "@example.com",
        "a da@example.com",
        "ada@example",
    ] {
        let e = waitlist::join(&id, bad).await.unwrap_err();
        assert!(
            matches!(e, IdentityError::Invalid { field: "email", .. }),
            "{bad}: {e:?}"
        );
    }
    assert!(all_signups(&id).await.is_empty());
    assert!(audit_rows(&id, "waitlist.joined").await.is_empty());
    finish(id, db).await;
}

async fn listing_pages_and_filters_by_invited(db: TestDb) {
    let (id, _) = setup(&db).await;
    let mut joined = Vec::new();
    for e in ["a@example.com", "b@example.com", "c@example.com"] {
        joined.push(waitlist::join(&id, e).await.unwrap());
    }
    waitlist::invite(&id, joined[1].signup_id).await.unwrap();
    let page1 = waitlist::list(&id, None, 2, None).await.unwrap();
    assert_eq!(
        page1.iter().map(|s| &s.email).collect::<Vec<_>>(),
        ["a@example.com", "b@example.com"]
    );
    let page2 = waitlist::list(&id, Some(page1[1].signup_id), 2, None)
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|s| &s.email).collect::<Vec<_>>(),
        ["c@example.com"]
    );
    let invited = waitlist::list(&id, None, 10, Some(true)).await.unwrap();
    assert_eq!(
        invited.iter().map(|s| &s.email).collect::<Vec<_>>(),
        ["b@example.com"]
    );
    let waiting = waitlist::list(&id, None, 10, Some(false)).await.unwrap();
    assert_eq!(
        waiting.iter().map(|s| &s.email).collect::<Vec<_>>(),
        ["a@example.com", "c@example.com"]
    );
    finish(id, db).await;
}

async fn invite_mails_a_single_use_link_and_sets_invited_at(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let s = waitlist::join(&id, "ada@example.com").await.unwrap();
    clock.advance(Duration::hours(2));
    let token = invite_and_read_token(&id, &s).await;
    let stored = waitlist::get(&id, s.signup_id).await.unwrap();
    assert!(stored.invited);
    assert_eq!(stored.invited_at, Some(t0() + Duration::hours(2)));
    // Only the hash is stored; the invitation expires after `waitlist.invitation_ttl`.
    let inv = invitations(&id, s.signup_id).await;
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].token_hash, sha256_hex(&token));
    assert_ne!(inv[0].token_hash, token);
    assert_eq!(
        inv[0].expires_at - inv[0].created_at,
        Duration::from_std(id.config.waitlist.invitation_ttl).unwrap()
    );
    assert_eq!(inv[0].used_at, None);
    let rows = audit_rows(&id, "waitlist.invited").await;
    assert_eq!(rows.len(), 1);
    let d = &rows[0].details.0;
    assert_eq!(d["invited"]["after"], true);
    assert_eq!(d["email"], "ada@example.com");
    assert!(
        !d.to_string().contains(&token),
        "the token is never audited"
    );
    finish(id, db).await;
}

async fn inviting_unknown_signups_or_existing_accounts_is_refused(db: TestDb) {
    let (id, _) = setup(&db).await;
    let e = waitlist::invite(&id, Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e:?}");
    let s = waitlist::join(&id, "taken@example.com").await.unwrap();
    users::create(
        &id,
        NewUser {
            email: "Taken@Example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = waitlist::invite(&id, s.signup_id).await.unwrap_err();
    assert!(
        matches!(&e, IdentityError::Conflict { field, .. } if field == "email"),
        "{e:?}"
    );
    assert!(!waitlist::get(&id, s.signup_id).await.unwrap().invited);
    assert!(invitations(&id, s.signup_id).await.is_empty());
    assert!(outbox_files(&id).is_empty());
    assert!(audit_rows(&id, "waitlist.invited").await.is_empty());
    finish(id, db).await;
}

async fn a_newer_invitation_voids_the_older(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let s = waitlist::join(&id, "ada@example.com").await.unwrap();
    let old = invite_and_read_token(&id, &s).await;
    clock.advance(Duration::hours(1));
    let new = invite_and_read_token(&id, &s).await;
    assert_ne!(old, new);
    assert_eq!(
        waitlist::get(&id, s.signup_id).await.unwrap().invited_at,
        Some(t0() + Duration::hours(1))
    );
    assert!(matches!(
        accept(&id, &old).await,
        Err(IdentityError::TokenUsed)
    ));
    let u = accept(&id, &new).await.unwrap();
    assert_eq!(u.email, "ada@example.com");
    finish(id, db).await;
}

async fn accepting_creates_a_confirmed_user_once(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let s = waitlist::join(&id, "ada@example.com").await.unwrap();
    let token = invite_and_read_token(&id, &s).await;
    clock.advance(Duration::days(1));
    let u = accept(&id, &token).await.unwrap();
    assert_eq!(u.email, "ada@example.com");
    assert!(u.email_confirmed);
    assert!(u.has_password);
    assert!(u.enabled);
    assert_eq!(u.first_name.as_deref(), Some("Ada"));
    assert_eq!(u.last_name.as_deref(), Some("Lovelace"));
    // Stored as returned, with a password that verifies.
    let stored = users::get(&id, u.user_id).await.unwrap();
    assert_eq!(stored, u);
    let phc = {
        let mut c = id.db.conn().await.unwrap();
        store::users::password_hash(&mut c, u.user_id)
            .await
            .unwrap()
            .unwrap()
    };
    assert!(id.passwords.verify(&pw(PW), &phc).await.unwrap());
    let inv = invitations(&id, s.signup_id).await;
    assert_eq!(inv[0].used_at, Some(t0() + Duration::days(1)));
    assert_eq!(inv[0].user_id, Some(u.user_id));
    let rows = audit_rows(&id, "user.created").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].object_id.as_deref(), Some(&*u.user_id.to_string()));
    assert_eq!(rows[0].details.0["via"], "waitlist_invitation");
    // Once only.
    assert!(matches!(
        accept(&id, &token).await,
        Err(IdentityError::TokenUsed)
    ));
    assert_eq!(user_count(&id).await, 1);
    assert_eq!(audit_rows(&id, "user.created").await.len(), 1);

    // Without a password or names, the account has none.
    let s2 = waitlist::join(&id, "bob@example.com").await.unwrap();
    let t2 = invite_and_read_token(&id, &s2).await;
    let u2 = waitlist::accept_invitation(&id, &t2, None, None, Some("  "))
        .await
        .unwrap();
    assert!(!u2.has_password);
    assert!(u2.email_confirmed);
    assert_eq!(u2.last_name, None);
    finish(id, db).await;
}

async fn expired_used_forged_and_malformed_tokens_are_distinct(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let a = waitlist::join(&id, "ada@example.com").await.unwrap();
    let b = waitlist::join(&id, "bob@example.com").await.unwrap();
    let ta = invite_and_read_token(&id, &a).await;
    let ttl = Duration::from_std(id.config.waitlist.invitation_ttl).unwrap();
    clock.advance(ttl - Duration::seconds(1));
    let tb = invite_and_read_token(&id, &b).await;
    accept(&id, &tb).await.unwrap();
    // `a`'s invitation is one second from expiry; at expiry it is refused.
    clock.advance(Duration::seconds(1));
    assert!(matches!(
        accept(&id, &ta).await,
        Err(IdentityError::TokenExpired)
    ));
    assert!(matches!(
        accept(&id, &tb).await,
        Err(IdentityError::TokenUsed)
    ));
    // Well-formed but never issued.
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    assert!(matches!(
        accept(&id, &forged).await,
        Err(IdentityError::TokenInvalid)
    ));
    for bad in [
        "",
        "abc",
        &format!("{forged}="),
        &forged[..42],
        "!".repeat(43).as_str(),
    ] {
        assert!(
            matches!(accept(&id, bad).await, Err(IdentityError::TokenInvalid)),
            "{bad}"
        );
    }
    // Only `b` got an account.
    assert_eq!(user_count(&id).await, 1);
    finish(id, db).await;
}

async fn accepting_for_an_existing_account_is_a_conflict_with_nothing_written(db: TestDb) {
    let (id, _) = setup(&db).await;
    let s = waitlist::join(&id, "ada@example.com").await.unwrap();
    let token = invite_and_read_token(&id, &s).await;
    // The address gets an account some other way after the invitation was sent.
    let (existing, _) = users::create(
        &id,
        NewUser {
            email: "ADA@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = accept(&id, &token).await.unwrap_err();
    assert!(
        matches!(&e, IdentityError::Conflict { field, .. } if field == "email"),
        "{e:?}"
    );
    assert_eq!(
        users::list(&id, None, 10).await.unwrap(),
        vec![existing.clone()]
    );
    let inv = invitations(&id, s.signup_id).await;
    assert_eq!(inv[0].used_at, None, "the invitation stays unused");
    assert_eq!(inv[0].user_id, None);
    // Only the existing account's own creation is in the log.
    let created = audit_rows(&id, "user.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].object_id.as_deref(),
        Some(existing.user_id.to_string().as_str())
    );
    // Once the account is gone, the same link works.
    users::delete(&id, existing.user_id).await.unwrap();
    accept(&id, &token).await.unwrap();
    finish(id, db).await;
}

async fn a_rejected_password_leaves_the_invitation_unused(db: TestDb) {
    let (id, _) = setup(&db).await;
    let s = waitlist::join(&id, "ada@example.com").await.unwrap();
    let token = invite_and_read_token(&id, &s).await;
    let e = waitlist::accept_invitation(&id, &token, Some(&pw("short")), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IdentityError::Invalid {
                field: "password",
                ..
            }
        ),
        "{e:?}"
    );
    let e = waitlist::accept_invitation(&id, &token, None, Some(&"x".repeat(300)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IdentityError::Invalid {
                field: "first_name",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(user_count(&id).await, 0);
    assert_eq!(invitations(&id, s.signup_id).await[0].used_at, None);
    accept(&id, &token).await.unwrap();
    finish(id, db).await;
}

async fn concurrent_joins_of_one_address_make_one_row(db: TestDb) {
    let (id, _) = setup(&db).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let id = id.clone();
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            tokio::spawn(async move { waitlist::join(&id, email).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().signup_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(all_signups(&id).await.len(), 1);
    assert_eq!(audit_rows(&id, "waitlist.joined").await.len(), 1);
    finish(id, db).await;
}

async fn concurrent_accepts_of_one_invitation_make_one_user(db: TestDb) {
    let (id, _) = setup(&db).await;
    let s = waitlist::join(&id, "ada@example.com").await.unwrap();
    let token = invite_and_read_token(&id, &s).await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (id, token) = (id.clone(), token.clone());
            tokio::spawn(async move { accept(&id, &token).await })
        })
        .collect();
    let (mut ok, mut used) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(IdentityError::TokenUsed) => used += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ok, used), (1, 3));
    assert_eq!(user_count(&id).await, 1);
    assert_eq!(audit_rows(&id, "user.created").await.len(), 1);
    finish(id, db).await;
}
