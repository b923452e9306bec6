//! The alert rules in `deploy/prometheus/`: `promtool check rules` and `promtool test rules`
//! pass, every alert has a severity and a runbook that exists, and every metric an expression
//! selects is one the govmx services declare.
//!
//! Needs `promtool` (Debian: `apt-get install -y --no-install-recommends prometheus`).

mod support;

use std::collections::BTreeSet;

use support::{declared_metric_names, promql_metric_names, promtool, repo_root};

const RULES: &str = "deploy/prometheus/govmx-alerts.yml";

fn rules() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join(RULES)).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn alerts() -> Vec<serde_json::Value> {
    rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let root = repo_root();
    let rules = root.join(RULES);
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "promtool check rules:\n{out}");
    let mut tests: Vec<String> = std::fs::read_dir(root.join("deploy/prometheus/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    tests.sort();
    assert!(
        !tests.is_empty(),
        "no rule unit tests in deploy/prometheus/tests"
    );
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = promtool(&args, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_severity_and_an_existing_runbook() {
    let root = repo_root();
    let mut linked = BTreeSet::new();
    for alert in alerts() {
        let name = alert["alert"].as_str().expect("only alerting rules");
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let want = format!("/docs/runbooks/{name}.md");
        assert!(
            url.ends_with(&want),
            "{name}: runbook_url {url} must end with {want}"
        );
        let path = root.join(&want[1..]);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{name}: runbook {}: {e}", path.display()));
        for section in ["## Meaning", "## Impact", "## Diagnosis", "## Remedy"] {
            assert!(text.contains(section), "{}: no {section}", path.display());
        }
        assert!(
            alert["annotations"]["summary"].is_string(),
            "{name}: summary"
        );
        linked.insert(format!("{name}.md"));
    }
    let files: BTreeSet<String> = std::fs::read_dir(root.join("docs/runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("Govmx"))
        .collect();
    assert_eq!(
        files, linked,
        "runbooks without an alert, or alerts without a runbook"
    );
}

#[test]
fn alert_expressions_use_only_declared_metrics() {
    let declared = declared_metric_names();
    for must in [
        "govmx_gate_decisions_total",
        "govmx_media_scans_total",
        "govmx_media_scan_duration_seconds_bucket",
        "govmx_up",
        "govmx_clamd_signature_db_age_seconds",
        "govmx_exporter_collect_failures_total",
    ] {
        assert!(declared.contains(must), "{must} not found in {declared:?}");
    }
    for alert in alerts() {
        let expr = alert["expr"].as_str().unwrap();
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{expr}: no metric found");
        for name in names {
            assert!(
                declared.contains(&name),
                "{}: {name} is not a metric any govmx service declares",
                alert["alert"]
            );
        }
    }
}

#[test]
fn promql_names_are_extracted() {
    assert_eq!(
        promql_metric_names(
            r#"sum by (job, instance) (rate(govmx_a_total{verdict="deny",x=~"a|b"}[5m])) * 60 > 1e3 or on (job) govmx_b - time() < 3 * 86400"#
        ),
        vec!["govmx_a_total", "govmx_b"]
    );
    assert_eq!(
        promql_metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(govmx_h_bucket[$__rate_interval])))"
        ),
        vec!["govmx_h_bucket"]
    );
}

#[test]
fn prometheus_rule_for_the_chart_has_the_same_groups() {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/govmx-prometheusrule.yaml"))
            .unwrap();
    let manifest: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(manifest["kind"], "PrometheusRule");
    assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        manifest["spec"]["groups"],
        rules()["groups"],
        "deploy/prometheus/govmx-prometheusrule.yaml differs from {RULES}"
    );
}

#[test]
fn example_prometheus_config_loads_the_rules() {
    let path = repo_root().join("deploy/prometheus/prometheus.example.yml");
    let (ok, out) = promtool(&["check", "config", path.to_str().unwrap()], None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "promtool check config:\n{out}");
    assert!(out.contains("19 rules found"), "{out}");
}
