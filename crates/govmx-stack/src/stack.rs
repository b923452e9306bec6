//! [`Stack`]: the whole local network (run CA, homeservers, clamd) owned by one value.
//!
//! State directory layout (reused on the next start, so warm starts are fast):
//!
//! ```text
//! <state>/ca/{ca.pem,ca.key}
//! <state>/policy/{trust.yaml,signers/,bundles/,bundle}   the run's signed federation list
//! <state>/homeservers/<label>/{homeserver.yaml,log.config,homeserver.log,homeserver.db,signing.key,secrets.json,tls/,media/}
//! <state>/homeservers/<label>/gate/{gate.yaml,audit.jsonl,last-known-good/}
//! <state>/clamd/{clamd.conf,clamd.log,db/}
//! ```

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::ca::RunCa;
use crate::clamd::{Clamd, ClamdSpec};
use crate::exporter::{ExporterConfig, StackExporter};
use crate::gate::Gate;
use crate::policy::{ListedServer, RunPolicy, Signers};
use crate::ports::check_addr_free;
use crate::process::{LOG_TAIL_LINES, STOP_GRACE};
use crate::scanner::MediaScanner;
use crate::synapse::{FederationFront, Homeserver, HomeserverSpec};

/// Largest upload the stack's media scanners accept (Synapse's default `max_upload_size`).
const MEDIA_SCANNER_MAX_UPLOAD: u64 = 50 * 1024 * 1024;
use crate::{Result, StackError, prereq};

/// What to bring up.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Where CA, keys, databases, configs and logs live.
    pub state_dir: PathBuf,
    /// Where the Synapse venv lives (see [`prereq::default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// The homeservers, started in parallel.
    pub homeservers: Vec<HomeserverSpec>,
    /// clamd, if wanted.
    pub clamd: Option<ClamdSpec>,
    /// Put a media scanner (scanning with the clamd) on each homeserver's client address;
    /// Synapse's own client listener then moves to a free port on the same IP.
    pub media_scanners: bool,
    /// Run the govmx exporter against the first homeserver, clamd, the run CA and the policy.
    pub exporter: bool,
}

impl StackSpec {
    /// An empty spec on `state_dir` with the default cache directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> StackSpec {
        StackSpec {
            state_dir: state_dir.into(),
            cache_dir: prereq::default_cache_dir(),
            homeservers: Vec::new(),
            clamd: None,
            media_scanners: false,
            exporter: false,
        }
    }

    /// Runs the govmx exporter (metrics of Synapse, clamd, the CA and the policy bundle).
    pub fn exporter(mut self) -> StackSpec {
        self.exporter = true;
        self
    }

    /// Puts a media scanner in front of every homeserver's client listener (needs clamd).
    pub fn media_scanners(mut self) -> StackSpec {
        self.media_scanners = true;
        self
    }

    /// Adds a homeserver.
    pub fn homeserver(mut self, spec: HomeserverSpec) -> StackSpec {
        self.homeservers.push(spec);
        self
    }

    /// Adds clamd.
    pub fn clamd(mut self, spec: ClamdSpec) -> StackSpec {
        self.clamd = Some(spec);
        self
    }

    /// Every address the stack will bind, with the component that wants it.
    pub fn addresses(&self) -> Vec<(SocketAddr, String)> {
        let mut addresses = Vec::new();
        for hs in &self.homeservers {
            let client = if self.media_scanners {
                format!("media scanner {} (client listener)", hs.label)
            } else {
                format!("synapse {} (client listener)", hs.label)
            };
            addresses.push((hs.client_addr, client));
            let federation = match hs.front {
                FederationFront::Gate => format!("federation gate {} (inbound)", hs.label),
                _ => format!("synapse {} (federation listener)", hs.label),
            };
            addresses.push((hs.federation_addr, federation));
        }
        if let Some(clamd) = &self.clamd {
            addresses.push((clamd.addr, "clamd".to_owned()));
        }
        addresses
    }

    /// Rejects duplicate labels, duplicate addresses and busy addresses, before anything starts.
    pub fn check(&self) -> Result<()> {
        if self.media_scanners && self.clamd.is_none() {
            return Err(StackError::InvalidSpec(
                "media scanners need clamd in the spec".to_owned(),
            ));
        }
        let mut labels = HashMap::new();
        for hs in &self.homeservers {
            if labels.insert(hs.label.as_str(), ()).is_some()
                || hs.label.is_empty()
                || hs.label.contains('/')
            {
                return Err(StackError::InvalidSpec(format!(
                    "homeserver label {:?} is empty, has a slash or is used twice",
                    hs.label
                )));
            }
            if hs.front == FederationFront::Gate && !hs.listed {
                return Err(StackError::InvalidSpec(format!(
                    "homeserver {:?} is behind a gate but not listed: its gate would refuse all federation",
                    hs.label
                )));
            }
        }
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        for (addr, component) in self.addresses() {
            if let Some(first) = seen.insert(addr, component.clone()) {
                return Err(StackError::AddressConflict {
                    addr,
                    first,
                    second: component,
                });
            }
        }
        for (addr, component) in self.addresses() {
            check_addr_free(addr, &component)?;
        }
        Ok(())
    }
}

