//! Fixtures shared by the exporter's integration tests: a CA directory with certificates of every
//! profile and a CRL (rcgen), a signed policy bundle (govmx-policy), a one-shot fake clamd.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use govmx_policy::bundle::{self, SignerKey};
use govmx_policy::generate::{GeneratedMember, GeneratedMetadata, federation_bundle};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Writes a CA directory under `dir`: returns `(certs_dir, crl_path)`.
///
/// - `homeserver-tls/hs.pem` (in the profile directory, 40 days left);
/// - `svc.pem`: serverAuth + clientAuth → service-mtls (20 days left);
/// - `identity.pem`: `matrix:` URI SAN → agency-identity (10 days left);
/// - `old.pem`: serverAuth, expired → homeserver-tls expired;
/// - `revoked.pem`: serverAuth, serial 42 on the CRL → homeserver-tls revoked;
/// - `junk.pem`: not PEM → unreadable;
/// - CRL: number 7, nextUpdate in 3 days, serials 42 and 43 revoked.
pub fn write_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let now = OffsetDateTime::now_utc();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.key_identifier_method = KeyIdMethod::Sha256;
    let root = CertifiedIssuer::self_signed(root, KeyPair::generate().unwrap()).unwrap();
    let certs = dir.join("issued");
    std::fs::create_dir_all(certs.join("homeserver-tls")).unwrap();
    let issue = |name: &str,
                 serial: u64,
                 days: i64,
                 ekus: Vec<ExtendedKeyUsagePurpose>,
                 uri: Option<&str>| {
        let mut params = CertificateParams::new(vec!["hs.example".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = now - time::Duration::days(400);
        params.not_after = now + time::Duration::days(days);
        params.extended_key_usages = ekus;
        if let Some(uri) = uri {
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        }
        let cert = params
            .signed_by(&KeyPair::generate().unwrap(), &root)
            .unwrap();
        // Files hold chains, as the CA hands them out: the leaf, then the issuer (which must
        // not count as an issued certificate).
        std::fs::write(certs.join(name), cert.pem() + &root.pem()).unwrap();
    };
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    issue("homeserver-tls/hs.pem", 1, 40, vec![], None);
    issue("svc.pem", 2, 20, vec![ServerAuth, ClientAuth], None);
    issue(
        "identity.pem",
        3,
        10,
        vec![ClientAuth],
        Some("matrix:u/amt:agency.example"),
    );
    issue("old.pem", 4, -1, vec![ServerAuth], None);
    issue("revoked.pem", 42, 100, vec![ServerAuth], None);
    std::fs::write(certs.join("junk.pem"), b"not a certificate").unwrap();
    let revoked = |serial: u64| RevokedCertParams {
        serial_number: SerialNumber::from(serial),
        revocation_time: now - time::Duration::hours(1),
        reason_code: None,
        invalidity_date: None,
    };
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(3),
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: vec![revoked(42), revoked(43)],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root)
    .unwrap();
    let crl_path = dir.join("crl.pem");
    std::fs::write(&crl_path, crl.pem().unwrap()).unwrap();
    (certs, crl_path)
}

/// Writes a bundle (version 5, two servers, issued an hour ago, maxAge 7d) signed by two of
/// two pinned signers under `dir`: returns `(bundle_dir, trust_path)`.
pub fn write_policy(dir: &Path) -> (PathBuf, PathBuf) {
    let bundle_dir = dir.join("bundle");
    std::fs::create_dir_all(&bundle_dir).unwrap();
    let signers = [
        SignerKey::from_seed("ed25519:alice", [1; 32]).unwrap(),
        SignerKey::from_seed("ed25519:bob", [2; 32]).unwrap(),
    ];
    let mut trust = String::from(
        "apiVersion: govmx.de/v1\nkind: TrustAnchors\n\
         metadata: {name: signers, version: 1, issued: 2026-01-01T00:00:00Z}\n\
         threshold: 2\nkeys:\n",
    );
    for s in &signers {
        trust.push_str(&format!(
            "  - id: \"{}\"\n    publicKey: \"{}\"\n    owner: test\n",
            s.id(),
            s.public_key()
        ));
    }
    let trust_path = dir.join("trust.yaml");
    std::fs::write(&trust_path, trust).unwrap();
    let hosts = ["127.0.0.2:8448".to_owned()];
    let members = [
        GeneratedMember {
            server_name: "127.0.0.2:8448",
            class: "agency",
            signing_keys: &[],
            delegated_hosts: &hosts,
        },
        GeneratedMember {
            server_name: "127.0.0.3:8448",
            class: "citizen",
            signing_keys: &[],
            delegated_hosts: &[],
        },
    ];
    let issued = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let docs = federation_bundle(
        "test bundle",
        GeneratedMetadata {
            name: "test",
            version: 5,
            issued,
            max_age: "7d",
        },
        &members,
    );
    for (name, text) in &docs {
        std::fs::write(bundle_dir.join(name), text).unwrap();
    }
    let files: Vec<(&str, &[u8])> = docs.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
    let mut existing: Option<Vec<u8>> = None;
    for s in &signers {
        let out = bundle::sign(existing.as_deref(), 5, &files, s).unwrap();
        existing = Some(out.signatures.to_json().into_bytes());
    }
    std::fs::write(bundle_dir.join(bundle::SIGNATURES_FILE), existing.unwrap()).unwrap();
    (bundle_dir, trust_path)
}

