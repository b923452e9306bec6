//! Synapse homeservers: spec, rendered configuration, start with a `/health` deadline, users.
//!
//! Follows the loopback federation recipe: server name `IP:port` (no discovery, no SNI, IP SAN
//! checked), `trusted_key_servers: []`, `federation_custom_ca_list` with our CA, and
//! `ip_range_blacklist: []` (the allowlist alone does not let IP-literal peers through).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ca::{RunCa, ServerCert};
use crate::gate::{Gate, GateWiring};
use crate::policy::{ListedServer, RunPolicy, synapse_public_key};
use crate::process::Supervised;
use crate::util::{create_dir, random_hex, write_file, yaml_str};
use crate::{Result, StackError};

/// How long a homeserver may take from spawn to a healthy `/health` (cold, parallel, 2 CPUs).
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// Interval between `/health` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What terminates federation TLS in front of Synapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FederationFront {
    /// The govmx federation gate, in-process: TLS on the federation address, the run's signed
    /// federation list enforced inbound and (as Synapse's `https_proxy`) outbound; Synapse's
    /// federation listener is plain HTTP on a private loopback port. See [`crate::gate`].
    #[default]
    Gate,
    /// Synapse terminates TLS itself (`tls: true` listener, `tls_certificate_path`) and
    /// connects to peers directly. Used for servers outside the network (unlisted ones).
    SynapseTls,
}

/// What a homeserver should be: its label, addresses and which CA it trusts for federation.
#[derive(Debug, Clone)]
pub struct HomeserverSpec {
    /// Short name, e.g. `agency` or `citizen`; also the state subdirectory.
    pub label: String,
    /// The federation address; the server name is its `IP:port` text.
    pub federation_addr: SocketAddr,
    /// The plain-HTTP client listener (client API, admin API, `/health`).
    pub client_addr: SocketAddr,
    /// The CA file for `federation_custom_ca_list`; `None` means the run CA.
    pub trusted_ca: Option<PathBuf>,
    /// What terminates federation TLS.
    pub front: FederationFront,
    /// Whether the run's federation list names this server (with its real signing key).
    pub listed: bool,
    /// Its class on the federation list: `agency`, `citizen` or `infrastructure`.
    pub class: String,
    /// Gate strict mode: X-Matrix signatures verified at the edge with the pinned keys.
    pub gate_strict: bool,
    /// Load the govmx Synapse module (built and installed into the venv on start); `None`
    /// (the default) leaves Synapse without modules.
    pub module: Option<crate::module::ModuleSpec>,
}

impl HomeserverSpec {
    /// A listed `agency` server trusting the run CA, behind a federation gate (strict mode).
    pub fn new(
        label: impl Into<String>,
        federation_addr: SocketAddr,
        client_addr: SocketAddr,
    ) -> HomeserverSpec {
        HomeserverSpec {
            label: label.into(),
            federation_addr,
            client_addr,
            trusted_ca: None,
            front: FederationFront::Gate,
            listed: true,
            class: "agency".to_owned(),
            gate_strict: true,
            module: None,
        }
    }

    /// Run the govmx Synapse module with `module`.
    pub fn with_module(mut self, module: crate::module::ModuleSpec) -> HomeserverSpec {
        self.module = Some(module);
        self
    }

    /// A server that runs but is not on the run's federation list: an outsider, so it has no
    /// gate of ours (Synapse terminates TLS and connects to peers directly).
    pub fn unlisted(mut self) -> HomeserverSpec {
        self.listed = false;
        self.front = FederationFront::SynapseTls;
        self
    }

    /// Another federation front.
    pub fn with_front(mut self, front: FederationFront) -> HomeserverSpec {
        self.front = front;
        self
    }

    /// Another class on the federation list.
    pub fn with_class(mut self, class: impl Into<String>) -> HomeserverSpec {
        self.class = class.into();
        self
    }

    /// Trust `ca_file` instead of the run CA for outbound federation (the negative control).
    pub fn with_trusted_ca(mut self, ca_file: impl Into<PathBuf>) -> HomeserverSpec {
        self.trusted_ca = Some(ca_file.into());
        self
    }

    /// The Matrix server name, `IP:port` of the federation address.
    pub fn server_name(&self) -> String {
        self.federation_addr.to_string()
    }
}