/// The running network. Dropping it stops every child (SIGTERM, then SIGKILL); when dropped
/// during a panic (a failing test) it first prints the tail of every child's log to stderr.
#[derive(Debug)]
pub struct Stack {
    state_dir: PathBuf,
    ca: RunCa,
    policy: RunPolicy,
    homeservers: Vec<Homeserver>,
    clamd: Option<Clamd>,
    // Media scanners in front of client listeners, by homeserver label.
    scanners: Vec<(String, MediaScanner)>,
    exporter: Option<StackExporter>,
    http: reqwest::Client,
}

impl Stack {
    /// Checks addresses, installs what is missing, then starts all children in parallel and
    /// waits (with deadlines) until every one is ready.
    pub async fn start(spec: StackSpec) -> Result<Stack> {
        spec.check()?;
        // Children run with their own working directory: every path they see is absolute.
        let mut spec = spec;
        spec.state_dir = absolute(&spec.state_dir)?;
        spec.cache_dir = absolute(&spec.cache_dir)?;
        for hs in &mut spec.homeservers {
            if let Some(ca) = &hs.trusted_ca {
                hs.trusted_ca = Some(absolute(ca)?);
            }
        }
        // With media scanners the scanner takes the client address and Synapse moves inward.
        let mut scanner_addrs = Vec::new();
        if spec.media_scanners {
            for hs in &mut spec.homeservers {
                scanner_addrs.push((hs.label.clone(), hs.client_addr));
                hs.client_addr = crate::gate::free_port(hs.client_addr.ip())?;
            }
        }
        let python = if spec.homeservers.is_empty() {
            None
        } else {
            let cache_dir = spec.cache_dir.clone();
            Some(blocking(move || prereq::ensure_synapse(&cache_dir)).await?)
        };
        let clamd_bin = match spec.clamd {
            Some(_) => Some(blocking(prereq::ensure_clamd).await?),
            None => None,
        };
        let state_dir = spec.state_dir.clone();
        crate::util::create_dir(&state_dir)?;
        let ca = RunCa::load_or_create(&state_dir.join("ca"), "govmx run CA")?;
        // The run's federation list names every listed homeserver with its real signing key;
        // it is published before any gate starts, so gates come up with a verified list.
        let policy = RunPolicy::load_or_create(&state_dir.join("policy"))?;
        let mut listed = Vec::new();
        for hs in &spec.homeservers {
            let listing =
                crate::synapse::prepare(hs, &state_dir.join("homeservers").join(&hs.label))?;
            if hs.listed {
                listed.push(listing);
            }
        }
        policy.publish(&listed)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| StackError::Http {
                what: "building HTTP client".into(),
                source,
            })?;

