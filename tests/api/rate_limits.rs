//! Rate limiting: policies and assignments (audited), config defaults, exact counting under
//! concurrency (one node and two nodes sharing a database), fixed-window rollover, the
//! per-node fast path, purge, and the HTTP layer (429 + headers).
use crate::helpers::{Backend, TestDb, identity_with_clock, identity_with_config, test_config};
use crate::on_both_databases;
use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Duration, TimeZone, Utc};
use lintel::app::App;
use lintel::clock::FixedClock;
use lintel::http::rate_limit::layer_for;
use lintel::http::{AppState, Router};
use lintel::identity::rate_limit::{
    self as rl, Decision, Family, PolicyUpdate, RateKey, Scope, Subjects, Target,
};
use lintel::identity::users::NewUser;
use lintel::identity::{Identity, IdentityError, audit, orgs, users};
use lintel::store::audit::Filter;
use lintel::store::{self, Conn};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use uuid::Uuid;

on_both_databases!(
    policies_are_validated_and_audited,
    defaults_follow_the_config_idempotently,
    concurrent_checks_allow_exactly_the_limit,
    two_nodes_together_never_exceed_the_limit,
    fast_path_denies_from_memory_without_writing,
    policy_changes_on_another_node_apply_within_the_ttl,
    windows_roll_over_on_the_clock,
    most_specific_policy_applies,
    org_scoped_policy_is_shared_by_the_org,
    assignments_are_checked_and_audited,
    bad_keys_are_rejected,
    purge_deletes_only_ended_windows,
    purger_task_purges_in_the_background,
    reservations_save_statements_and_never_exceed_the_limit,
);

/// 00:00:10 into an hour: a 60 s window runs from :00:00 to :01:00 (50 s left).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 10).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn node(db: &TestDb, clock: &FixedClock, env: &[(&str, &str)]) -> Identity {
    let id = identity_with_config(db, clock.clone(), env).await;
    rl::ensure_default_policies(&id).await.unwrap();
    id
}

async fn conn(id: &Identity) -> Conn {
    id.db.conn().await.unwrap()
}

