//! Product metrics (`metrics_events`: logins, sign-ups, SCIM provisioning, tokens issued per
//! minute, daily reports) and the Prometheus endpoint, on both backends.
use crate::helpers::{TestDb, identity_with_clock, test_config};
use crate::on_both_databases;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use lintel::app::App;
use lintel::clock::{Clock, FixedClock};
use lintel::config::Secret;
use lintel::http::{AppState, Router};
use lintel::identity::login::{LoginContext, LoginOutcome, authenticate, second_factor};
use lintel::identity::metrics::{
    self, DailyReport, LOGIN_FAILED, LOGIN_SUCCEEDED, METHOD_MFA, METHOD_PASSWORD,
    SCIM_PROVISIONED, ScimOperation, ScimResource, TOKENS_ISSUED, USER_SIGNED_UP,
};
use lintel::identity::users::NewUser;
use lintel::identity::{Identity, IdentityError, memberships, mfa, orgs, users};
use lintel::store;
use lintel::store::metrics::MetricsEvent;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

on_both_databases!(
    logins_are_recorded_with_outcome_and_method,
    signups_and_scim_provisioning_join_the_callers_transaction,
    tokens_are_aggregated_per_minute,
    two_nodes_flushing_the_same_minute_add_up,
    failed_flush_keeps_the_counts_and_the_flusher_flushes_on_stop,
    daily_active_users_and_login_counts_over_days_and_orgs,
    report_ranges_are_validated,
    prometheus_counts_requests_by_route_template,
);

const PW: &str = "correct horse battery staple";

fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn day(y: i32, mo: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, mo, d).unwrap()
}