        // Spawn everything first (the processes start in parallel), then wait for each.
        let mut stack = Stack {
            state_dir,
            ca,
            policy,
            homeservers: Vec::new(),
            clamd: None,
            scanners: Vec::new(),
            exporter: None,
            http: http.clone(),
        };
        if let (Some(clamd_spec), Some(clamd_bin)) = (spec.clamd, &clamd_bin) {
            stack.clamd = Some(Clamd::spawn(
                clamd_spec,
                &stack.state_dir.join("clamd"),
                clamd_bin,
            )?);
        }
        if let Some(python) = &python {
            for hs in &spec.homeservers {
                let dir = stack.state_dir.join("homeservers").join(&hs.label);
                stack.homeservers.push(
                    Homeserver::spawn(hs, &dir, python, &stack.ca, &stack.policy, http.clone())
                        .await?,
                );
            }
        }
        for hs in &mut stack.homeservers {
            hs.wait_healthy().await?;
        }
        if let Some(clamd) = &mut stack.clamd {
            clamd.wait_ready().await?;
        }
        if let Some(clamd) = stack.clamd.as_ref().map(Clamd::addr) {
            for (label, listen) in scanner_addrs {
                let Some(hs) = stack.homeservers.iter().find(|hs| hs.label() == label) else {
                    continue;
                };
                let dir = stack
                    .state_dir
                    .join("homeservers")
                    .join(&label)
                    .join("media-scanner");
                let scanner =
                    MediaScanner::start(hs, clamd, listen, &dir, MEDIA_SCANNER_MAX_UPLOAD).await?;
                stack.scanners.push((label, scanner));
            }
        }
        if spec.exporter
            && let Some(hs) = stack.homeservers.first()
        {
            let config = ExporterConfig {
                ip: hs.spec().client_addr.ip(),
                synapse_url: hs.client_url(),
                clamd: stack.clamd.as_ref().map(Clamd::addr),
                ca_certs_dir: stack.ca.issued_dir(),
                crl: stack.ca.crl_path(),
                bundle_dir: stack.policy.bundle_dir(),
                trust: stack.policy.trust_path(),
                dir: stack.state_dir.join("exporter"),
            };
            stack.exporter = Some(StackExporter::start(hs, config).await?);
        }
        Ok(stack)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The run CA.
    pub fn ca(&self) -> &RunCa {
        &self.ca
    }

    /// All homeservers in spec order.
    pub fn homeservers(&self) -> &[Homeserver] {
        &self.homeservers
    }

    /// The homeserver labelled `label`.
    pub fn homeserver(&self, label: &str) -> Option<&Homeserver> {
        self.homeservers.iter().find(|hs| hs.label() == label)
    }

    /// The run's policy (signers, trust file, bundle directory).
    pub fn policy(&self) -> &RunPolicy {
        &self.policy
    }

    /// The list entries of the homeservers the spec marked as listed.
    pub fn listed_servers(&self) -> Result<Vec<ListedServer>> {
        self.homeservers
            .iter()
            .filter(|hs| hs.spec().listed)
            .map(Homeserver::listing)
            .collect()
    }

    /// Publishes a new federation list naming `servers`, signed by `signers`, and makes every
    /// gate check it now (gates also notice it within [`crate::gate::RELOAD_INTERVAL`]).
    /// Returns the new bundle version.
    pub fn publish_federation_list(
        &self,
        servers: &[ListedServer],
        signers: Signers,
    ) -> Result<u64> {
        let version = self.policy.publish_signed_by(servers, signers)?;
        for gate in self.homeservers.iter().filter_map(Homeserver::gate) {
            gate.reload_now();
        }
        Ok(version)
    }

    /// The gates, in spec order (homeservers without one are skipped).
    pub fn gates(&self) -> impl Iterator<Item = (&Homeserver, &Gate)> {
        self.homeservers
            .iter()
            .filter_map(|hs| hs.gate().map(|gate| (hs, gate)))
    }

