//! Decision-engine benchmark: a 100,000-server federation list.
//!
//! Measures (1) parse + check + compile of the list, which is what a hot reload costs, and
//! (2) `may_federate` decisions per second on one core, for listed origins (allow path) and
//! unlisted ones (deny path, the border under attack). Run with
//! `cargo bench -p govmx-policy --bench decisions`; figures go to `docs/benchmarks.md`.

use std::hint::black_box;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use govmx_policy::{PolicySet, parse_document};
use ruma_common::{OwnedServerName, ServerName};
use time::macros::datetime;

const SERVERS: usize = 100_000;
const DECISIONS: usize = 10_000_000;
const OWN: &str = "127.0.0.2:8448";

fn main() -> io::Result<()> {
    let now = datetime!(2026-12-01 12:00 UTC);
    let mut federation = include_str!("../../../policies/federation.yaml").to_owned();
    for i in 0..SERVERS {
        let class = if i % 2 == 0 { "agency" } else { "citizen" };
        federation.push_str(&format!(
            "  - serverName: \"s{i}.example.de\"\n    organisation: {{id: org-{i}, displayName: Org {i}}}\n    class: {class}\n"
        ));
    }
    let others = [
        (
            "contact-rules.yaml",
            include_str!("../../../policies/contact-rules.yaml"),
        ),
        (
            "media-rules.yaml",
            include_str!("../../../policies/media-rules.yaml"),
        ),
        (
            "agencies.yaml",
            include_str!("../../../policies/agencies.yaml"),
        ),
    ];
    let own = <&ServerName>::try_from(OWN).expect("own server name");

    // The same list in JSON syntax (also YAML), which parse_document reads with serde_json.
    let federation_json = {
        let value: serde_json::Value =
            serde_norway::from_str(&federation).expect("generated list is YAML");
        serde_json::to_string(&value).expect("JSON")
    };

    let mut out = io::stdout().lock();
    let mut set = None;
    for (syntax, text) in [("YAML", &federation), ("JSON", &federation_json)] {
        let mut best_load = Duration::MAX;
        let mut best_parse = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut docs = vec![
                parse_document("federation.yaml", text.as_bytes(), Some(now))
                    .expect("generated list parses"),
            ];
            best_parse = best_parse.min(started.elapsed());
            for (file, text) in others {
                docs.push(
                    parse_document(file, text.as_bytes(), Some(now)).expect("example parses"),
                );
            }
            let built = PolicySet::new(docs, own).expect("consistent set");
            best_load = best_load.min(started.elapsed());
            set = Some(built);
        }
        writeln!(
            out,
            "load {SERVERS} servers ({} KiB {syntax}): parse + check + compile {:.1} ms, of which parse + per-document checks {:.1} ms (best of 3)",
            text.len() / 1024,
            best_load.as_secs_f64() * 1e3,
            best_parse.as_secs_f64() * 1e3,
        )?;
    }
    let set = set.expect("built at least once");

    // Origins spread over the whole list, parsed once so the loop measures only the decision.
    let listed: Vec<OwnedServerName> = (0..1024)
        .map(|i| {
            format!("s{}.example.de", i * 97 % SERVERS)
                .try_into()
                .expect("name")
        })
        .collect();
    let unlisted: Vec<OwnedServerName> = (0..1024)
        .map(|i| format!("x{i}.unlisted.example").try_into().expect("name"))
        .collect();
    for (label, origins, want) in [("allow", &listed, true), ("deny", &unlisted, false)] {
        let started = Instant::now();
        let mut allowed = 0usize;
        for i in 0..DECISIONS {
            let decision = set.may_federate(black_box(&origins[i & 1023]), own, now);
            allowed += usize::from(decision.is_allowed());
        }
        let elapsed = started.elapsed();
        assert_eq!(allowed == DECISIONS, want, "{label} path decided wrongly");
        writeln!(
            out,
            "{label:>5} path: {DECISIONS} decisions in {:.3} s = {:.2} M decisions/s on one core ({:.0} ns each)",
            elapsed.as_secs_f64(),
            DECISIONS as f64 / elapsed.as_secs_f64() / 1e6,
            elapsed.as_nanos() as f64 / DECISIONS as f64
        )?;
    }
    Ok(())
}