async fn audit_actions(id: &Identity) -> Vec<String> {
    audit::list(id, &Filter::default(), None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect()
}

/// Fires `n` concurrent checks of `key`, spread round-robin over `nodes`.
async fn burst(nodes: &[Identity], key: &RateKey, n: usize) -> Vec<Decision> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let id = nodes[i % nodes.len()].clone();
        let key = key.clone();
        set.spawn(async move { rl::check(&id, &key).await.unwrap() });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

fn allowed(ds: &[Decision]) -> usize {
    ds.iter().filter(|d| d.allowed).count()
}

async fn user(id: &Identity, email: &str, org: Option<Uuid>) -> Uuid {
    let (u, _) = users::create(
        id,
        NewUser {
            email: email.into(),
            org_id: org,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    u.user_id
}

/// An `api_keys` row written directly (the API-key module is not part of this work).
async fn api_key(id: &Identity, user_id: Uuid) -> Uuid {
    let key_id = Uuid::now_v7();
    let mut c = conn(id).await;
    let prefix = key_id.simple().to_string();
    lintel::with_conn!(&mut c, |c| sqlx::query(
        "INSERT INTO api_keys (api_key_id, user_id, key_hash, created_at, key_prefix)
         VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(key_id)
    .bind(user_id)
    .bind(format!("hash-{prefix}"))
    .bind(id.clock.now())
    .bind(&prefix[20..])
    .execute(&mut *c)
    .await
    .unwrap()
    .rows_affected());
    key_id
}

async fn counter(id: &Identity, policy: &str, subject: &str, window_secs: u32) -> i32 {
    let mut c = conn(id).await;
    let p = store::rate_limits::get_policy_by_name(&mut c, policy)
        .await
        .unwrap()
        .unwrap();
    let (start, _) = rl::window_bounds(id.clock.now(), window_secs);
    store::rate_limits::count(&mut c, p.policy_id, subject, start)
        .await
        .unwrap()
}

async fn policies_are_validated_and_audited(db: TestDb) {
    let id = identity_with_clock(&db, FixedClock::new(t0())).await;
    let p = rl::create_policy(&id, " gold ", Scope::User, 500, 60, Some("paying users"))
        .await
        .unwrap();
    assert_eq!(
        (
            p.name.as_str(),
            p.scope.as_str(),
            p.limit_count,
            p.window_sec
        ),
        ("gold", "user", 500, 60)
    );
    assert_eq!(p.description.as_deref(), Some("paying users"));
    assert_eq!(rl::get_policy(&id, p.policy_id).await.unwrap(), p);

    let err = rl::create_policy(&id, "gold", Scope::Org, 1, 1, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "name"),
        "{err:?}"
    );
    for (name, limit, window, field) in [
        ("", 1, 1, "name"),
        ("default.mine", 1, 1, "name"),
        ("x", 0, 60, "limit_count"),
        ("x", 1_000_000_001, 60, "limit_count"),
        ("x", 10, 0, "window_sec"),
        ("x", 10, 31_536_001, "window_sec"),
    ] {
        let err = rl::create_policy(&id, name, Scope::Ip, limit, window, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IdentityError::Invalid { field: f, .. } if *f == field),
            "{name} {limit} {window}: {err:?}"
        );
    }
    assert!(matches!(
        Scope::parse("tenant"),
        Err(IdentityError::Invalid { field: "scope", .. })
    ));

    let silver = rl::create_policy(&id, "silver", Scope::Org, 10, 60, None)
        .await
        .unwrap();
    let err = rl::update_policy(
        &id,
        silver.policy_id,
        PolicyUpdate {
            name: Some("gold".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IdentityError::Conflict { .. }), "{err:?}");
    let updated = rl::update_policy(
        &id,
        p.policy_id,
        PolicyUpdate {
            limit_count: Some(900),
            scope: Some(Scope::ApiKey),
            description: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            updated.limit_count,
            updated.scope.as_str(),
            &updated.description
        ),
        (900, "api_key", &None)
    );
    let listed = rl::list_policies(&id).await.unwrap();
    assert!(listed.contains(&updated) && listed.contains(&silver));

    rl::delete_policy(&id, silver.policy_id).await.unwrap();
    assert!(matches!(
        rl::delete_policy(&id, silver.policy_id).await,
        Err(IdentityError::NotFound { .. })
    ));
    assert!(matches!(
        rl::get_policy(&id, silver.policy_id).await,
        Err(IdentityError::NotFound { .. })
    ));

    // Defaults follow config.toml only.
    let defaults = rl::ensure_default_policies(&id).await.unwrap();
    let login = &defaults[0];
    assert_eq!(login.name, "default.login");
    let err = rl::update_policy(
        &id,
        login.policy_id,
        PolicyUpdate {
            limit_count: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IdentityError::Forbidden { .. }), "{err:?}");
    let err = rl::delete_policy(&id, login.policy_id).await.unwrap_err();
    assert!(matches!(err, IdentityError::Forbidden { .. }), "{err:?}");

    let rows = audit::list(&id, &Filter::default(), None, 100)
        .await
        .unwrap();
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| r.object_id.as_deref() == Some(&p.policy_id.to_string()))
        .collect();
    assert_eq!(
        ours.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["rate_limit_policy.created", "rate_limit_policy.updated"]
    );
    assert_eq!(ours[1].actor_type, "system");
    assert_eq!(
        ours[1].details.0["limit_count"],
        serde_json::json!({"before": 500, "after": 900})
    );
    assert!(
        ours[1].details.0.get("name").is_none(),
        "only changed fields"
    );
    let actions = audit_actions(&id).await;
    // gold created+updated, silver created+deleted, five defaults created; failures none.
    assert_eq!(actions.len(), 9, "{actions:?}");
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "rate_limit_policy.deleted")
            .count(),
        1
    );
    db.drop_database().await;
}