async fn user(id: &Identity, email: &str, org_id: Option<Uuid>) -> Uuid {
    users::create(
        id,
        NewUser {
            email: email.into(),
            password: Some(Secret::new(PW.to_string())),
            org_id,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .0
    .user_id
}

/// Every event of a type on the clock's day ± a year (all orgs).
async fn events(id: &Identity, event_type: &str) -> Vec<MetricsEvent> {
    let today = id.clock.now().date_naive();
    metrics::list_events(
        id,
        event_type,
        None,
        today - Duration::days(180),
        today + Duration::days(180),
    )
    .await
    .unwrap()
}

async fn done(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

async fn logins_are_recorded_with_outcome_and_method(db: TestDb) {
    let clock = FixedClock::new(t(2026, 3, 1, 9, 0, 0));
    let id = identity_with_clock(&db, clock.clone()).await;
    let org = orgs::create(&id, "Acme", None).await.unwrap().org_id;
    let ada = user(&id, "ada@example.com", Some(org)).await;
    let ctx = LoginContext {
        org_id: Some(org),
        ..Default::default()
    };
    let pw = |s: &str| Secret::new(s.to_string());

    // A completed password login: success, with the user and the org.
    let out = authenticate(&id, "ada@example.com", &pw(PW), &ctx)
        .await
        .unwrap();
    assert!(matches!(out, LoginOutcome::Authenticated { .. }));
    // Wrong password and unknown email: failures (no user is named by the password step).
    for (email, password) in [("ada@example.com", "wrong"), ("nobody@example.com", PW)] {
        let e = authenticate(&id, email, &pw(password), &ctx)
            .await
            .unwrap_err();
        assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
    }
    let ok = events(&id, LOGIN_SUCCEEDED).await;
    assert_eq!(ok.len(), 1);
    assert_eq!(
        (ok[0].user_id, ok[0].org_id, ok[0].event_count),
        (Some(ada), Some(org), 1)
    );
    assert_eq!(ok[0].metadata.0, json!({ "method": METHOD_PASSWORD }));
    assert_eq!(ok[0].event_timestamp, clock.now());
    assert_eq!(ok[0].day, day(2026, 3, 1));
    let failed = events(&id, LOGIN_FAILED).await;
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| e.user_id.is_none()
        && e.org_id == Some(org)
        && e.metadata.0 == json!({ "method": METHOD_PASSWORD })));

    // With MFA the password step is not a login yet; the second factor decides it.
    let e = mfa::begin_totp_enrolment(&id, ada).await.unwrap();
    let seed = {
        let mut c = id.db.conn().await.unwrap();
        let device = store::mfa::get_device(&mut c, e.device_id)
            .await
            .unwrap()
            .unwrap();
        id.data_key.decrypt(&device.secret).unwrap()
    };
    let code_at = |step: u64| mfa::totp_code(&seed, step, 6).unwrap();
    let step = mfa::totp_step(clock.now());
    mfa::confirm_totp(&id, ada, e.device_id, &code_at(step))
        .await
        .unwrap();
    clock.advance(Duration::seconds(60));
    let out = authenticate(&id, "ada@example.com", &pw(PW), &ctx)
        .await
        .unwrap();
    assert!(matches!(out, LoginOutcome::MfaRequired { .. }));
    assert_eq!(events(&id, LOGIN_SUCCEEDED).await.len(), 1);
    assert_eq!(events(&id, LOGIN_FAILED).await.len(), 2);

    let step = mfa::totp_step(clock.now());
    let near: HashSet<String> = (step - 1..=step + 1).map(code_at).collect();
    let wrong = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap();
    let e = second_factor(&id, ada, &wrong, &ctx).await.unwrap_err();
    assert!(matches!(e, IdentityError::MfaCodeInvalid), "{e:?}");
    second_factor(&id, ada, &code_at(step), &ctx).await.unwrap();

    let mfa_ok: Vec<_> = events(&id, LOGIN_SUCCEEDED)
        .await
        .into_iter()
        .filter(|e| e.metadata.0 == json!({ "method": METHOD_MFA }))
        .collect();
    assert_eq!(mfa_ok.len(), 1);
    assert_eq!(
        (mfa_ok[0].user_id, mfa_ok[0].org_id),
        (Some(ada), Some(org))
    );
    let mfa_failed: Vec<_> = events(&id, LOGIN_FAILED)
        .await
        .into_iter()
        .filter(|e| e.metadata.0 == json!({ "method": METHOD_MFA }))
        .collect();
    assert_eq!(mfa_failed.len(), 1);
    assert_eq!(mfa_failed[0].user_id, Some(ada));

    // The report agrees: 2 completed logins (one user), 3 refused.
    let today = day(2026, 3, 1);
    assert_eq!(
        metrics::login_counts(&id, Some(org), today, today)
            .await
            .unwrap(),
        vec![(today, 2, 3)]
    );
    assert_eq!(
        metrics::daily_active_users(&id, Some(org), today, today)
            .await
            .unwrap(),
        vec![(today, 1)]
    );
    done(id, db).await;
}

async fn signups_and_scim_provisioning_join_the_callers_transaction(db: TestDb) {
    let clock = FixedClock::new(t(2026, 3, 1, 9, 0, 0));
    let id = identity_with_clock(&db, clock.clone()).await;
    let org = orgs::create(&id, "Acme", None).await.unwrap().org_id;
    let ada = user(&id, "ada@example.com", None).await;
    // users::create records its own signup (no org).
    let own = events(&id, USER_SIGNED_UP).await;
    assert_eq!(own.len(), 1);
    assert_eq!((own[0].user_id, own[0].org_id), (Some(ada), None));

    // Rolled back with the caller's transaction: nothing recorded.
    let mut tx = id.db.begin().await.unwrap();
    metrics::record_signup(&mut tx, &id, ada, Some(org))
        .await
        .unwrap();
    let client = Uuid::now_v7();
    metrics::record_scim_provisioning(
        &mut tx,
        &id,
        org,
        client,
        ScimResource::User,
        ScimOperation::Create,
    )
    .await
    .unwrap();
    drop(tx);
    assert_eq!(events(&id, USER_SIGNED_UP).await, own);
    assert!(events(&id, SCIM_PROVISIONED).await.is_empty());

    // Committed: one row each.
    let mut tx = id.db.begin().await.unwrap();
    metrics::record_signup(&mut tx, &id, ada, Some(org))
        .await
        .unwrap();
    metrics::record_scim_provisioning(
        &mut tx,
        &id,
        org,
        client,
        ScimResource::Group,
        ScimOperation::Patch,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let s: Vec<_> = events(&id, USER_SIGNED_UP)
        .await
        .into_iter()
        .filter(|e| e.org_id == Some(org))
        .collect();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].user_id, s[0].org_id), (Some(ada), Some(org)));
    assert_eq!(s[0].event_timestamp, clock.now());
    let p = events(&id, SCIM_PROVISIONED).await;
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].user_id, p[0].org_id), (None, Some(org)));
    assert_eq!(
        p[0].metadata.0,
        json!({ "client_id": client, "resource": "group", "operation": "patch" })
    );
    let report = metrics::daily_report(&id, Some(org), day(2026, 3, 1), day(2026, 3, 1))
        .await
        .unwrap();
    assert_eq!(report[0].signups, 1);
    done(id, db).await;
}

