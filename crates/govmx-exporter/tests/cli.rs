//! The `govmx-exporter` binary: `--check` accepts a valid config and exits 64 (`EX_USAGE`) on an
//! invalid one, naming the problem, before binding any port.

use std::process::Command;

fn run(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exporter.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_govmx-exporter"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .env("GOVMX_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_accepts_valid_and_rejects_invalid_configs() {
    let (code, out) = run("admin_listen: 127.0.0.1:9120\nclamd:\n  address: 127.0.0.1:3310\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("config is valid"), "{out}");

    let (code, out) = run("admin_listen: 127.0.0.1:9120\nclamd:\n  adress: 127.0.0.1:3310\n");
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("unknown field `adress`"), "{out}");
    assert!(out.contains(":3:"), "line of the bad key: {out}");

    let (code, out) = run("admin_listen: 127.0.0.1:9120\nsynapse:\n  url: http://127.0.0.1:8008\n");
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("set exactly one of synapse.access_token"),
        "{out}"
    );
}