async fn defaults_follow_the_config_idempotently(db: TestDb) {
    let clock = FixedClock::new(t0());
    let a = node(&db, &clock, &[("LINTEL_RATE_LIMITS_LOGIN", "7/30")]).await;
    let ps = rl::list_policies(&a).await.unwrap();
    let names: Vec<_> = ps.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "default.login",
            "default.token",
            "default.scim",
            "default.management",
            "default.waitlist"
        ]
    );
    let scopes: Vec<_> = ps.iter().map(|p| p.scope.as_str()).collect();
    assert_eq!(scopes, ["ip", "client", "client", "api_key", "ip"]);
    assert_eq!((ps[0].limit_count, ps[0].window_sec), (7, 30));
    assert_eq!((ps[3].limit_count, ps[3].window_sec), (1200, 60));
    assert_eq!(audit_actions(&a).await.len(), 5);

    // Again with the same config: nothing changes, nothing is audited.
    assert_eq!(rl::ensure_default_policies(&a).await.unwrap(), ps);
    assert_eq!(audit_actions(&a).await.len(), 5);

    // Another node with a changed config updates the one policy (same id).
    let b = node(&db, &clock, &[("LINTEL_RATE_LIMITS_LOGIN", "9/60")]).await;
    let login = rl::get_policy(&b, ps[0].policy_id).await.unwrap();
    assert_eq!((login.limit_count, login.window_sec), (9, 60));
    let actions = audit_actions(&b).await;
    assert_eq!(actions.len(), 6);
    assert_eq!(actions[5], "rate_limit_policy.updated");

    // A default that went missing is recreated by the first check that needs it.
    let mut c = conn(&b).await;
    store::rate_limits::delete_policy(&mut c, login.policy_id)
        .await
        .unwrap();
    drop(c);
    let d = rl::check(&b, &RateKey::new(Family::Login).ip(ip("192.0.2.1")))
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!((d.limit, d.window_secs), (9, 60));
    db.drop_database().await;
}

async fn concurrent_checks_allow_exactly_the_limit(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[("LINTEL_RATE_LIMITS_LOGIN", "50/60")]).await;
    let key = RateKey::new(Family::Login).ip(ip("198.51.100.7"));
    let ds = burst(std::slice::from_ref(&id), &key, 200).await;
    assert_eq!(allowed(&ds), 50);
    // Each allowed request saw its own count: remaining 49..=0 once each.
    let mut remaining: Vec<u32> = ds
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<_>>());
    for d in ds.iter().filter(|d| !d.allowed) {
        assert_eq!(
            (d.limit, d.remaining, d.retry_after_secs),
            (50, 0, Some(50))
        );
    }
    let n = counter(&id, "default.login", "198.51.100.7", 60).await;
    assert!((51..=200).contains(&n), "{n}");
    // Another IP has its own budget.
    let d = rl::check(&id, &RateKey::new(Family::Login).ip(ip("198.51.100.8")))
        .await
        .unwrap();
    assert!(d.allowed && d.remaining == 49);
    db.drop_database().await;
}

async fn two_nodes_together_never_exceed_the_limit(db: TestDb) {
    let clock = FixedClock::new(t0());
    let env = [("LINTEL_RATE_LIMITS_TOKEN", "50/60")];
    let a = node(&db, &clock, &env).await;
    let b = node(&db, &clock, &env).await;
    assert!(!Arc::ptr_eq(&rl::fast_path(&a), &rl::fast_path(&b)));
    let key = RateKey::new(Family::Token).client("shared-app");
    let ds = burst(&[a.clone(), b.clone()], &key, 200).await;
    assert_eq!(allowed(&ds), 50);
    // Both nodes saw a denial and remember it; neither lets more through.
    for id in [&a, &b] {
        assert!(!rl::check(id, &key).await.unwrap().allowed);
    }
    assert!(!rl::fast_path(&a).is_empty() && !rl::fast_path(&b).is_empty());
    // Next window: the budget is back, shared again.
    clock.advance(Duration::seconds(60));
    let ds = burst(&[a, b], &key, 120).await;
    assert_eq!(allowed(&ds), 50);
    db.drop_database().await;
}

async fn fast_path_denies_from_memory_without_writing(db: TestDb) {
    let clock = FixedClock::new(t0());
    let a = node(&db, &clock, &[]).await;
    let u = user(&a, "fast@example.com", None).await;
    let p = rl::create_policy(&a, "tiny", Scope::User, 3, 60, None)
        .await
        .unwrap();
    rl::assign_to_user(&a, p.policy_id, u).await.unwrap();
    let key = RateKey::new(Family::Management).user(u);
    for _ in 0..4 {
        rl::check(&a, &key).await.unwrap();
    }
    assert_eq!(counter(&a, "tiny", &u.to_string(), 60).await, 4);
    // Further denials on this node come from memory: the counter does not move.
    for _ in 0..50 {
        let d = rl::check(&a, &key).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, Some(50));
    }
    assert_eq!(counter(&a, "tiny", &u.to_string(), 60).await, 4);
    // A node without that memory asks the database, which counts and denies too.
    let b = node(&db, &clock, &[]).await;
    assert!(!rl::check(&b, &key).await.unwrap().allowed);
    assert_eq!(counter(&a, "tiny", &u.to_string(), 60).await, 5);
    // The documented staleness: after the limit is raised, node b (which now remembers
    // a denial too) keeps denying until the window ends, a fresh node sees the new limit.
    rl::update_policy(
        &a,
        p.policy_id,
        PolicyUpdate {
            limit_count: Some(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!rl::check(&b, &key).await.unwrap().allowed);
    let c = node(&db, &clock, &[]).await;
    let d = rl::check(&c, &key).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.limit, d.remaining), (100, 94));
    clock.advance(Duration::seconds(50));
    let d = rl::check(&b, &key).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 99);
    db.drop_database().await;
}