/// Token rows by (org, client, minute start) → count.
async fn token_rows(id: &Identity) -> BTreeMap<(Option<Uuid>, String, DateTime<Utc>), i64> {
    let rows = events(id, TOKENS_ISSUED).await;
    let n = rows.len();
    let map: BTreeMap<_, _> = rows
        .into_iter()
        .map(|e| {
            assert!(e.user_id.is_none());
            let client = e.metadata.0["client_id"].as_str().unwrap().to_string();
            ((e.org_id, client, e.event_timestamp), e.event_count)
        })
        .collect();
    assert_eq!(map.len(), n, "one row per (org, client, minute)");
    map
}

async fn tokens_are_aggregated_per_minute(db: TestDb) {
    let clock = FixedClock::new(t(2026, 3, 1, 12, 0, 10));
    let id = identity_with_clock(&db, clock.clone()).await;
    let org = orgs::create(&id, "Acme", None).await.unwrap().org_id;
    let m0 = t(2026, 3, 1, 12, 0, 0);

    for _ in 0..100 {
        metrics::count_token_issued(&id, Some(org), "web-app");
    }
    assert_eq!(id.metrics.pending(), 100);
    assert!(
        token_rows(&id).await.is_empty(),
        "nothing written before a flush"
    );
    assert_eq!(metrics::flush(&id).await.unwrap(), 100);
    assert_eq!(id.metrics.pending(), 0);
    assert_eq!(
        token_rows(&id).await,
        BTreeMap::from([((Some(org), "web-app".to_string(), m0), 100)])
    );
    // Nothing pending: a flush writes nothing.
    assert_eq!(metrics::flush(&id).await.unwrap(), 0);

    // Later in the same minute: added to the same row.
    clock.advance(Duration::seconds(49));
    for _ in 0..5 {
        metrics::count_token_issued(&id, Some(org), "web-app");
    }
    // Another client, and no org at all: rows of their own.
    metrics::count_token_issued(&id, Some(org), "cli");
    metrics::count_token_issued(&id, None, "web-app");
    // The next minute starts a new row.
    clock.advance(Duration::seconds(1));
    for _ in 0..3 {
        metrics::count_token_issued(&id, Some(org), "web-app");
    }
    // An org that does not exist (e.g. deleted before the flush) is written as none.
    metrics::count_token_issued(&id, Some(Uuid::now_v7()), "gone");
    assert_eq!(metrics::flush(&id).await.unwrap(), 11);
    let m1 = t(2026, 3, 1, 12, 1, 0);
    assert_eq!(
        token_rows(&id).await,
        BTreeMap::from([
            ((None, "gone".to_string(), m1), 1),
            ((None, "web-app".to_string(), m0), 1),
            ((Some(org), "cli".to_string(), m0), 1),
            ((Some(org), "web-app".to_string(), m0), 105),
            ((Some(org), "web-app".to_string(), m1), 3),
        ])
    );
    let today = day(2026, 3, 1);
    let report = metrics::daily_report(&id, Some(org), today, today)
        .await
        .unwrap();
    assert_eq!(report[0].tokens_issued, 109);
    done(id, db).await;
}

async fn two_nodes_flushing_the_same_minute_add_up(db: TestDb) {
    let clock = FixedClock::new(t(2026, 3, 1, 12, 0, 30));
    // Two handles with their own pools and accumulators: two nodes on one database.
    let a = identity_with_clock(&db, clock.clone()).await;
    let b = identity_with_clock(&db, clock.clone()).await;
    let org = orgs::create(&a, "Acme", None).await.unwrap().org_id;
    let clients = ["c1", "c2", "c3", "c4"];
    for round in 0..3 {
        for _ in 0..60 {
            for c in clients {
                metrics::count_token_issued(&a, Some(org), c);
            }
        }
        for _ in 0..40 {
            for c in clients.iter().rev() {
                metrics::count_token_issued(&b, Some(org), c);
            }
        }
        assert_eq!(a.metrics.pending(), 240);
        assert_eq!(b.metrics.pending(), 160);
        // Concurrent flushes of the same rows neither deadlock nor lose an update.
        let (ra, rb) = tokio::join!(metrics::flush(&a), metrics::flush(&b));
        assert_eq!((ra.unwrap(), rb.unwrap()), (240, 160));
        let rows = token_rows(&a).await;
        assert_eq!(rows.len(), 4);
        assert!(rows.values().all(|n| *n == 100 * (round + 1)), "{rows:?}");
    }
    b.db.close().await;
    done(a, db).await;
}

