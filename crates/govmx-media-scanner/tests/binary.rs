//! The real binary: `--check` accepts the example config, a bad config exits 64 (EX_USAGE) with a
//! `file:line:column` message before anything is bound; and every source file opens with `//!`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_govmx-media-scanner");

#[test]
fn example_config_checks_and_bad_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"))
            .unwrap();
    let example = example
        .replace(
            "/var/lib/govmx-media-scanner/spool",
            dir.path().to_str().unwrap(),
        )
        .replace(
            "/var/log/govmx/media-audit.jsonl",
            dir.path().join("audit.jsonl").to_str().unwrap(),
        )
        .replace(
            "/var/lib/govmx-media-scanner/mcs-request-secret",
            dir.path().join("mcs-request-secret").to_str().unwrap(),
        );
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, &example).unwrap();
    let out = Command::new(BIN)
        .arg("--check")
        .arg("-c")
        .arg(&good)
        .env("GOVMX_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        example.replace(
            "scanner_unavailable: reject",
            "scanner_unavailable: reject\nscan_timout: 5s",
        ),
    )
    .unwrap();
    let out = Command::new(BIN).arg("-c").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:") && stderr.contains("unknown field `scan_timout`"),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .arg("-c")
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut missing = Vec::new();
    for krate in ["govmx-service", "govmx-media-scanner"] {
        let mut stack = vec![std::path::PathBuf::from(root).join(krate)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() && !path.ends_with("target") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if !text.starts_with("//!") {
                        missing.push(path.display().to_string());
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}
