//! The layering rules of ARCHITECTURE.md, enforced: axum only under src/http/, sqlx only
//! under src/store/.
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn offenders(krate: &str, allowed: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "scanned too few files");
    let mut bad = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with(allowed) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(&format!("{krate}::")) || code.contains(&format!("use {krate}")) {
                bad.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn axum_only_under_http() {
    let bad = offenders("axum", "http/");
    assert!(
        bad.is_empty(),
        "axum outside src/http/:\n{}",
        bad.join("\n")
    );
}

#[test]
fn sqlx_only_under_store() {
    let bad = offenders("sqlx", "store/");
    assert!(
        bad.is_empty(),
        "sqlx outside src/store/:\n{}",
        bad.join("\n")
    );
}
