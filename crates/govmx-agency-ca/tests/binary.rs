//! The `govmx-agency-ca` binary: `--check` accepts the example config and exits 64 on a bad one
//! (before binding anything).

use std::process::Command;

fn run(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_govmx-agency-ca"))
        .args(["--check", "--config"])
        .arg(config)
        .env("GOVMX_LOG", "info")
        .output()
        .expect("run govmx-agency-ca");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_example_and_bad_configs() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.yaml");
    let (code, out) = run(&example);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("config is valid"), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("agency_identity: 7d", "agency_identity: 500d");
    std::fs::write(&bad, text).unwrap();
    let (code, out) = run(&bad);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("lifetimes.agency_identity: 500d is longer than 398 days"),
        "{out}"
    );
}