/// Per-homeserver secrets, generated on first start and kept in `secrets.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HomeserverSecrets {
    /// For the shared-secret admin registration API.
    pub registration_shared_secret: String,
    /// Synapse's `macaroon_secret_key`.
    pub macaroon_secret_key: String,
    /// Synapse's `form_secret`.
    pub form_secret: String,
}

impl HomeserverSecrets {
    fn generate() -> HomeserverSecrets {
        HomeserverSecrets {
            registration_shared_secret: random_hex(32),
            macaroon_secret_key: random_hex(32),
            form_secret: random_hex(32),
        }
    }
}

/// Everything `homeserver.yaml` is rendered from, with all paths resolved.
#[derive(Debug, Clone)]
pub struct HomeserverConfig {
    /// `IP:port`.
    pub server_name: String,
    /// The federation listener.
    pub federation_addr: SocketAddr,
    /// The client listener.
    pub client_addr: SocketAddr,
    /// The homeserver's state directory (DB, media, keys, logs).
    pub data_dir: PathBuf,
    /// The server certificate for the federation listener.
    pub tls: ServerCert,
    /// The CA file trusted for outbound federation.
    pub trusted_ca: PathBuf,
    /// The secrets.
    pub secrets: HomeserverSecrets,
    /// Behind a gate: where Synapse's plain federation listener goes and the gate's CONNECT
    /// proxy; `None`: Synapse terminates federation TLS itself.
    pub gate: Option<GateWiring>,
    /// The govmx Synapse module, rendered as `modules:`; `None`: no modules.
    pub module: Option<crate::module::ModuleSpec>,
}

/// Renders `homeserver.yaml`. Pure: the one place the Synapse configuration is decided.
pub fn render_homeserver_yaml(config: &HomeserverConfig) -> String {
    let path = |name: &str| yaml_str(&config.data_dir.join(name).display().to_string());
    let client = config.client_addr;
    let federation = config.federation_addr;
    let mut yaml = String::new();
    let _ = write!(
        yaml,
        "# Generated by govmx-stack on every start; edits are overwritten.\n\
server_name: {server_name}\n\
public_baseurl: {public_baseurl}\n\
pid_file: {pid}\n\
report_stats: false\n\
enable_metrics: false\n\
listeners:\n\
\x20 - port: {client_port}\n\
\x20   bind_addresses: [{client_ip}]\n\
\x20   type: http\n\
\x20   tls: false\n\
\x20   x_forwarded: false\n\
\x20   resources: [{{names: [client], compress: false}}]\n",
        server_name = yaml_str(&config.server_name),
        public_baseurl = yaml_str(&format!("http://{client}/")),
        pid = path("homeserver.pid"),
        client_port = client.port(),
        client_ip = yaml_str(&client.ip().to_string()),
    );
    match config.gate {
        None => {
            let _ = write!(
                yaml,
                "\x20 - port: {port}\n\
\x20   bind_addresses: [{ip}]\n\
\x20   type: http\n\
\x20   tls: true\n\
\x20   resources: [{{names: [federation], compress: false}}]\n\
tls_certificate_path: {cert}\n\
tls_private_key_path: {key}\n",
                port = federation.port(),
                ip = yaml_str(&federation.ip().to_string()),
                cert = yaml_str(&config.tls.cert_path.display().to_string()),
                key = yaml_str(&config.tls.key_path.display().to_string()),
            );
        }
        Some(gate) => {
            let _ = write!(
                yaml,
                "\x20 # Plain federation listener behind the govmx federation gate on {federation}.\n\
\x20 - port: {port}\n\
\x20   bind_addresses: [{ip}]\n\
\x20   type: http\n\
\x20   tls: false\n\
\x20   x_forwarded: true\n\
\x20   resources: [{{names: [federation], compress: false}}]\n\
# Outbound federation (and key fetches) through the gate's CONNECT proxy. Synapse does not\n\
# apply ip_range_blacklist to the proxy connection itself, but still to the IP-literal\n\
# destination (see below); the gate decides which targets are reachable.\n\
https_proxy: {proxy}\n",
                port = gate.upstream.port(),
                ip = yaml_str(&gate.upstream.ip().to_string()),
                proxy = yaml_str(&format!("http://{}", gate.connect)),
            );
        }
    }
    let _ = write!(
        yaml,
        "database:\n\
\x20 name: sqlite3\n\
\x20 args: {{database: {db}}}\n\
log_config: {log_config}\n\
media_store_path: {media}\n\
signing_key_path: {signing_key}\n\
registration_shared_secret: {registration}\n\
macaroon_secret_key: {macaroon}\n\
form_secret: {form}\n\
enable_registration: false\n\
presence: {{enabled: false}}\n\
trusted_key_servers: []\n\
suppress_key_server_warning: true\n\
federation_custom_ca_list: [{ca}]\n\
federation_verify_certificates: true\n\
# Required on loopback: IP-literal peers bypass ip_range_whitelist (recipe pitfall 1).\n\
ip_range_blacklist: []\n\
# MSC4133 custom profile fields (unstable path, what matrix-sdk uses): agency identity chains.\n\
experimental_features: {{msc4133_enabled: true}}\n",
        db = path("homeserver.db"),
        log_config = path("log.config"),
        media = path("media"),
        signing_key = path("signing.key"),
        registration = yaml_str(&config.secrets.registration_shared_secret),
        macaroon = yaml_str(&config.secrets.macaroon_secret_key),
        form = yaml_str(&config.secrets.form_secret),
        ca = yaml_str(&config.trusted_ca.display().to_string()),
    );
    if let Some(module) = &config.module {
        yaml.push_str(&crate::module::render_modules_yaml(
            module,
            &config.data_dir,
        ));
    }
    yaml
}

