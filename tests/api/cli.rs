//! Admin subcommands print one JSON object; failures exit 1 with the conflict named.
use crate::helpers::{Backend, TestDb, lintel};
use crate::on_both_databases;
use serde_json::Value;

on_both_databases!(
    migrate_twice_and_admin_commands_print_json,
    duplicates_are_rejected_by_the_cli,
    user_admin_commands,
    org_and_role_commands,
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
        // Every migration in the source folders, once each, in order.
        let applied: Vec<i64> = v["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_i64().unwrap())
            .collect();
        let mut expected: Vec<i64> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
                .unwrap()
                .map(|e| {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    name.split('_').next().unwrap().parse().unwrap()
                })
                .collect();
        expected.sort();
        assert_eq!(applied, expected);
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

async fn user_admin_commands(db: TestDb) {
    let (code, _, err) = run(&db, &["user", "create", "--email", "pat@example.com"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(
        &db,
        &[
            "user",
            "set-password",
            "--user",
            "PAT@example.com",
            "--password-stdin",
            "--require-change",
        ],
        Some("a brand new password\n"),
    );
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["has_password"], true);
    assert_eq!(v["update_password_required"], true);
    assert!(!out.contains("a brand new password"));

    let (code, out, _) = run(&db, &["user", "disable", "--user", "pat@example.com"], None);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["enabled"], false);
    let user_id = json_line(&out)["user_id"].as_str().unwrap().to_string();
    let (code, out, _) = run(&db, &["user", "enable", "--user", &user_id], None);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["enabled"], true);
    let (code, out, _) = run(&db, &["user", "lock", "--user", &user_id], None);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["locked"], true);
    let (code, out, _) = run(&db, &["user", "unlock", "--user", &user_id], None);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["locked"], false);
    let (code, _, err) = run(
        &db,
        &["user", "unlock", "--user", "ghost@example.com"],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("user not found"), "{err}");

    // Import: good lines land, bad lines are reported with their line numbers.
    let bcrypt_hash = bcrypt::hash("legacy password 1", 4).unwrap();
    let lines = [
        serde_json::json!({"email": "quinn@example.com", "legacy_user_id": "old-1", "password_hash": bcrypt_hash}).to_string(),
        "{not json".to_string(),
        serde_json::json!({"email": "pat@example.com"}).to_string(),
        String::new(),
        serde_json::json!({"email": "rae@example.com", "password_hash": "sha1:deadbeef"}).to_string(),
        serde_json::json!({"email": "sam@example.com", "first_name": "Sam", "email_confirmed": true}).to_string(),
    ];
    let (code, out, err) = run(&db, &["user", "import", "-"], Some(&lines.join("\n")));
    assert_eq!(code, 1, "{err}");
    let v = json_line(&out);
    assert_eq!(v["imported"], 2);
    let failed: Vec<u64> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, vec![2, 3, 5]);
    assert!(
        v["failed"][1]["error"]
            .as_str()
            .unwrap()
            .contains("conflict: email"),
        "{v}"
    );
    assert!(!out.contains(&bcrypt_hash), "hashes are not echoed");
    db.drop_database().await;
}

async fn org_and_role_commands(db: TestDb) {
    let (code, out, err) = run(
        &db,
        &["org", "create", "--name", "Vandelay Industries"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let org_id = json_line(&out)["org_id"].as_str().unwrap().to_string();
    let (code, _, err) = run(&db, &["user", "create", "--email", "art@example.com"], None);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = run(
        &db,
        &[
            "org",
            "add-member",
            "--org",
            "vandelay-industries",
            "--user",
            "art@example.com",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let m = json_line(&out);
    assert_eq!(m["org_id"], org_id.as_str());
    assert_eq!(m["user_role"], "member");
    let (code, _, err) = run(
        &db,
        &[
            "org",
            "add-member",
            "--org",
            &org_id,
            "--user",
            "art@example.com",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("conflict"), "{err}");

    let (code, out, err) = run(
        &db,
        &[
            "role",
            "create",
            "--org",
            &org_id,
            "--name",
            "Importer",
            "--description",
            "imports latex",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["name"], "Importer");
    let (code, out, err) = run(
        &db,
        &[
            "role",
            "grant",
            "--org",
            &org_id,
            "--role",
            "importer",
            "--permission",
            "latex:import",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["permission"], "latex:import");
    let (code, _, err) = run(
        &db,
        &[
            "role", "inherit", "--org", &org_id, "--role", "member", "--from", "Importer",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    // The member now has the permission through inheritance.
    let (code, out, err) = run(
        &db,
        &[
            "role",
            "grant",
            "--org",
            &org_id,
            "--role",
            "admin",
            "--user",
            "art@example.com",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let m = json_line(&out);
    assert_eq!(m["user_role"], "admin");
    assert_eq!(
        m["inherited_user_roles_plus_current_role"],
        serde_json::json!(["Importer", "admin", "member"])
    );
    let perms: Vec<&str> = m["user_permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(perms.contains(&"latex:import"), "{perms:?}");
    assert!(
        perms.contains(&"members:write"),
        "admin's own permissions: {perms:?}"
    );

    // A cycle is refused with exit 1.
    let (code, out, err) = run(
        &db,
        &[
            "role", "inherit", "--org", &org_id, "--role", "Importer", "--from", "owner",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("cycle"), "{err}");
    let (code, _, err) = run(
        &db,
        &[
            "role",
            "grant",
            "--org",
            &org_id,
            "--role",
            "nope",
            "--user",
            "art@example.com",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("role not found"), "{err}");
    // Exactly one of --user / --permission.
    let (code, _, _) = run(
        &db,
        &["role", "grant", "--org", &org_id, "--role", "admin"],
        None,
    );
    assert_eq!(code, 2);
    db.drop_database().await;
}