async fn failed_flush_keeps_the_counts_and_the_flusher_flushes_on_stop(db: TestDb) {
    let clock = FixedClock::new(t(2026, 3, 1, 12, 0, 30));
    let id = identity_with_clock(&db, clock.clone()).await;
    let broken = identity_with_clock(&db, clock.clone()).await;
    for _ in 0..7 {
        metrics::count_token_issued(&broken, None, "app");
    }
    broken.db.close().await;
    let e = metrics::flush(&broken).await.unwrap_err();
    assert!(matches!(e, IdentityError::Store(_)), "{e:?}");
    assert_eq!(
        broken.metrics.pending(),
        7,
        "counts kept for the next flush"
    );

    // A flusher with a long interval still writes what was counted when it stops.
    let flusher = metrics::spawn_flusher(id.clone(), std::time::Duration::from_secs(3600));
    for _ in 0..4 {
        metrics::count_token_issued(&id, None, "app");
    }
    flusher.stop().await;
    assert_eq!(id.metrics.pending(), 0);
    assert_eq!(
        token_rows(&id).await,
        BTreeMap::from([((None, "app".to_string(), t(2026, 3, 1, 12, 0, 0)), 4)])
    );
    done(id, db).await;
}

async fn daily_active_users_and_login_counts_over_days_and_orgs(db: TestDb) {
    let clock = FixedClock::new(t(2026, 2, 27, 8, 0, 0));
    let id = identity_with_clock(&db, clock.clone()).await;
    let a = orgs::create(&id, "Acme", None).await.unwrap().org_id;
    let b = orgs::create(&id, "Beta", None).await.unwrap().org_id;
    let u1 = user(&id, "u1@example.com", Some(a)).await;
    let u2 = user(&id, "u2@example.com", Some(a)).await;
    let u3 = user(&id, "u3@example.com", Some(b)).await;
    memberships::add(&id, b, u1, "member").await.unwrap();

    let login = |at: DateTime<Utc>, user: Option<Uuid>, org: Option<Uuid>, ok: bool| {
        let (id, clock) = (id.clone(), clock.clone());
        async move {
            clock.set(at);
            let mut c = id.db.conn().await.unwrap();
            metrics::record_login(&mut c, &id, user, org, ok, METHOD_PASSWORD)
                .await
                .unwrap();
        }
    };
    // Feb 28 (2026 is not a leap year): u1 twice and u2 in A, one failure in A; u3 and u1 in B.
    login(t(2026, 2, 28, 0, 0, 0), Some(u1), Some(a), true).await;
    login(t(2026, 2, 28, 13, 0, 0), Some(u1), Some(a), true).await;
    login(t(2026, 2, 28, 14, 0, 0), Some(u2), Some(a), true).await;
    login(t(2026, 2, 28, 15, 0, 0), None, Some(a), false).await;
    login(t(2026, 2, 28, 16, 0, 0), Some(u3), Some(b), true).await;
    login(t(2026, 2, 28, 17, 0, 0), Some(u1), Some(b), true).await;
    // Mar 1: nothing. Mar 2 23:59:59 and Mar 3 00:00:00 UTC are different days.
    login(t(2026, 3, 2, 23, 59, 59), Some(u1), Some(a), true).await;
    login(t(2026, 3, 3, 0, 0, 0), Some(u2), Some(a), true).await;
    login(t(2026, 3, 3, 0, 0, 1), Some(u2), Some(a), false).await;
    // A login for no org counts only in the all-orgs report.
    login(t(2026, 3, 3, 9, 0, 0), Some(u3), None, true).await;
    // Outside the range.
    login(t(2026, 2, 27, 23, 59, 59), Some(u3), Some(a), true).await;
    login(t(2026, 3, 4, 0, 0, 0), Some(u3), Some(a), true).await;

    let (from, to) = (day(2026, 2, 28), day(2026, 3, 3));
    let (d28, d1, d2, d3) = (from, day(2026, 3, 1), day(2026, 3, 2), to);
    assert_eq!(
        metrics::daily_active_users(&id, Some(a), from, to)
            .await
            .unwrap(),
        vec![(d28, 2), (d1, 0), (d2, 1), (d3, 1)]
    );
    assert_eq!(
        metrics::daily_active_users(&id, Some(b), from, to)
            .await
            .unwrap(),
        vec![(d28, 2), (d1, 0), (d2, 0), (d3, 0)]
    );
    // All orgs: u1 is counted once on the 28th although they signed in to both orgs.
    assert_eq!(
        metrics::daily_active_users(&id, None, from, to)
            .await
            .unwrap(),
        vec![(d28, 3), (d1, 0), (d2, 1), (d3, 2)]
    );
    assert_eq!(
        metrics::login_counts(&id, Some(a), from, to).await.unwrap(),
        vec![(d28, 3, 1), (d1, 0, 0), (d2, 1, 0), (d3, 1, 1)]
    );
    assert_eq!(
        metrics::login_counts(&id, Some(b), from, to).await.unwrap(),
        vec![(d28, 2, 0), (d1, 0, 0), (d2, 0, 0), (d3, 0, 0)]
    );
    assert_eq!(
        metrics::login_counts(&id, None, from, to).await.unwrap(),
        vec![(d28, 5, 1), (d1, 0, 0), (d2, 1, 0), (d3, 2, 1)]
    );
    // A one-day range, and the combined report.
    assert_eq!(
        metrics::login_counts(&id, Some(a), d2, d2).await.unwrap(),
        vec![(d2, 1, 0)]
    );
    assert_eq!(
        metrics::daily_report(&id, Some(a), d3, d3).await.unwrap(),
        vec![DailyReport {
            day: d3,
            active_users: 1,
            logins_succeeded: 1,
            logins_failed: 1,
            signups: 0,
            tokens_issued: 0,
        }]
    );
    // An org with no logins: every day is listed, as zero.
    let c = orgs::create(&id, "Gamma", None).await.unwrap().org_id;
    assert_eq!(
        metrics::daily_active_users(&id, Some(c), from, to)
            .await
            .unwrap(),
        vec![(d28, 0), (d1, 0), (d2, 0), (d3, 0)]
    );
    done(id, db).await;
}

