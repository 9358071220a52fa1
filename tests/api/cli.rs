//! Admin subcommands print one JSON object; failures exit 1 with the conflict named.
use crate::helpers::{Backend, TestDb, lintel};
use crate::on_both_databases;
use serde_json::Value;

on_both_databases!(
    migrate_twice_and_admin_commands_print_json,
    duplicates_are_rejected_by_the_cli
);

fn env(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("LINTEL_DATABASE_URL", db.url.clone()),
        ("LINTEL_PASSWORD_ARGON2_MEMORY_KIB", "64".into()),
        ("LINTEL_PASSWORD_ARGON2_ITERATIONS", "1".into()),
    ]
}

fn run(db: &TestDb, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let env = env(db);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    lintel(db.dir.path(), args, &env, stdin)
}

fn json_line(out: &str) -> Value {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object expected on stdout: {out}");
    serde_json::from_str(lines[0]).unwrap()
}

async fn migrate_twice_and_admin_commands_print_json(db: TestDb) {
    let backend = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    for _ in 0..2 {
        let (code, out, err) = run(&db, &["migrate"], None);
        assert_eq!(code, 0, "{err}");
        let v = json_line(&out);
        assert_eq!(v["database"], backend);
        assert_eq!(v["migrations"], serde_json::json!([1]));
    }

    let (code, out, err) = run(&db, &["org", "create", "--name", "Acme Corp"], None);
    assert_eq!(code, 0, "{err}");
    let org = json_line(&out);
    let org_id = org["org_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(org_id).is_ok());
    assert_eq!(org["org_name"], "Acme Corp");
    assert_eq!(org["url_safe_org_name"], "acme-corp");

    let password = "a long enough passphrase";
    let (code, out, err) = run(
        &db,
        &[
            "user",
            "create",
            "--email",
            "Ada@Example.com",
            "--org",
            "acme-corp",
            "--password-stdin",
        ],
        Some(&format!("{password}\n")),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(password) && !err.contains(password),
        "password printed"
    );
    let user = json_line(&out);
    assert!(uuid::Uuid::parse_str(user["user_id"].as_str().unwrap()).is_ok());
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["has_password"], true);
    assert_eq!(user["org_id"], org_id);
    assert_eq!(user["user_role"], "member");

    // The org can be named by id as well as by slug.
    let (code, out, err) = run(
        &db,
        &[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--org",
            org_id,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["has_password"], false);
    db.drop_database().await;
}

async fn duplicates_are_rejected_by_the_cli(db: TestDb) {
    let (code, _, err) = run(&db, &["org", "create", "--name", "Globex"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&db, &["org", "create", "--name", "GLOBEX!"], None);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("url_safe_org_name") && err.contains("globex"),
        "{err}"
    );

    let (code, _, err) = run(&db, &["user", "create", "--email", "eve@example.com"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&db, &["user", "create", "--email", "EVE@example.com"], None);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("eve@example.com") && err.contains("conflict: email"),
        "{err}"
    );

    let (code, _, err) = run(&db, &["user", "create", "--email", "not-an-email"], None);
    assert_eq!(code, 1);
    assert!(err.contains("invalid email"), "{err}");
    let (code, _, err) = run(
        &db,
        &[
            "user",
            "create",
            "--email",
            "x@example.com",
            "--org",
            "nope",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("organization not found"), "{err}");
    let (code, _, err) = run(
        &db,
        &[
            "user",
            "create",
            "--email",
            "y@example.com",
            "--password-stdin",
        ],
        Some("short\n"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("at least 10"), "{err}");
    // Usage errors are clap's: exit 2.
    let (code, _, _) = run(&db, &["org", "create"], None);
    assert_eq!(code, 2);
    db.drop_database().await;
}
