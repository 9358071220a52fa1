//! Configuration errors stop the process with status 2 and one line naming the key.
use crate::helpers::lintel;

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    lines[0]
}

#[test]
fn unknown_key_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "[http]\nbody_limit = 5\n").unwrap();
    let (code, out, err) = lintel(dir.path(), &["migrate"], &[], None);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(
        one_line(&err),
        "lintel: config: unknown key `http.body_limit` in config.toml"
    );
}

#[test]
fn malformed_url_names_the_key_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = lintel(
        dir.path(),
        &["serve"],
        &[("LINTEL_ISSUER", "not a url")],
        None,
    );
    assert_eq!(code, 2);
    let line = one_line(&err);
    assert!(
        line.starts_with("lintel: config: `issuer` (from LINTEL_ISSUER): not a valid URL"),
        "{line}"
    );
}

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = lintel(
        dir.path(),
        &["--config", "missing.toml", "serve"],
        &[],
        None,
    );
    assert_eq!(code, 2);
    let line = one_line(&err);
    assert!(
        line.starts_with("lintel: config: missing.toml: cannot read"),
        "{line}"
    );
}

#[test]
fn unknown_environment_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = lintel(dir.path(), &["serve"], &[("LINTEL_DATABSE_URL", "x")], None);
    assert_eq!(code, 2);
    assert_eq!(
        one_line(&err),
        "lintel: config: unknown environment variable LINTEL_DATABSE_URL"
    );
}

#[test]
fn unreachable_database_exits_2_without_leaking_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = lintel(
        dir.path(),
        &["serve"],
        &[
            (
                "LINTEL_DATABASE_URL",
                "postgres://lintel:sekret-pw-42@127.0.0.1:1/lintel",
            ),
            ("LINTEL_DATABASE_CONNECT_TIMEOUT_SECS", "1"),
            ("LINTEL_LOG_LEVEL", "debug"),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(!err.contains("sekret-pw-42"), "password leaked: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(
            "lintel: database: postgres://lintel:REDACTED@127.0.0.1:1/lintel: cannot connect"
        ),
        "{last}"
    );
}

#[test]
fn malformed_database_url_never_echoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = lintel(
        dir.path(),
        &["migrate"],
        &[("LINTEL_DATABASE_URL", "mysql://root:sekret-pw-43@db/x")],
        None,
    );
    assert_eq!(code, 2);
    let line = one_line(&err);
    assert!(
        line.contains("`database_url`") && line.contains("unsupported scheme"),
        "{line}"
    );
    assert!(!line.contains("sekret-pw-43"));
}

#[test]
fn the_shipped_config_file_starts_the_cli() {
    // The repository's config.toml is what `cargo run` reads: it must be accepted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        dir.path().join("config.toml"),
    )
    .unwrap();
    let (code, out, err) = lintel(dir.path(), &["migrate"], &[], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["database"], "sqlite");
    // The default SQLite file is created under ./data.
    assert!(dir.path().join("data/lintel.db").exists());
}