async fn report_ranges_are_validated(db: TestDb) {
    let id = identity_with_clock(&db, FixedClock::new(t(2026, 3, 1, 0, 0, 0))).await;
    let bad = [
        (day(2026, 3, 2), day(2026, 3, 1)),   // backwards
        (day(2026, 1, 1), day(2027, 1, 2)),   // 367 days
        (day(2000, 1, 1), day(2026, 12, 31)), // years
    ];
    for (from, to) in bad {
        let errs = [
            metrics::daily_active_users(&id, None, from, to)
                .await
                .unwrap_err(),
            metrics::login_counts(&id, None, from, to)
                .await
                .unwrap_err(),
            metrics::daily_report(&id, None, from, to)
                .await
                .unwrap_err(),
            metrics::list_events(&id, LOGIN_SUCCEEDED, None, from, to)
                .await
                .unwrap_err(),
        ];
        for e in errs {
            assert!(
                matches!(e, IdentityError::Invalid { field: "to", .. }),
                "{from}..{to}: {e:?}"
            );
        }
    }
    // 366 days (a leap year) is the longest range allowed, one day the shortest.
    let year = metrics::daily_active_users(&id, None, day(2028, 1, 1), day(2028, 12, 31))
        .await
        .unwrap();
    assert_eq!(year.len(), 366);
    assert!(year.iter().all(|(_, n)| *n == 0));
    let one = metrics::login_counts(&id, None, day(2026, 3, 1), day(2026, 3, 1))
        .await
        .unwrap();
    assert_eq!(one, vec![(day(2026, 3, 1), 0, 0)]);
    done(id, db).await;
}

// ---------------------------------------------------------------------------------------
// Prometheus