async fn policy_changes_on_another_node_apply_within_the_ttl(db: TestDb) {
    let clock = FixedClock::new(t0());
    let env = [("LINTEL_RATE_LIMITS_MANAGEMENT", "10/60")];
    let a = node(&db, &clock, &env).await;
    let b = node(&db, &clock, &env).await;
    let u = user(&a, "ttl@example.com", None).await;
    let p = rl::create_policy(&a, "ttl", Scope::User, 5, 60, None)
        .await
        .unwrap();
    rl::assign_to_user(&a, p.policy_id, u).await.unwrap();
    let key = RateKey::new(Family::Management)
        .user(u)
        .api_key(Uuid::now_v7());
    assert_eq!(rl::check(&a, &key).await.unwrap().limit, 5);
    // Node b raises the limit: node a keeps its cached policy for the TTL (still counting
    // exactly, under the old limit), then sees the new one.
    rl::update_policy(
        &b,
        p.policy_id,
        PolicyUpdate {
            limit_count: Some(7),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rl::check(&b, &key).await.unwrap().limit, 7);
    let d = rl::check(&a, &key).await.unwrap();
    assert_eq!((d.limit, d.remaining), (5, 2), "same counter, old limit");
    clock.advance(Duration::milliseconds(rl::POLICY_CACHE_TTL_MS));
    let d = rl::check(&a, &key).await.unwrap();
    assert_eq!((d.limit, d.remaining), (7, 3));
    // Node b deletes the policy while node a has it cached: a's next check finds the
    // policy gone and falls back to the family default at once.
    rl::delete_policy(&b, p.policy_id).await.unwrap();
    let d = rl::check(&a, &key).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.limit, d.remaining), (10, 9));
    db.drop_database().await;
}

async fn windows_roll_over_on_the_clock(db: TestDb) {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 59).unwrap());
    let id = node(&db, &clock, &[("LINTEL_RATE_LIMITS_WAITLIST", "3/60")]).await;
    let key = RateKey::new(Family::Waitlist).ip(ip("2001:db8:5:6::1"));
    for left in [2, 1, 0] {
        let d = rl::check(&id, &key).await.unwrap();
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_after_secs), (left, 1));
    }
    // Same /64, other host: the same counter.
    let neighbour = RateKey::new(Family::Waitlist).ip(ip("2001:db8:5:6::99"));
    let d = rl::check(&id, &neighbour).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.retry_after_secs, Some(1));
    assert!(!rl::check(&id, &key).await.unwrap().allowed);
    clock.advance(Duration::milliseconds(999));
    assert!(!rl::check(&id, &key).await.unwrap().allowed);
    // 12:01:00 starts a new window.
    clock.advance(Duration::milliseconds(1));
    let d = rl::check(&id, &key).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.remaining, d.reset_after_secs), (2, 60));
    assert_eq!(
        counter(&id, "default.waitlist", "2001:db8:5:6::/64", 60).await,
        1
    );
    db.drop_database().await;
}