/// Renders the Python logging configuration: everything at INFO into `log_file`, unbuffered.
pub fn render_log_config(log_file: &Path) -> String {
    format!(
        "version: 1\n\
formatters:\n\
\x20 precise:\n\
\x20   format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'\n\
handlers:\n\
\x20 file:\n\
\x20   class: logging.FileHandler\n\
\x20   formatter: precise\n\
\x20   filename: {file}\n\
\x20   encoding: utf8\n\
loggers:\n\
\x20 synapse.storage.SQL:\n\
\x20   level: INFO\n\
root:\n\
\x20 level: INFO\n\
\x20 handlers: [file]\n\
disable_existing_loggers: false\n",
        file = yaml_str(&log_file.display().to_string())
    )
}

/// Credentials of a registered or logged-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Full user id, e.g. `@amt:127.0.0.2:8448`.
    pub user_id: String,
    /// Access token for the client API.
    pub access_token: String,
    /// The device the token belongs to.
    pub device_id: String,
}

/// A running Synapse homeserver.
#[derive(Debug)]
pub struct Homeserver {
    spec: HomeserverSpec,
    data_dir: PathBuf,
    secrets: HomeserverSecrets,
    http: reqwest::Client,
    process: Supervised,
    // Declared after `process`: Synapse stops before its gate goes away.
    gate: Option<Gate>,
}

/// Creates the homeserver's state directory and signing key (before the list is published) and
/// returns its entry for the federation list.
pub(crate) fn prepare(spec: &HomeserverSpec, data_dir: &Path) -> Result<ListedServer> {
    create_dir(data_dir)?;
    create_dir(&data_dir.join("media"))?;
    ensure_signing_key(&data_dir.join("signing.key"))?;
    listing(spec, data_dir)
}

fn listing(spec: &HomeserverSpec, data_dir: &Path) -> Result<ListedServer> {
    let path = data_dir.join("signing.key");
    let text = std::fs::read_to_string(&path).map_err(StackError::io("reading", &path))?;
    let key = synapse_public_key(&text).ok_or_else(|| StackError::CorruptState {
        path: path.clone(),
        detail: "not a Synapse ed25519 signing key".to_owned(),
    })?;
    Ok(ListedServer {
        server_name: spec.server_name(),
        class: spec.class.clone(),
        signing_keys: vec![key],
        delegated_hosts: vec![spec.federation_addr.to_string()],
    })
}