/// The value of the sample `name{labels…}` whose labels include all of `want`.
fn sample(body: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let got: BTreeMap<&str, &str> = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        want.iter()
            .all(|(k, v)| got.get(k) == Some(v))
            .then(|| value.parse().ok())?
    })
}

async fn prometheus_counts_requests_by_route_template(db: TestDb) {
    let config = test_config(&db, &[("LINTEL_METRICS_BIND", "127.0.0.1:0")]);
    let app = App::build(config).await.unwrap();
    let addr = app.local_addr().unwrap();
    let metrics_addr = app.metrics_addr().expect("metrics listener bound");
    assert_ne!(metrics_addr, addr);
    let id = app.state.identity.clone();
    // A route of this test's own, so its counts are exact although other tests share the
    // process-wide recorder.
    let probe = format!("/metrics-probe-{}", Uuid::new_v4().simple());
    let template = format!("{probe}/items/{{item_id}}");
    let extra: Router<AppState> =
        Router::new().route(&template, axum::routing::get(|| async { "ok" }));
    let router = app.router_with(extra);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_with(router, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap() }
    };

    let scrape = || get(format!("http://{metrics_addr}/metrics"));
    let before = scrape().await.text().await.unwrap();
    let healthz = |body: &str| {
        sample(
            body,
            "http_requests_total",
            &[("method", "GET"), ("route", "/healthz"), ("status", "200")],
        )
        .unwrap_or(0.0)
    };

    for _ in 0..2 {
        assert_eq!(get(format!("http://{addr}/healthz")).await.status(), 200);
    }
    for item in ["zz-raw-id-1", "zz-raw-id-2", "zz-raw-id-3"] {
        let r = get(format!("http://{addr}{probe}/items/{item}")).await;
        assert_eq!(r.status(), 200);
    }
    let r = client
        .post(format!("http://{addr}{probe}/items/zz-raw-id-4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = get(format!("http://{addr}/no-such-route/zz-raw-id-5")).await;
    assert_eq!(r.status(), 404);
    // Not served on the main port.
    assert_eq!(get(format!("http://{addr}/metrics")).await.status(), 404);

    let r = scrape().await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("zz-raw-id"),
        "raw paths must not become labels:\n{body}"
    );
    let route = template.as_str();
    assert_eq!(
        sample(
            &body,
            "http_requests_total",
            &[("method", "GET"), ("route", route), ("status", "200")]
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "http_requests_total",
            &[("method", "POST"), ("route", route), ("status", "405")]
        ),
        Some(1.0)
    );
    assert!(healthz(&body) - healthz(&before) >= 2.0);
    assert!(
        sample(
            &body,
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "the unknown route and /metrics on the main port"
    );
    // The latency histogram: buckets, sum and count per route template.
    assert!(body.contains("# TYPE http_requests_total counter"));
    assert!(body.contains("# TYPE http_request_duration_seconds histogram"));
    let h = [("method", "GET"), ("route", route)];
    assert_eq!(
        sample(&body, "http_request_duration_seconds_count", &h),
        Some(3.0)
    );
    let inf = [("method", "GET"), ("route", route), ("le", "+Inf")];
    assert_eq!(
        sample(&body, "http_request_duration_seconds_bucket", &inf),
        Some(3.0)
    );
    let small = [("method", "GET"), ("route", route), ("le", "0.005")];
    assert!(sample(&body, "http_request_duration_seconds_bucket", &small).is_some());
    assert!(sample(&body, "http_request_duration_seconds_sum", &h).unwrap() >= 0.0);
    // Pool gauges (read at the scrape).
    assert!(sample(&body, "db_pool_connections", &[]).unwrap() >= 1.0);
    assert!(sample(&body, "db_pool_idle_connections", &[]).is_some());
    assert!(sample(&body, "db_pool_max_connections", &[]).unwrap() >= 1.0);
    // Only /metrics on the metrics port.
    let r = get(format!("http://{metrics_addr}/other")).await;
    assert_eq!(r.status(), 404);

    // Counted tokens are written when the server stops.
    metrics::count_token_issued(&id, None, "shutdown-app");
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    assert_eq!(id.metrics.pending(), 0);
    let rows = events(&id, TOKENS_ISSUED).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event_count, 1);
    done(id, db).await;
}