async fn most_specific_policy_applies(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[("LINTEL_RATE_LIMITS_MANAGEMENT", "10/60")]).await;
    let org = orgs::create(&id, "Acme", None).await.unwrap().org_id;
    let u = user(&id, "ada@example.com", Some(org)).await;
    let k = api_key(&id, u).await;
    let other_key = api_key(&id, u).await;
    let org_p = rl::create_policy(&id, "org", Scope::Org, 5, 60, None)
        .await
        .unwrap();
    let user_p = rl::create_policy(&id, "user", Scope::User, 4, 60, None)
        .await
        .unwrap();
    let key_p = rl::create_policy(&id, "key", Scope::ApiKey, 3, 60, None)
        .await
        .unwrap();
    // A laxer second key policy loses to the stricter one at the same level.
    let lax = rl::create_policy(&id, "lax", Scope::ApiKey, 1000, 60, None)
        .await
        .unwrap();
    rl::assign_to_org(&id, org_p.policy_id, org).await.unwrap();
    rl::assign_to_user(&id, user_p.policy_id, u).await.unwrap();
    rl::assign_to_api_key(&id, key_p.policy_id, k)
        .await
        .unwrap();
    rl::assign_to_api_key(&id, lax.policy_id, k).await.unwrap();
    assert_eq!(
        rl::api_key_policies(&id, k).await.unwrap(),
        vec![key_p.clone(), lax.clone()]
    );

    let mgmt = |key: Uuid| RateKey::new(Family::Management).api_key(key);
    let limit_of = |key: RateKey| {
        let id = id.clone();
        async move {
            let d = rl::check(&id, &key).await.unwrap();
            (d.policy_id, d.limit)
        }
    };
    let default = rl::list_policies(&id).await.unwrap()[3].clone();
    assert_eq!(default.name, "default.management");
    assert_eq!(
        limit_of(mgmt(other_key)).await,
        (default.policy_id, 10),
        "nothing assigned: family default"
    );
    assert_eq!(
        limit_of(mgmt(other_key).org(org)).await,
        (org_p.policy_id, 5)
    );
    assert_eq!(
        limit_of(mgmt(other_key).org(org).user(u)).await,
        (user_p.policy_id, 4)
    );
    assert_eq!(
        limit_of(mgmt(k).org(org).user(u)).await,
        (key_p.policy_id, 3)
    );
    // Without the key assignments the user's policy applies to that key too.
    rl::unassign(&id, key_p.policy_id, Target::ApiKey(k))
        .await
        .unwrap();
    rl::unassign(&id, lax.policy_id, Target::ApiKey(k))
        .await
        .unwrap();
    assert_eq!(
        limit_of(mgmt(k).org(org).user(u)).await,
        (user_p.policy_id, 4)
    );
    // The user policy counts per user, across that user's keys: 2 used above.
    let mut allowed_n = 0;
    for key in [k, other_key, k, other_key] {
        if rl::check(&id, &mgmt(key).user(u)).await.unwrap().allowed {
            allowed_n += 1;
        }
    }
    assert_eq!(allowed_n, 2);

    // A policy whose scope the request does not carry is the caller's error.
    let by_ip = rl::create_policy(&id, "by-ip", Scope::Ip, 5, 60, None)
        .await
        .unwrap();
    let v = user(&id, "bob@example.com", None).await;
    rl::assign_to_user(&id, by_ip.policy_id, v).await.unwrap();
    let err = rl::check(&id, &mgmt(other_key).user(v)).await.unwrap_err();
    assert!(
        matches!(&err, IdentityError::Invalid { field: "scope", .. }),
        "{err:?}"
    );
    let d = rl::check(&id, &mgmt(other_key).user(v).ip(ip("192.0.2.9")))
        .await
        .unwrap();
    assert_eq!((d.policy_id, d.limit), (by_ip.policy_id, 5));
    db.drop_database().await;
}

async fn org_scoped_policy_is_shared_by_the_org(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[]).await;
    let org = orgs::create(&id, "Initech", None).await.unwrap().org_id;
    let members = [
        user(&id, "a@initech.com", Some(org)).await,
        user(&id, "b@initech.com", Some(org)).await,
    ];
    let p = rl::create_policy(&id, "initech", Scope::Org, 50, 60, None)
        .await
        .unwrap();
    rl::assign_to_org(&id, p.policy_id, org).await.unwrap();
    let mut set = JoinSet::new();
    for i in 0..200 {
        let id = id.clone();
        let key = RateKey::new(Family::Management)
            .user(members[i % 2])
            .org(org)
            .api_key(Uuid::now_v7());
        set.spawn(async move { rl::check(&id, &key).await.unwrap().allowed });
    }
    let mut n = 0;
    while let Some(ok) = set.join_next().await {
        n += usize::from(ok.unwrap());
    }
    assert_eq!(n, 50, "the org's members share one budget");
    // Deleting the org takes its counters (user_id / org_id cascade).
    let mut c = conn(&id).await;
    assert_eq!(store::rate_limits::counter_rows(&mut c).await.unwrap(), 1);
    lintel::with_conn!(&mut c, |c| sqlx::query(
        "DELETE FROM organizations WHERE org_id = $1"
    )
    .bind(org)
    .execute(&mut *c)
    .await
    .unwrap()
    .rows_affected());
    assert_eq!(store::rate_limits::counter_rows(&mut c).await.unwrap(), 0);
    db.drop_database().await;
}