/// A fake clamd on a free loopback port that answers every connection with `reply` after
/// `delay`. Returns its address; runs until the runtime stops.
pub async fn fake_clamd(reply: &'static [u8], delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = stream.write_all(reply).await;
            });
        }
    });
    addr
}

/// A loopback address nobody listens on (bound, then released).
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Runs `promtool` with `args` and `stdin`; `Err` with a clear message when it is missing.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> Result<(bool, String), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run promtool ({e}); install it with `apt-get install -y --no-install-recommends prometheus`"
            )
        })?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The source text before its `#[cfg(test)]` module.
fn non_test_source(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Sample names of the metrics registered in a prometheus-client `metrics.rs`-style source:
/// `register("name", "help", x.field.clone())` with `field: <Type>` declared in a struct.
/// Counters get `_total`, histograms `_bucket`/`_sum`/`_count`, gauges their name.
fn registered_names(source: &str, out: &mut std::collections::BTreeSet<String>) {
    let mut fields = std::collections::BTreeMap::new();
    for line in source.lines() {
        let line = line.trim().trim_start_matches("pub ");
        if let Some((field, ty)) = line.split_once(": ")
            && field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !field.is_empty()
        {
            // The struct declaration comes first; later `field: value,` lines are constructors.
            fields
                .entry(field.to_owned())
                .or_insert_with(|| ty.trim_end_matches(',').to_owned());
        }
    }
    let flat: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
    for part in flat.split(".register(").skip(1) {
        let Some(name) = part
            .trim_start()
            .strip_prefix('"')
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        // The third argument: `<binding>.<field>.clone()`.
        let after_help = part.splitn(5, '"').nth(4).unwrap_or_default();
        let field = after_help
            .trim_start_matches([',', ' '])
            .split(".clone()")
            .next()
            .and_then(|expr| expr.rsplit('.').next())
            .unwrap_or_default();
        let ty = fields
            .get(field)
            .unwrap_or_else(|| panic!("no type for field {field:?} of {name}"));
        if ty.contains("Counter") {
            out.insert(format!("{name}_total"));
        } else if ty.contains("Histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        } else {
            out.insert(name.to_owned());
        }
    }
}

/// Every sample name the govmx services declare: the gate's and the scanner's `metrics.rs`, the
/// exporter's registered metrics, and the exporter's cached gauges (every `"govmx_…"` literal in
/// its non-test sources).
pub fn declared_metric_names() -> std::collections::BTreeSet<String> {
    let root = repo_root();
    let mut names = std::collections::BTreeSet::new();
    for file in [
        "crates/govmx-federation-gate/src/metrics.rs",
        "crates/govmx-media-scanner/src/metrics.rs",
        "crates/govmx-exporter/src/lib.rs",
    ] {
        registered_names(&non_test_source(&root.join(file)), &mut names);
    }
    let registered = names.clone();
    for entry in std::fs::read_dir(root.join("crates/govmx-exporter/src")).unwrap() {
        let source = non_test_source(&entry.unwrap().path());
        for literal in source.split('"').skip(1).step_by(2) {
            if literal.starts_with("govmx_")
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !registered.iter().any(|r| r.starts_with(literal))
            {
                names.insert(literal.to_owned());
            }
        }
    }
    names
}

/// The metric names a PromQL expression selects (identifiers outside label matchers, ranges,
/// strings and `by (…)`-style label lists that are not functions or keywords).
pub fn promql_metric_names(expr: &str) -> Vec<String> {
    // Drop strings, `{…}` and `[…]`.
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string: Option<char> = None;
    for c in expr.chars() {
        match (in_string, c) {
            (Some(q), c) if c == q => in_string = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => in_string = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => cleaned.push(c),
            _ => {}
        }
    }
    // Drop label lists after grouping keywords.
    let grouping = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let keywords = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = cleaned.chars().collect();
    let mut tokens: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            tokens.push((chars[start..i].iter().collect(), i));
        } else if c.is_ascii_digit() || c == '.' {
            // A number (with an optional exponent or duration unit).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    let mut names = Vec::new();
    let mut skip_group_until: Option<usize> = None;
    for (token, end) in tokens {
        if let Some(limit) = skip_group_until {
            if end <= limit {
                continue;
            }
            skip_group_until = None;
        }
        let rest: String = chars[end..].iter().collect();
        let next = rest.trim_start();
        if grouping.contains(&token.as_str()) && next.starts_with('(') {
            let open = end + (rest.len() - next.len());
            let close = chars[open..]
                .iter()
                .position(|c| *c == ')')
                .map_or(chars.len(), |p| open + p);
            skip_group_until = Some(close);
            continue;
        }
        if next.starts_with('(') || keywords.contains(&token.to_ascii_lowercase().as_str()) {
            continue;
        }
        names.push(token);
    }
    names
}
