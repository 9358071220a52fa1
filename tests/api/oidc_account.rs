//! The hosted account pages around login, on both backends: forgot / reset password,
//! email verification, sign-up from a waitlist invitation, and the account page (change
//! password, TOTP enrolment with recovery codes, sessions).
use crate::helpers::TestApp;
use crate::oidc::{Browser, PASSWORD, auth_path, hidden, login_for_code, setup, submit_login};
use crate::on_both_backends;
use base64::Engine;
use lintel::identity::{tokens, users, waitlist};

on_both_backends!(
    forgot_and_reset_password,
    email_verification_landing,
    signup_from_a_waitlist_invitation,
    account_page_password_totp_and_sessions,
);

/// The token of the newest mail's `{path}?{param}=` link (dev outbox; some mails are sent
/// in the background, so this waits up to 10 s for one).
async fn link_token(app: &TestApp, path: &str, param: &str) -> String {
    let dir = app.state.config.data_dir.join("outbox");
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for _ in 0..200 {
        files = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        if !files.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let raw = std::fs::read_to_string(files.last().expect("a mail")).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: base64")
    {
        let compact: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.replace("=\r\n", "").replace("=3D", "=")
    };
    let marker = format!("{path}?{param}=");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in {body}"))
        + marker.len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn forgot_and_reset_password(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    let page = b.get("/forgot-password").await;
    assert_eq!(page.status, 200);
    let csrf = hidden(&page.body, "csrf");
    let unknown = b
        .post(
            "/forgot-password",
            &[("email", "nobody@example.com"), ("csrf", &csrf)],
        )
        .await;
    let known = b
        .post(
            "/forgot-password",
            &[("email", s.email.as_str()), ("csrf", &csrf)],
        )
        .await;
    assert_eq!((unknown.status, known.status), (200, 200));
    assert_eq!(
        unknown.body, known.body,
        "the answer does not tell accounts apart"
    );
    let token = link_token(&app, tokens::RESET_PASSWORD_PATH, "token").await;
    let form = b
        .get(&format!("{}?token={token}", tokens::RESET_PASSWORD_PATH))
        .await;
    assert_eq!(form.status, 200);
    assert_eq!(hidden(&form.body, "token"), token);
    let csrf = hidden(&form.body, "csrf");
    let new = "a fresh password 42";
    let done = b
        .post(
            tokens::RESET_PASSWORD_PATH,
            &[
                ("token", &token),
                ("new_password", new),
                ("confirm_password", new),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let again = b
        .post(
            tokens::RESET_PASSWORD_PATH,
            &[
                ("token", &token),
                ("new_password", new),
                ("confirm_password", new),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already been used"), "{}", again.body);
    // The new password signs in; the old one does not.
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    assert_eq!(
        submit_login(&mut b, &page, &s.email, PASSWORD).await.status,
        401
    );
    assert_eq!(submit_login(&mut b, &page, &s.email, new).await.status, 303);
    app.finish().await;
}

async fn email_verification_landing(app: TestApp) {
    let s = setup(&app, true).await;
    tokens::send_email_verification(&app.state.identity, s.user_id)
        .await
        .unwrap();
    let token = link_token(&app, tokens::VERIFY_EMAIL_PATH, "token").await;
    let mut b = Browser::new(&app);
    let ok = b
        .get(&format!("{}?token={token}", tokens::VERIFY_EMAIL_PATH))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        users::get(&app.state.identity, s.user_id)
            .await
            .unwrap()
            .email_confirmed
    );
    let again = b
        .get(&format!("{}?token={token}", tokens::VERIFY_EMAIL_PATH))
        .await;
    assert_eq!(again.status, 400);
    let bad = b
        .get(&format!("{}?token=nope", tokens::VERIFY_EMAIL_PATH))
        .await;
    assert_eq!(bad.status, 400);
    app.finish().await;
}

async fn signup_from_a_waitlist_invitation(app: TestApp) {
    let s = setup(&app, true).await;
    let id = &app.state.identity;
    let signup = waitlist::join(id, "newcomer@example.com").await.unwrap();
    waitlist::invite(id, signup.signup_id).await.unwrap();
    let token = link_token(&app, waitlist::SIGNUP_PATH, "invitation").await;
    let mut b = Browser::new(&app);
    assert_eq!(
        b.get(waitlist::SIGNUP_PATH).await.status,
        404,
        "by invitation only"
    );
    let form = b
        .get(&format!("{}?invitation={token}", waitlist::SIGNUP_PATH))
        .await;
    assert_eq!(form.status, 200);
    let csrf = hidden(&form.body, "csrf");
    let pw = "newcomer password 1";
    let done = b
        .post(
            waitlist::SIGNUP_PATH,
            &[
                ("invitation", &token),
                ("first_name", "New"),
                ("new_password", pw),
                ("confirm_password", pw),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(done.status, 201, "{}", done.body);
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    assert_eq!(
        submit_login(&mut b, &page, "newcomer@example.com", pw)
            .await
            .status,
        303
    );
    let reuse = b
        .post(
            waitlist::SIGNUP_PATH,
            &[
                ("invitation", &token),
                ("new_password", pw),
                ("confirm_password", pw),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(reuse.status, 400);
    app.finish().await;
}

async fn account_page_password_totp_and_sessions(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    assert_eq!(b.get("/account").await.status, 401, "signed out");
    login_for_code(&mut b, &s, &[]).await;
    let page = b.get("/account").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&s.email) && page.body.contains("(this browser)"));
    let csrf = hidden(&page.body, "csrf");
    // Change password: the current one is checked.
    let wrong = b
        .post(
            "/account/password",
            &[
                ("current_password", "not it at all"),
                ("new_password", "another secret 9"),
                ("confirm_password", "another secret 9"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400);
    let ok = b
        .post(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "another secret 9"),
                ("confirm_password", "another secret 9"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("password was changed"));
    // TOTP enrolment, then the recovery codes once.
    let enrol = b.post("/account/totp", &[("csrf", &csrf)]).await;
    assert_eq!(enrol.status, 200, "{}", enrol.body);
    assert!(enrol.body.contains("<svg"), "an inline QR code");
    let secret = hidden(&enrol.body, "secret");
    let device = hidden(&enrol.body, "device_id");
    let seed = totp_rs::Secret::try_from_base32(&secret).unwrap();
    let seed: Vec<u8> = AsRef::<[u8]>::as_ref(&seed).to_vec();
    let step =
        lintel::identity::mfa::totp_step(lintel::clock::Clock::now(&*app.state.identity.clock));
    let code = lintel::identity::mfa::totp_code(&seed, step, 6).unwrap();
    let bad = b
        .post(
            "/account/totp/confirm",
            &[("device_id", &device), ("code", "000000"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(bad.status, 400);
    let codes = b
        .post(
            "/account/totp/confirm",
            &[("device_id", &device), ("code", &code), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(codes.status, 200, "{}", codes.body);
    assert!(codes.body.matches("<code>").count() >= 8, "{}", codes.body);
    assert!(
        users::get(&app.state.identity, s.user_id)
            .await
            .unwrap()
            .mfa_enabled
    );
    // Forms need the CSRF token.
    let forged = b
        .post("/account/totp", &[("csrf", "x".repeat(43).as_str())])
        .await;
    assert_eq!(forged.status, 403);
    // Revoking this browser's session signs it out.
    let page = b.get("/account").await;
    assert!(page.body.contains("An authenticator app is enrolled"));
    let sid = hidden(&page.body, "session_id");
    let r = b
        .post(
            "/account/sessions/revoke",
            &[("session_id", &sid), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(b.get("/account").await.status, 401);
    // The sign-in page on its own leads back to the account page (with the MFA step).
    let page = b.get("/login").await;
    assert_eq!(page.status, 200);
    let mfa = submit_login(&mut b, &page, &s.email, "another secret 9").await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert!(mfa.body.contains(r#"name="code""#));
    let recovery = codes
        .body
        .split("<code>")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap()
        .to_string();
    let (csrf, auth, pending) = (
        hidden(&mfa.body, "csrf"),
        hidden(&mfa.body, "auth"),
        hidden(&mfa.body, "pending"),
    );
    let done = b
        .post(
            "/login/mfa",
            &[
                ("code", recovery.as_str()),
                ("csrf", &csrf),
                ("auth", &auth),
                ("pending", &pending),
            ],
        )
        .await;
    assert_eq!(
        (done.status, done.location.as_deref()),
        (303, Some("/account")),
        "{}",
        done.body
    );
    assert_eq!(b.get("/account").await.status, 200);
    app.finish().await;
}

async fn spawn_with_signup(mode: &str, name: &str) -> TestApp {
    crate::helpers::spawn_app_with(
        crate::helpers::Backend::Sqlite,
        name,
        crate::helpers::Spawn {
            env: &[("LINTEL_SIGNUP_MODE", mode)],
            extra: None,
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_signup_creates_an_account_and_sends_verification() {
    let app = spawn_with_signup("open", "oidc_account::open_signup").await;
    let mut b = Browser::new(&app);
    let form = b.get(waitlist::SIGNUP_PATH).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains(r#"name="email""#));
    let csrf = hidden(&form.body, "csrf");
    let pw = "open signup pass 1";
    let done = b
        .post(
            waitlist::SIGNUP_PATH,
            &[
                ("email", "open@example.com"),
                ("new_password", pw),
                ("confirm_password", pw),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(done.status, 201, "{}", done.body);
    let u = users::find_by_email(&app.state.identity, "open@example.com")
        .await
        .unwrap();
    assert!(!u.email_confirmed);
    let token = link_token(&app, tokens::VERIFY_EMAIL_PATH, "token").await;
    assert_eq!(
        b.get(&format!("{}?token={token}", tokens::VERIFY_EMAIL_PATH))
            .await
            .status,
        200
    );
    // The same address again: refused.
    let again = b
        .post(
            waitlist::SIGNUP_PATH,
            &[
                ("email", "open@example.com"),
                ("new_password", pw),
                ("confirm_password", pw),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(again.status, 400);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_signup_refuses_even_invitations() {
    let app = spawn_with_signup("closed", "oidc_account::closed_signup").await;
    let id = &app.state.identity;
    let signup = waitlist::join(id, "late@example.com").await.unwrap();
    waitlist::invite(id, signup.signup_id).await.unwrap();
    let token = link_token(&app, waitlist::SIGNUP_PATH, "invitation").await;
    let mut b = Browser::new(&app);
    assert_eq!(
        b.get(&format!("{}?invitation={token}", waitlist::SIGNUP_PATH))
            .await
            .status,
        404
    );
    let page = b.get("/forgot-password").await;
    let csrf = hidden(&page.body, "csrf");
    let r = b
        .post(
            waitlist::SIGNUP_PATH,
            &[
                ("invitation", &token),
                ("new_password", "x y z w v u t"),
                ("confirm_password", "x y z w v u t"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(users::find_by_email(id, "late@example.com").await.is_err());
    app.finish().await;
}