async fn assignments_are_checked_and_audited(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[]).await;
    let org = orgs::create(&id, "Globex", None).await.unwrap().org_id;
    let u = user(&id, "hank@globex.com", Some(org)).await;
    let k = api_key(&id, u).await;
    let p = rl::create_policy(&id, "p", Scope::User, 5, 60, None)
        .await
        .unwrap();
    let before = audit_actions(&id).await.len();

    rl::assign_to_user(&id, p.policy_id, u).await.unwrap();
    rl::assign_to_org(&id, p.policy_id, org).await.unwrap();
    rl::assign_to_api_key(&id, p.policy_id, k).await.unwrap();
    for t in [Target::User(u), Target::Org(org), Target::ApiKey(k)] {
        let err = rl::assign(&id, p.policy_id, t).await.unwrap_err();
        assert!(
            matches!(&err, IdentityError::Conflict { field, .. } if field == "assignment"),
            "{t:?}: {err:?}"
        );
    }
    for t in [
        Target::User(Uuid::now_v7()),
        Target::Org(Uuid::now_v7()),
        Target::ApiKey(Uuid::now_v7()),
    ] {
        let err = rl::assign(&id, p.policy_id, t).await.unwrap_err();
        assert!(matches!(err, IdentityError::NotFound { .. }), "{t:?}");
    }
    let err = rl::assign_to_user(&id, 999_999, u).await.unwrap_err();
    assert!(matches!(err, IdentityError::NotFound { what } if what == "rate-limit policy"));
    let listed = rl::list_assignments(&id, p.policy_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|a| a.user_id == Some(u) && a.org_id.is_none())
    );
    assert!(
        listed
            .iter()
            .any(|a| a.org_id == Some(org) && a.user_id.is_none())
    );

    rl::unassign(&id, p.policy_id, Target::User(u))
        .await
        .unwrap();
    let err = rl::unassign(&id, p.policy_id, Target::User(u))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::NotFound { .. }));
    assert_eq!(
        rl::list_assignments(&id, p.policy_id).await.unwrap().len(),
        1
    );

    let rows = audit::list(&id, &Filter::default(), None, 1000)
        .await
        .unwrap();
    let new: Vec<_> = rows[before..].iter().collect();
    assert_eq!(
        new.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        [
            "rate_limit_policy.assigned",
            "rate_limit_policy.assigned",
            "rate_limit_policy.assigned",
            "rate_limit_policy.unassigned"
        ],
        "failed attempts leave no audit row"
    );
    assert_eq!(new[1].org_id, Some(org));
    assert_eq!(new[2].details.0["api_key_id"], k.to_string());
    assert_eq!(new[3].details.0["user_id"], u.to_string());

    // Deleting the policy removes its assignments.
    rl::delete_policy(&id, p.policy_id).await.unwrap();
    assert!(rl::api_key_policies(&id, k).await.unwrap().is_empty());
    db.drop_database().await;
}

async fn bad_keys_are_rejected(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[]).await;
    for c in [String::new(), "x".repeat(256), "a\u{0}b".into()] {
        let err = rl::check(&id, &RateKey::new(Family::Token).client(c))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Invalid {
                    field: "client_id",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // The family's subject missing (login counts per IP).
    let err = rl::check(&id, &RateKey::new(Family::Login).client("app"))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Invalid { field: "scope", .. }));
    let mut c = conn(&id).await;
    assert_eq!(store::rate_limits::counter_rows(&mut c).await.unwrap(), 0);
    db.drop_database().await;
}

