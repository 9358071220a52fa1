//! Migrations: applied at start, idempotent, safe to run from several nodes at once.
use crate::helpers::{TestDb, all_migrations};
use crate::on_both_databases;
use lintel::store::{Db, DbOptions};

on_both_databases!(
    migrations_apply_once_and_again_is_a_no_op,
    concurrent_migrations_agree
);

async fn migrations_apply_once_and_again_is_a_no_op(db: TestDb) {
    let all = all_migrations();
    assert_eq!(all[0], 1);
    let store = Db::connect(&db.url, &DbOptions::default()).await.unwrap();
    assert_eq!(store.applied_migrations().await.unwrap(), Vec::<i64>::new());
    assert_eq!(store.migrate().await.unwrap(), all);
    assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
    assert_eq!(store.applied_migrations().await.unwrap(), all);
    store.close().await;
    db.drop_database().await;
}

async fn concurrent_migrations_agree(db: TestDb) {
    let a = Db::connect(&db.url, &DbOptions::default()).await.unwrap();
    let b = Db::connect(&db.url, &DbOptions::default()).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Both succeed, each applied only known versions, and each is recorded once.
    let all = all_migrations();
    assert!(
        ra.iter().chain(&rb).all(|v| all.contains(v)),
        "{ra:?} {rb:?}"
    );
    assert_eq!(a.applied_migrations().await.unwrap(), all);
    a.close().await;
    b.close().await;
    db.drop_database().await;
}
