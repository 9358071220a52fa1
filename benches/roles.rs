//! Effective-permission resolution for a member whose role heads a 10-level inheritance
//! chain (level0 includes level1 … includes level9, one permission per level).
//!
//! - `effective/chain_10`: the pure computation over an in-memory graph.
//! - `effective_for_member/sqlite/chain_10`: the whole call over a fresh SQLite file
//!   (membership check, graph and direct roles read in one transaction, then resolution).
//! - `effective_for_member/postgres/chain_10`: the same over PostgreSQL, when
//!   `LINTEL_TEST_POSTGRES_URL` names a server where a database may be created.
//!
//! `cargo bench --bench roles` (add `--profile dev` for an unoptimized build).
use criterion::{Criterion, criterion_group, criterion_main};
use lintel::clock::SystemClock;
use lintel::config::Config;
use lintel::identity::roles::{self, RoleGraph, effective};
use lintel::identity::users::{self, NewUser};
use lintel::identity::{Identity, memberships, orgs};
use sqlx::Connection;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const LEVELS: usize = 10;

fn pure(c: &mut Criterion) {
    let ids: Vec<Uuid> = (0..LEVELS).map(|_| Uuid::now_v7()).collect();
    let graph = RoleGraph::from_parts(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("level{i}"))),
        ids.windows(2).map(|w| (w[0], w[1])),
        ids.iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("perm:{i}"))),
    );
    let (r, p) = effective(&graph, &ids[..1]);
    assert_eq!((r.len(), p.len()), (LEVELS, LEVELS));
    c.bench_function("effective/chain_10", |b| {
        b.iter(|| effective(black_box(&graph), black_box(&ids[..1])))
    });
}

/// Identity over `database_url` with an org holding the chain and one member at its top.
async fn setup(database_url: &str, dir: &std::path::Path) -> (Identity, Uuid, Uuid) {
    let env = vec![
        ("LINTEL_DATABASE_URL".to_string(), database_url.to_string()),
        (
            "LINTEL_KEYS_DIR".to_string(),
            dir.join("keys").display().to_string(),
        ),
        (
            "LINTEL_DATA_DIR".to_string(),
            dir.join("data").display().to_string(),
        ),
        ("LINTEL_PASSWORD_ARGON2_MEMORY_KIB".into(), "64".into()),
        ("LINTEL_PASSWORD_ARGON2_ITERATIONS".into(), "1".into()),
    ];
    let config = Config::from_sources(None, env).expect("config");
    let db = lintel::app::open_store(&config).await.expect("store");
    let id = lintel::app::identity(&config, db, Arc::new(SystemClock)).expect("identity");
    let org = orgs::create(&id, "Bench", None).await.expect("org");
    let o = org.org_id;
    let mut prev = None;
    for i in (0..LEVELS).rev() {
        let r = roles::create_role(&id, o, &format!("level{i}"), None)
            .await
            .expect("role");
        let p = roles::create_permission(&id, o, &format!("perm:{i}"), None)
            .await
            .expect("permission");
        roles::grant_permission(&id, o, r.role_id, p.permission_id)
            .await
            .expect("grant");
        if let Some(parent) = prev {
            roles::add_inheritance(&id, o, r.role_id, parent)
                .await
                .expect("edge");
        }
        prev = Some(r.role_id);
    }
    let (u, _) = users::create(
        &id,
        NewUser {
            email: "bench@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .expect("user");
    let m = memberships::add(&id, o, u.user_id, "level0")
        .await
        .expect("member");
    assert_eq!(m.user_permissions.0.len(), LEVELS);
    (id, o, u.user_id)
}

fn store_backed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (id, o, u) = rt.block_on(setup(&sqlite_url, dir.path()));
    c.bench_function("effective_for_member/sqlite/chain_10", |b| {
        b.to_async(&rt).iter(|| async {
            let (r, p) = roles::effective_for_member(&id, o, u)
                .await
                .expect("resolve");
            assert_eq!(p.len(), LEVELS);
            black_box(r)
        })
    });
    rt.block_on(id.db.close());

    let Ok(admin) = std::env::var("LINTEL_TEST_POSTGRES_URL") else {
        eprintln!("effective_for_member/postgres skipped: LINTEL_TEST_POSTGRES_URL not set");
        return;
    };
    let name = format!("lintel_bench_{}", Uuid::new_v4().simple());
    let run_admin = |sql: String| {
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("postgres");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("admin statement");
        })
    };
    run_admin(format!("CREATE DATABASE {name}"));
    let mut url = url::Url::parse(&admin).expect("url");
    url.set_path(&format!("/{name}"));
    let (id, o, u) = rt.block_on(setup(url.as_str(), dir.path()));
    c.bench_function("effective_for_member/postgres/chain_10", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                roles::effective_for_member(&id, o, u)
                    .await
                    .expect("resolve"),
            )
        })
    });
    rt.block_on(id.db.close());
    run_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = pure, store_backed
}
criterion_main!(benches);