async fn purge_deletes_only_ended_windows(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[]).await;
    let hourly = rl::create_policy(&id, "hourly", Scope::User, 5, 3600, None)
        .await
        .unwrap();
    let u = user(&id, "h@example.com", None).await;
    rl::assign_to_user(&id, hourly.policy_id, u).await.unwrap();
    let login = RateKey::new(Family::Login).ip(ip("192.0.2.1"));
    rl::check(&id, &login).await.unwrap();
    rl::check(&id, &RateKey::new(Family::Management).user(u))
        .await
        .unwrap();
    let rows = |id: Identity| async move {
        let mut c = conn(&id).await;
        store::rate_limits::counter_rows(&mut c).await.unwrap()
    };
    assert_eq!(rows(id.clone()).await, 2);
    // 12:00:59: no window has ended.
    clock.advance(Duration::seconds(49));
    assert_eq!(
        rl::purge_old_counters(&id, Duration::zero()).await.unwrap(),
        0
    );
    // 12:01:00: the login window (60 s) ended, the hourly one did not; with a grace of
    // 30 s nothing goes yet.
    clock.advance(Duration::seconds(1));
    assert_eq!(
        rl::purge_old_counters(&id, Duration::seconds(30))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        rl::purge_old_counters(&id, Duration::zero()).await.unwrap(),
        1
    );
    assert_eq!(rows(id.clone()).await, 1);
    // The next login window starts from zero.
    let d = rl::check(&id, &login).await.unwrap();
    assert_eq!(d.remaining, d.limit - 1);
    clock.advance(Duration::hours(2));
    assert_eq!(
        rl::purge_old_counters(&id, Duration::zero()).await.unwrap(),
        2
    );
    assert_eq!(rows(id).await, 0);
    db.drop_database().await;
}

async fn purger_task_purges_in_the_background(db: TestDb) {
    let clock = FixedClock::new(t0());
    let id = node(&db, &clock, &[]).await;
    rl::check(&id, &RateKey::new(Family::Login).ip(ip("192.0.2.1")))
        .await
        .unwrap();
    // Ended, but within the grace period: kept.
    clock.advance(Duration::seconds(50 + rl::PURGE_GRACE_SECS - 1));
    let task = rl::spawn_purger(id.clone(), std::time::Duration::from_millis(10));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut c = conn(&id).await;
    assert_eq!(store::rate_limits::counter_rows(&mut c).await.unwrap(), 1);
    clock.advance(Duration::seconds(1));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while store::rate_limits::counter_rows(&mut c).await.unwrap() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "purger never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    db.drop_database().await;
}

// ---------------------------------------------------------------------------------------
// HTTP

/// The real server on a fixed clock, with `/limited` behind the token-family layer keyed by
/// the `x-client-id` header. (`spawn_app_with` cannot be used: the layer needs the app's
/// `Identity`, which exists only once the app is built, and the window must not roll over
/// mid-test, which needs a fixed clock.)
struct Served {
    addr: std::net::SocketAddr,
    state: AppState,
    test_db: TestDb,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn finish(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.await.unwrap().unwrap();
        self.state.identity.db.close().await;
        self.test_db.drop_database().await;
    }
}

async fn serve_limited(backend: Backend, test: &str, env: &[(&str, &str)]) -> Option<Served> {
    let test_db = TestDb::new(backend, test).await?;
    let config = test_config(&test_db, env);
    let app = App::build_with_clock(config, Arc::new(FixedClock::new(t0())))
        .await
        .unwrap();
    let key_fn = |req: &Request<Body>| {
        let client = req.headers().get("x-client-id")?.to_str().ok()?;
        Some(Subjects {
            client_id: Some(client.to_string()),
            ..Default::default()
        })
    };
    let extra = Router::new()
        .route("/limited", axum::routing::get(|| async { "ok" }))
        .layer(layer_for(app.state.identity.clone(), Family::Token, key_fn));
    let addr = app.local_addr().unwrap();
    let state = app.state.clone();
    let router = app.router_with(extra);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_with(router, async move {
        let _ = rx.await;
    }));
    Some(Served {
        addr,
        state,
        test_db,
        shutdown: Some(tx),
        server,
    })
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

