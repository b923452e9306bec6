//! End-to-end tests of `govmx policy …`: the real binary in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const NOW: &str = "2026-12-01T00:00:00Z";

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// Runs `govmx policy <args>`; returns (exit code, stdout + stderr).
fn govmx(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_govmx"))
        .arg("policy")
        .args(args)
        .output()
        .expect("run govmx");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A copy of the top-level files of `policies/` (the bundle).
fn copy_bundle(to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn lint_passes_on_the_example_network() {
    let (code, out) = govmx(&[
        "lint",
        "--own-server",
        "127.0.0.2:8448",
        "--now",
        NOW,
        path_str(&policies()),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 files checked, no errors"), "{out}");
}

#[test]
fn lint_fails_on_each_invalid_example_where_it_says() {
    let dir = policies().join("examples/invalid");
    let mut n_files = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let (position, rule) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .and_then(|l| l.split_once(' '))
            .expect("# expect: L:C rule");
        let (code, out) = govmx(&["lint", "--now", NOW, path_str(&path)]);
        assert_eq!(code, 1, "{out}");
        let first = out.lines().next().unwrap_or_default();
        let want = format!("{}:{position}: error[{rule}]: ", path.display());
        assert!(
            first.starts_with(&want),
            "{}: want {want:?}, got {first:?}",
            path.display()
        );
        n_files += 1;
    }
    assert!(n_files >= 12);
}

#[test]
fn lint_reports_the_own_server() {
    let (code, out) = govmx(&[
        "lint",
        "--own-server",
        "127.0.0.9:8448",
        "--now",
        NOW,
        path_str(&policies()),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("federation.yaml:16:3: error[own-server-not-listed]: our own server 127.0.0.9:8448 is not on the federation list"), "{out}");
}

#[test]
fn keygen_sign_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    copy_bundle(&bundle);
    let keys: Vec<(String, String)> = ["alice", "bob"]
        .iter()
        .map(|name| {
            let key = tmp.path().join(format!("{name}.key"));
            let (code, out) = govmx(&[
                "keygen",
                "--id",
                &format!("ed25519:{name}"),
                "--out",
                path_str(&key),
            ]);
            assert_eq!(code, 0, "{out}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
            let public = out
                .lines()
                .find_map(|l| l.trim().strip_prefix("publicKey: "))
                .unwrap()
                .trim_matches('"')
                .to_owned();
            (key.display().to_string(), public)
        })
        .collect();
    // Keygen refuses to overwrite.
    assert_eq!(
        govmx(&["keygen", "--id", "ed25519:alice", "--out", &keys[0].0]).0,
        2
    );
    let trust = tmp.path().join("trust.yaml");
    fs::write(
        &trust,
        format!(
            "apiVersion: govmx.de/v1\nkind: TrustAnchors\nmetadata: {{name: t, version: 1, issued: 2026-11-20T00:00:00Z}}\nthreshold: 2\nkeys:\n  - {{id: \"ed25519:alice\", publicKey: \"{}\", owner: A}}\n  - {{id: \"ed25519:bob\", publicKey: \"{}\", owner: B}}\n",
            keys[0].1, keys[1].1
        ),
    )
    .unwrap();
    let (trust, bundle_str) = (path_str(&trust), path_str(&bundle));

    let (code, out) = govmx(&["verify", "--trust", trust, bundle_str]);
    assert_eq!(code, 1);
    assert!(out.contains("SIGNATURES.json is missing"), "{out}");

    let (code, out) = govmx(&["sign", "--now", NOW, "--key", &keys[0].0, bundle_str]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed bundle version 7"), "{out}");
    let (code, out) = govmx(&["verify", "--trust", trust, bundle_str]);
    assert_eq!(code, 1);
    assert!(
        out.contains("too few signatures: 1 valid signature, 2 required"),
        "{out}"
    );

    let (code, out) = govmx(&["sign", "--now", NOW, "--key", &keys[1].0, bundle_str]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = govmx(&["verify", "--trust", trust, bundle_str]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK: bundle version 7 verified, signed by ed25519:alice, ed25519:bob"),
        "{out}"
    );

    // One changed byte in one file: verification names the file.
    let media = bundle.join("media-rules.yaml");
    let mut bytes = fs::read(&media).unwrap();
    let at = bytes.iter().position(|&b| b == b'5').unwrap();
    bytes[at] = b'6';
    fs::write(&media, &bytes).unwrap();
    let (code, out) = govmx(&["verify", "--trust", trust, bundle_str]);
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "verification failed: media-rules.yaml: content does not match the signed manifest"
        ),
        "{out}"
    );

    // An extra file is refused too.
    bytes[at] = b'5';
    fs::write(&media, &bytes).unwrap();
    assert_eq!(govmx(&["verify", "--trust", trust, bundle_str]).0, 0);
    fs::write(bundle.join("extra.yaml"), "x: 1\n").unwrap();
    let (code, out) = govmx(&["verify", "--trust", trust, bundle_str]);
    assert_eq!(code, 1);
    assert!(
        out.contains("extra.yaml: file is in the bundle but not in the signed manifest"),
        "{out}"
    );
}

#[test]
fn sign_refuses_an_invalid_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    copy_bundle(&bundle);
    fs::copy(
        policies().join("examples/invalid/duplicate-server.yaml"),
        bundle.join("federation.yaml"),
    )
    .unwrap();
    let key = tmp.path().join("k.key");
    assert_eq!(
        govmx(&["keygen", "--id", "ed25519:k", "--out", path_str(&key)]).0,
        0
    );
    let (code, out) = govmx(&[
        "sign",
        "--now",
        NOW,
        "--key",
        path_str(&key),
        path_str(&bundle),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error[duplicate-server]") && out.contains("not signing"),
        "{out}"
    );
    assert!(!bundle.join("SIGNATURES.json").exists());
}

#[test]
fn diff_reports_an_added_server() {
    let tmp = tempfile::tempdir().unwrap();
    let old = policies().join("federation.yaml");
    let text = fs::read_to_string(&old).unwrap();
    let new_text = text
        .replace("version: 7 ", "version: 8 ")
        .replace("class: citizen ", "class: agency ")
        + "  - serverName: \"127.0.0.5:8448\"\n    organisation: {id: landratsamt-x, displayName: Landratsamt X}\n    class: agency\n";
    let new = tmp.path().join("federation.yaml");
    fs::write(&new, new_text).unwrap();
    let (code, out) = govmx(&["diff", path_str(&old), path_str(&new)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Federation list version 7 → 8"), "{out}");
    assert!(
        out.contains("+ server 127.0.0.5:8448 (Landratsamt X, agency) added"),
        "{out}"
    );
    assert!(
        out.contains("~ server 127.0.0.3:8448: class citizen → agency"),
        "{out}"
    );
    let (code, out) = govmx(&["diff", path_str(&old), path_str(&old)]);
    assert_eq!((code, out.trim()), (0, "no differences"));
    let (code, out) = govmx(&["diff", path_str(&policies()), path_str(&policies())]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn explain_prints_verdict_rule_and_reason() {
    let dir = policies();
    let (code, out) = govmx(&[
        "explain",
        path_str(&dir),
        "--now",
        NOW,
        "invite",
        "--inviter",
        "@max:127.0.0.3:8448",
        "--invitee",
        "@erika:127.0.0.3:8448",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("verdict: deny\nrule:    citizen-to-citizen\n"),
        "{out}"
    );
    let (code, out) = govmx(&[
        "explain",
        path_str(&dir),
        "--json",
        "--now",
        NOW,
        "federation",
        "--origin",
        "127.0.0.3:8448",
        "--destination",
        "127.0.0.2:8448",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(r#"{"verdict":"allow","rule":"member:127.0.0.3:8448","reason":"#),
        "{out}"
    );
}

#[test]
fn committed_schemas_are_fresh() {
    let (code, out) = govmx(&[
        "schema",
        "--check",
        "--out",
        path_str(&policies().join("schema")),
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn synapse_whitelist_lists_every_member_exactly() {
    let (code, out) = govmx(&["synapse-whitelist", path_str(&policies())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "# Generated by govmx from federation list \"hessen-verwaltungsnetz\" version 7; \
         Synapse reads it only at start.\n\
         federation_domain_whitelist:\n  - \"127.0.0.2:8448\"\n  - \"127.0.0.3:8448\"\n  - \"127.0.0.4:8448\"\n"
    );
    let (code, out) = govmx(&["synapse-whitelist", path_str(&policies().join("schema"))]);
    assert_ne!(code, 0);
    assert!(
        out.contains("expected exactly one FederationList document, found 0"),
        "{out}"
    );
}