impl Homeserver {
    /// Starts the gate (if any), renders the configuration and spawns Synapse without waiting.
    /// Call [`prepare`] first.
    pub(crate) async fn spawn(
        spec: &HomeserverSpec,
        data_dir: &Path,
        python: &Path,
        ca: &RunCa,
        policy: &RunPolicy,
        http: reqwest::Client,
    ) -> Result<Homeserver> {
        let secrets = load_or_create_secrets(&data_dir.join("secrets.json"))?;
        let tls = ca.issue_server_cert(spec.federation_addr.ip(), &data_dir.join("tls"))?;
        let gate = match spec.front {
            FederationFront::SynapseTls => None,
            FederationFront::Gate => Some(
                Gate::start(
                    spec,
                    &tls,
                    spec.trusted_ca.as_deref().unwrap_or(ca.cert_path()),
                    policy,
                    &data_dir.join("gate"),
                    http.clone(),
                )
                .await?,
            ),
        };
        let config = HomeserverConfig {
            server_name: spec.server_name(),
            federation_addr: spec.federation_addr,
            client_addr: spec.client_addr,
            data_dir: data_dir.to_owned(),
            tls,
            trusted_ca: spec
                .trusted_ca
                .clone()
                .unwrap_or_else(|| ca.cert_path().to_owned()),
            secrets: secrets.clone(),
            gate: gate.as_ref().map(Gate::wiring),
            module: spec.module.clone(),
        };
        if spec.module.is_some() {
            create_dir(&data_dir.join("govmx-module"))?;
            // `<cache>/synapse-<version>/bin/python` → `<cache>`.
            let cache_dir = python
                .ancestors()
                .nth(3)
                .map(Path::to_owned)
                .unwrap_or_else(crate::prereq::default_cache_dir);
            let python = python.to_owned();
            tokio::task::spawn_blocking(move || crate::module::ensure_module(&cache_dir, &python))
                .await
                .map_err(|error| {
                    StackError::InvalidSpec(format!("building the Synapse module: {error}"))
                })??;
        }
        let config_path = data_dir.join("homeserver.yaml");
        let log_path = data_dir.join("homeserver.log");
        write_file(
            &config_path,
            render_homeserver_yaml(&config).as_bytes(),
            0o600,
        )?;
        write_file(
            &data_dir.join("log.config"),
            render_log_config(&log_path).as_bytes(),
            0o644,
        )?;
        let mut command = Command::new(python);
        command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .current_dir(data_dir);
        isolate_environment(&mut command);
        let process = Supervised::spawn(format!("synapse {}", spec.label), command, &log_path)?;
        Ok(Homeserver {
            spec: spec.clone(),
            data_dir: data_dir.to_owned(),
            secrets,
            http,
            process,
            gate,
        })
    }