    /// clamd, if started.
    pub fn clamd(&self) -> Option<&Clamd> {
        self.clamd.as_ref()
    }

    /// The exporter, if the spec asked for it.
    pub fn exporter(&self) -> Option<&StackExporter> {
        self.exporter.as_ref()
    }

    /// The media scanner in front of the homeserver labelled `label`, if the spec asked for
    /// scanners.
    pub fn media_scanner(&self, label: &str) -> Option<&MediaScanner> {
        self.scanners
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, scanner)| scanner)
    }

    /// A plain HTTP client (no proxy) for the client listeners.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An HTTPS client for raw federation requests to the gates (or TLS listeners): trusts
    /// only the run CA, no proxy.
    pub fn federation_client(&self) -> Result<reqwest::Client> {
        let pem = std::fs::read(self.ca.cert_path())
            .map_err(StackError::io("reading", self.ca.cert_path()))?;
        let what = || format!("loading the run CA {}", self.ca.cert_path().display());
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|source| StackError::Http {
            what: what(),
            source,
        })?;
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca])
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| StackError::Http {
                what: what(),
                source,
            })
    }

    /// The first child found to have exited, with its status and log tail; `None` if all run.
    pub fn exited_child(&mut self) -> Option<(String, ExitStatus, String)> {
        let processes = self
            .homeservers
            .iter_mut()
            .map(Homeserver::process_mut)
            .chain(self.clamd.as_mut().map(Clamd::process_mut));
        for process in processes {
            if let Some(status) = process.exit_status() {
                return Some((
                    process.name().to_owned(),
                    status,
                    process.log_tail(LOG_TAIL_LINES),
                ));
            }
        }
        None
    }

    /// Writes the last `lines` lines of every child's log and every gate's audit log to stderr.
    pub fn dump_logs(&self, lines: usize) {
        let mut stderr = std::io::stderr().lock();
        let processes = self
            .homeservers
            .iter()
            .map(Homeserver::process)
            .chain(self.clamd.as_ref().map(Clamd::process));
        for process in processes {
            let _ = writeln!(
                stderr,
                "----- {} ({}): last {lines} lines -----\n{}",
                process.name(),
                process.log_path().display(),
                process.log_tail(lines)
            );
        }
        for (hs, gate) in self.gates() {
            let _ = writeln!(
                stderr,
                "----- federation gate {} audit ({}): last {lines} lines -----\n{}",
                hs.label(),
                gate.audit_log_path().display(),
                crate::util::tail(gate.audit_log_path(), lines)
            );
        }
    }

    /// Stops every child: SIGTERM to all at once, then wait (SIGKILL after the grace period).
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let mut processes: Vec<_> = self
            .homeservers
            .iter_mut()
            .map(Homeserver::process_mut)
            .chain(self.clamd.as_mut().map(Clamd::process_mut))
            .collect();
        for process in &mut processes {
            process.terminate();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for process in &mut processes {
            process.wait_or_kill(deadline);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs(LOG_TAIL_LINES);
        }
        self.stop_all();
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(StackError::io("resolving", path))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("install task does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_addresses_are_rejected_before_anything_starts() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let spec = StackSpec::new("/nonexistent")
            .homeserver(HomeserverSpec::new(
                "a",
                addr,
                "127.0.0.1:2".parse().unwrap(),
            ))
            .clamd(ClamdSpec { addr });
        let error = spec.check().unwrap_err();
        assert_eq!(
            error.to_string(),
            "127.0.0.1:1 is wanted by both federation gate a (inbound) and clamd"
        );
    }

    #[test]
    fn busy_address_names_its_component() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = listener.local_addr().unwrap();
        let spec = StackSpec::new("/nonexistent").clamd(ClamdSpec { addr: busy });
        assert_eq!(
            spec.check().unwrap_err().to_string(),
            format!("{busy} is already in use (needed by clamd)")
        );
    }
}