async fn http_200_concurrent_requests_get_exactly_50_through(backend: Backend) {
    let env = [("LINTEL_RATE_LIMITS_TOKEN", "50/60")];
    let Some(app) = serve_limited(backend, module_path!(), &env).await else {
        return;
    };
    let client = reqwest::Client::new();
    let mut set = JoinSet::new();
    for _ in 0..200 {
        let (client, url) = (client.clone(), app.url("/limited"));
        set.spawn(async move {
            client
                .get(url)
                .header("x-client-id", "app-1")
                .send()
                .await
                .unwrap()
        });
    }
    let mut ok_remaining = Vec::new();
    let mut denied = 0;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(header(&r, "ratelimit-limit"), "50");
        assert_eq!(header(&r, "ratelimit-reset"), "50");
        assert_eq!(header(&r, "ratelimit-policy"), "50;w=60");
        match r.status().as_u16() {
            200 => {
                assert!(r.headers().get("retry-after").is_none());
                ok_remaining.push(header(&r, "ratelimit-remaining").parse::<u32>().unwrap());
                assert_eq!(r.text().await.unwrap(), "ok");
            }
            429 => {
                denied += 1;
                assert_eq!(header(&r, "retry-after"), "50");
                assert_eq!(header(&r, "ratelimit-remaining"), "0");
                assert_eq!(header(&r, "content-type"), "application/problem+json");
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["type"], "urn:lintel:problem:rate-limited");
                assert_eq!(v["status"], 429);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    ok_remaining.sort_unstable();
    assert_eq!(ok_remaining, (0..50).collect::<Vec<_>>());
    assert_eq!(denied, 150);

    // Another client has its own budget; a request the key function does not name is not
    // counted (no headers).
    let r = client
        .get(app.url("/limited"))
        .header("x-client-id", "app-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-remaining"), "49");
    let r = client.get(app.url("/limited")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("ratelimit-limit").is_none());
    // Routes outside the layer are not limited.
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    assert!(r.headers().get("ratelimit-limit").is_none());
    // Bad input in the key is a 422 problem, not a 500.
    let r = client
        .get(app.url("/limited"))
        .header("x-client-id", "x".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    app.finish().await;
}

async fn http_fails_closed_when_the_database_is_gone(backend: Backend) {
    let Some(app) = serve_limited(backend, module_path!(), &[]).await else {
        return;
    };
    app.state.identity.db.close().await;
    let r = reqwest::Client::new()
        .get(app.url("/limited"))
        .header("x-client-id", "app-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    app.finish().await;
}

mod http_200_concurrent_requests_get_exactly_50_through {
    use crate::helpers::Backend;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::http_200_concurrent_requests_get_exactly_50_through(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::http_200_concurrent_requests_get_exactly_50_through(Backend::Postgres).await;
    }
}

mod http_fails_closed_when_the_database_is_gone {
    use crate::helpers::Backend;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::http_fails_closed_when_the_database_is_gone(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::http_fails_closed_when_the_database_is_gone(Backend::Postgres).await;
    }
}

/// The app wires the defaults at start-up (config → `default.*` policies).
mod startup_ensures_defaults {
    use crate::helpers::{Backend, Spawn, spawn_app_with};
    use lintel::identity::rate_limit as rl;

    async fn run(backend: Backend) {
        let env = [("LINTEL_RATE_LIMITS_SCIM", "42/30")];
        let opts = Spawn {
            env: &env,
            extra: None,
        };
        let Some(app) = spawn_app_with(backend, module_path!(), opts).await else {
            return;
        };
        let ps = rl::list_policies(&app.state.identity).await.unwrap();
        let scim = ps.iter().find(|p| p.name == "default.scim").unwrap();
        assert_eq!((scim.limit_count, scim.window_sec), (42, 30));
        assert_eq!(ps.len(), 5);
        app.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}

async fn reservations_save_statements_and_never_exceed_the_limit(db: TestDb) {
    let clock = FixedClock::new(t0());
    let env = [("LINTEL_RATE_LIMITS_TOKEN", "1000/60")];
    let a = node(&db, &clock, &env).await;
    let b = node(&db, &clock, &env).await;
    let key = RateKey::new(Family::Token).client("busy-app");
    // One node, one caller: every request counted once, in order, while the shared counter
    // runs ahead by at most the node's unused reservation.
    let mut remaining = Vec::new();
    for _ in 0..200 {
        let d = rl::check(&a, &key).await.unwrap();
        assert!(d.allowed);
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, (800..1000).rev().collect::<Vec<u32>>());
    let stored = i64::from(counter(&a, "default.token", "busy-app", 60).await);
    assert!(
        (200..200 + rl::MAX_RESERVATION).contains(&stored),
        "stored {stored}"
    );
    assert!(
        stored > 200,
        "the node reserved ahead (fewer statements than requests)"
    );
    // Two nodes, concurrently, far past the limit: never more than the limit; at most the
    // nodes' unused reservations denied early.
    let ds = burst(&[a.clone(), b.clone()], &key, 1200).await;
    let total = 200 + allowed(&ds) as i64;
    assert!(total <= 1000, "{total}");
    assert!(total >= 1000 - 2 * (rl::MAX_RESERVATION - 1), "{total}");
    db.drop_database().await;
}