    /// The federation gate in front of it, if [`FederationFront::Gate`].
    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }

    /// Its entry for the federation list (server name, class, real signing key, delegated host),
    /// whether or not it is listed now.
    pub fn listing(&self) -> Result<ListedServer> {
        listing(&self.spec, &self.data_dir)
    }

    /// Polls `/health` on the client listener until 200, the process exits or [`START_DEADLINE`].
    pub(crate) async fn wait_healthy(&mut self) -> Result<()> {
        let started = Instant::now();
        let url = format!("{}/health", self.client_url());
        loop {
            if let Some(status) = self.process.exit_status() {
                return Err(self.process.start_failed(format!("exited with {status}")));
            }
            if let Ok(response) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && response.status().is_success()
            {
                break;
            }
            if started.elapsed() > START_DEADLINE {
                return Err(self.process.start_failed(format!(
                    "no healthy {url} within {} s",
                    START_DEADLINE.as_secs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        // Both listeners come up together; make sure the federation port accepts too (behind
        // a gate: Synapse's plain listener; the gate's TLS listener is bound already).
        let federation = self
            .gate
            .as_ref()
            .map_or(self.spec.federation_addr, Gate::upstream_addr);
        if tokio::net::TcpStream::connect(federation).await.is_err() {
            return Err(self.process.start_failed(format!(
                "client listener healthy but federation {federation} refuses connections"
            )));
        }
        if let Some(gate) = &self.gate {
            // The gate answers /readyz 200 once it verified the run's federation list.
            while !gate.is_ready().await {
                if started.elapsed() > START_DEADLINE {
                    return Err(self.process.start_failed(format!(
                        "federation gate {}/readyz not ready within {} s (federation list not loaded?)",
                        gate.admin_url(),
                        START_DEADLINE.as_secs()
                    )));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        tracing::info!(label = %self.spec.label, server_name = %self.server_name(), elapsed_ms = started.elapsed().as_millis() as u64, "homeserver healthy");
        Ok(())
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &HomeserverSpec {
        &self.spec
    }

    /// The label, e.g. `agency`.
    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// The Matrix server name, e.g. `127.0.0.2:8448`.
    pub fn server_name(&self) -> String {
        self.spec.server_name()
    }

    /// The client-server API base URL, e.g. `http://127.0.0.2:8008`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.spec.client_addr)
    }

    /// The federation base URL, e.g. `https://127.0.0.2:8448`.
    pub fn federation_url(&self) -> String {
        format!("https://{}", self.spec.federation_addr)
    }

    /// The full user id of `localpart` on this server.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// The state directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The child process (log path, liveness).
    pub fn process(&self) -> &Supervised {
        &self.process
    }

    pub(crate) fn process_mut(&mut self) -> &mut Supervised {
        &mut self.process
    }

    /// Registers `localpart` through the shared-secret admin API; logs in instead when it exists.
    pub async fn register_user(&self, localpart: &str, password: &str) -> Result<Credentials> {
        self.register(localpart, password, false).await
    }

    /// Registers a Synapse **admin** `localpart` (for admin-API clients such as the media
    /// scanner's quarantine); logs in instead when it exists.
    pub async fn register_admin(&self, localpart: &str, password: &str) -> Result<Credentials> {
        self.register(localpart, password, true).await
    }

    async fn register(&self, localpart: &str, password: &str, admin: bool) -> Result<Credentials> {
        let what = format!("register {}", self.user_id(localpart));
        let url = format!("{}/_synapse/admin/v1/register", self.client_url());
        let nonce: serde_json::Value = self.call(&what, self.http.get(&url)).await?;
        let nonce = nonce["nonce"].as_str().unwrap_or_default().to_owned();
        let mac = registration_mac(
            &self.secrets.registration_shared_secret,
            &nonce,
            localpart,
            password,
            admin,
        );
        let body = json!({"nonce": nonce, "username": localpart, "password": password, "mac": mac, "admin": admin});
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|source| StackError::Http {
                what: what.clone(),
                source,
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|source| StackError::Http {
            what: what.clone(),
            source,
        })?;
        if status.is_success() {
            return credentials_from(&what, &text);
        }
        if text.contains("M_USER_IN_USE") {
            return self.login(localpart, password).await;
        }
        Err(StackError::Matrix {
            what,
            status: status.as_u16(),
            body: text,
        })
    }

    /// Whether `credentials` still work here (`/account/whoami` answers with their user id).
    pub async fn is_valid(&self, credentials: &Credentials) -> bool {
        let url = format!("{}/_matrix/client/v3/account/whoami", self.client_url());
        let request = self.http.get(&url).bearer_auth(&credentials.access_token);
        match call_json("whoami", request).await {
            Ok(value) => value["user_id"] == credentials.user_id.as_str(),
            Err(_) => false,
        }
    }

    /// Logs `localpart` in with a password (`m.login.password`).
    pub async fn login(&self, localpart: &str, password: &str) -> Result<Credentials> {
        let what = format!("log in {}", self.user_id(localpart));
        let url = format!("{}/_matrix/client/v3/login", self.client_url());
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
            "initial_device_display_name": "govmx-stack",
        });
        let value: serde_json::Value = self.call(&what, self.http.post(&url).json(&body)).await?;
        credentials_from(&what, &value.to_string())
    }

    /// Sends a request and parses a JSON success body; errors carry the Matrix error body.
    pub(crate) async fn call(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value> {
        call_json(what, request).await
    }
}

/// Sends `request`; a non-2xx status becomes [`StackError::Matrix`] with the body.
pub(crate) async fn call_json(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value> {
    let http_error = |source| StackError::Http {
        what: what.to_owned(),
        source,
    };
    let response = request.send().await.map_err(http_error)?;
    let status = response.status();
    let text = response.text().await.map_err(http_error)?;
    if !status.is_success() {
        return Err(StackError::Matrix {
            what: what.to_owned(),
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|error| StackError::Matrix {
        what: what.to_owned(),
        status: status.as_u16(),
        body: format!("{error}: {text}"),
    })
}

fn credentials_from(what: &str, text: &str) -> Result<Credentials> {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let field = |name: &str| value[name].as_str().map(str::to_owned);
    match (field("user_id"), field("access_token"), field("device_id")) {
        (Some(user_id), Some(access_token), Some(device_id)) => Ok(Credentials {
            user_id,
            access_token,
            device_id,
        }),
        _ => Err(StackError::Matrix {
            what: what.to_owned(),
            status: 200,
            body: format!("unexpected body: {text}"),
        }),
    }
}

/// Clears what Synapse must not take from the caller's environment. Outbound federation trusts
/// `federation_custom_ca_list` only, so the environment's CA bundles must not leak into Python's
/// TLS defaults; and no proxy: behind a gate, `https_proxy` in homeserver.yaml names the gate's
/// CONNECT listener (the file wins over the environment anyway), without a gate federation goes
/// straight to the peers.
pub fn isolate_environment(command: &mut Command) {
    for variable in [
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(variable);
    }
}

/// `HMAC-SHA1(secret, nonce\0user\0password\0admin|notadmin)`, hex: the shared-secret registration MAC.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    let admin = if admin { "admin" } else { "notadmin" };
    for (i, part) in [nonce, user, password, admin].into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

fn load_or_create_secrets(path: &Path) -> Result<HomeserverSecrets> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| StackError::CorruptState {
            path: path.to_owned(),
            detail: error.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let secrets = HomeserverSecrets::generate();
            let json = serde_json::to_vec_pretty(&secrets).expect("secrets serialise");
            write_file(path, &json, 0o600)?;
            Ok(secrets)
        }
        Err(source) => Err(StackError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a Synapse signing key (`ed25519 a_XXXX <unpadded base64 seed>`) unless one exists.
///
/// Done in Rust to save a Python start (`--generate-keys`, about 1.5 s) on cold starts.
fn ensure_signing_key(path: &Path) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    use rand::{Rng, RngCore};
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let version: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(4)
        .map(char::from)
        .collect();
    let line = format!(
        "ed25519 a_{version} {}\n",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
    );
    write_file(path, line.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn sample_config() -> HomeserverConfig {
        HomeserverConfig {
            server_name: "127.0.0.2:8448".into(),
            federation_addr: "127.0.0.2:8448".parse().unwrap(),
            client_addr: "127.0.0.2:8008".parse().unwrap(),
            data_dir: "/state/homeservers/agency".into(),
            tls: ServerCert {
                cert_path: "/state/homeservers/agency/tls/cert.pem".into(),
                key_path: "/state/homeservers/agency/tls/key.pem".into(),
            },
            trusted_ca: "/state/ca/ca.pem".into(),
            secrets: HomeserverSecrets {
                registration_shared_secret: "reg".into(),
                macaroon_secret_key: "mac".into(),
                form_secret: "form".into(),
            },
            gate: None,
            module: None,
        }
    }

    #[test]
    fn homeserver_yaml_snapshot() {
        expect![[r##"
            # Generated by govmx-stack on every start; edits are overwritten.
            server_name: "127.0.0.2:8448"
            public_baseurl: "http://127.0.0.2:8008/"
            pid_file: "/state/homeservers/agency/homeserver.pid"
            report_stats: false
            enable_metrics: false
            listeners:
              - port: 8008
                bind_addresses: ["127.0.0.2"]
                type: http
                tls: false
                x_forwarded: false
                resources: [{names: [client], compress: false}]
              - port: 8448
                bind_addresses: ["127.0.0.2"]
                type: http
                tls: true
                resources: [{names: [federation], compress: false}]
            tls_certificate_path: "/state/homeservers/agency/tls/cert.pem"
            tls_private_key_path: "/state/homeservers/agency/tls/key.pem"
            database:
              name: sqlite3
              args: {database: "/state/homeservers/agency/homeserver.db"}
            log_config: "/state/homeservers/agency/log.config"
            media_store_path: "/state/homeservers/agency/media"
            signing_key_path: "/state/homeservers/agency/signing.key"
            registration_shared_secret: "reg"
            macaroon_secret_key: "mac"
            form_secret: "form"
            enable_registration: false
            presence: {enabled: false}
            trusted_key_servers: []
            suppress_key_server_warning: true
            federation_custom_ca_list: ["/state/ca/ca.pem"]
            federation_verify_certificates: true
            # Required on loopback: IP-literal peers bypass ip_range_whitelist (recipe pitfall 1).
            ip_range_blacklist: []
            # MSC4133 custom profile fields (unstable path, what matrix-sdk uses): agency identity chains.
            experimental_features: {msc4133_enabled: true}
        "##]]
        .assert_eq(&render_homeserver_yaml(&sample_config()));
    }

    #[test]
    fn homeserver_yaml_is_valid_yaml_with_the_recipe_keys() {
        let yaml: serde_json::Value =
            serde_norway::from_str(&render_homeserver_yaml(&sample_config())).unwrap();
        assert_eq!(yaml["server_name"], "127.0.0.2:8448");
        assert_eq!(yaml["ip_range_blacklist"], json!([]));
        assert_eq!(yaml["trusted_key_servers"], json!([]));
        assert_eq!(
            yaml["federation_custom_ca_list"],
            json!(["/state/ca/ca.pem"])
        );
        assert_eq!(yaml["enable_registration"], false);
        assert_eq!(yaml["listeners"][1]["tls"], true);
        assert_eq!(yaml["listeners"][1]["bind_addresses"], json!(["127.0.0.2"]));
        let log: serde_json::Value =
            serde_norway::from_str(&render_log_config(Path::new("/x/homeserver.log"))).unwrap();
        assert_eq!(log["handlers"]["file"]["filename"], "/x/homeserver.log");
    }

    #[test]
    fn behind_a_gate_the_federation_listener_is_plain_and_outbound_uses_the_proxy() {
        let mut config = sample_config();
        config.gate = Some(GateWiring {
            upstream: "127.0.0.2:40001".parse().unwrap(),
            connect: "127.0.0.2:40002".parse().unwrap(),
        });
        let text = render_homeserver_yaml(&config);
        let yaml: serde_json::Value = serde_norway::from_str(&text).unwrap();
        let listener = &yaml["listeners"][1];
        assert_eq!(listener["port"], 40001);
        assert_eq!(listener["tls"], false);
        assert_eq!(listener["x_forwarded"], true);
        assert_eq!(listener["resources"][0]["names"], json!(["federation"]));
        assert_eq!(yaml["https_proxy"], "http://127.0.0.2:40002");
        assert_eq!(yaml["ip_range_blacklist"], json!([]));
        assert!(!text.contains("tls_certificate_path"), "{text}");
    }

    #[test]
    fn with_a_module_the_modules_block_is_appended() {
        let mut config = sample_config();
        config.module = Some(crate::module::ModuleSpec::new("/policy"));
        let text = render_homeserver_yaml(&config);
        let yaml: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(yaml["modules"][0]["module"], "govmx_synapse.GovmxModule");
        assert_eq!(yaml["modules"][0]["config"]["policy_dir"], "/policy");
        assert_eq!(
            yaml["modules"][0]["config"]["last_known_good_dir"],
            "/state/homeservers/agency/govmx-module/last-known-good"
        );
        assert!(text.starts_with(&render_homeserver_yaml(&sample_config())));
    }

    #[test]
    fn registration_mac_matches_synapse() {
        // Python: hmac.new(b"secret", b"abc\0alice\0pw\0notadmin", hashlib.sha1).hexdigest()
        assert_eq!(
            registration_mac("secret", "abc", "alice", "pw", false),
            "42e32623fe124933c326f9d2d67ff7c617915a10"
        );
    }

    #[test]
    fn secrets_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let first = load_or_create_secrets(&path).unwrap();
        assert_eq!(first.registration_shared_secret.len(), 64);
        assert_ne!(first.registration_shared_secret, first.macaroon_secret_key);
        assert_eq!(load_or_create_secrets(&path).unwrap(), first);
    }

    #[test]
    fn signing_key_has_synapse_format_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        ensure_signing_key(&path).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        let parts: Vec<&str> = first.trim_end().split(' ').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "ed25519");
        assert!(parts[1].starts_with("a_"));
        assert_eq!(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(parts[2])
                .unwrap()
                .len(),
            32
        );
        ensure_signing_key(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    }
}
