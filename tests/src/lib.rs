//! Test-side helpers for the end-to-end suite: matrix-sdk clients against a running govmx stack.
//!
//! [`TestNet`] wraps a [`Stack`] in its own temporary directory on random loopback addresses,
//! so tests run in parallel; dropping it kills every process (and prints the logs when the
//! test failed). The `wait_*` helpers poll with deadlines: `/sync` long-polls, never sleeps.

pub mod media;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use govmx_stack::ports::free_loopback_ip;
use govmx_stack::{ClamdSpec, Gate, Homeserver, HomeserverSpec, Stack, StackSpec};
use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{EventId, OwnedServerName, RoomId, RoomOrAliasId};
use matrix_sdk::{Client, RoomState};

/// How long any awaited federation effect may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The password every test user gets.
pub const PASSWORD: &str = "e2e-password";

/// A stack in a temporary directory. Field order matters: the stack stops before the directory goes.
#[derive(Debug)]
pub struct TestNet {
    /// The running stack.
    pub stack: Stack,
    dir: tempfile::TempDir,
}

impl TestNet {
    /// The temporary directory (state lives in `state/` below it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The gate in front of the homeserver labelled `label`; panics when it has none.
    pub fn gate(&self, label: &str) -> &Gate {
        self.hs(label)
            .gate()
            .unwrap_or_else(|| panic!("homeserver {label:?} has no federation gate"))
    }

    /// The homeserver labelled `label`; panics when the test asks for one it did not start.
    pub fn hs(&self, label: &str) -> &Homeserver {
        self.stack
            .homeserver(label)
            .unwrap_or_else(|| panic!("no homeserver {label:?} in this test"))
    }
}

/// What one test wants: homeservers by label (optionally trusting another CA, or not on the
/// run's federation list) and clamd.
#[derive(Debug, Default)]
pub struct NetSpec {
    homeservers: Vec<WantedHomeserver>,
    clamd: bool,
}

#[derive(Debug)]
struct WantedHomeserver {
    label: String,
    trusted_ca: Option<PathBuf>,
    unlisted: bool,
    module: Option<govmx_stack::module::ModuleSpec>,
}

impl NetSpec {
    /// A listed homeserver behind a federation gate, trusting the run CA.
    pub fn homeserver(mut self, label: &str) -> NetSpec {
        self.homeservers.push(WantedHomeserver {
            label: label.to_owned(),
            trusted_ca: None,
            unlisted: false,
            module: None,
        });
        self
    }

    /// A listed homeserver whose `federation_custom_ca_list` is `ca_file` instead of the run CA.
    pub fn homeserver_trusting(mut self, label: &str, ca_file: PathBuf) -> NetSpec {
        self.homeservers.push(WantedHomeserver {
            label: label.to_owned(),
            trusted_ca: Some(ca_file),
            unlisted: false,
            module: None,
        });
        self
    }

    /// A homeserver that runs but is not on the run's federation list (an outsider without a
    /// gate; see `HomeserverSpec::unlisted`).
    pub fn unlisted(mut self, label: &str) -> NetSpec {
        self.homeservers.push(WantedHomeserver {
            label: label.to_owned(),
            trusted_ca: None,
            unlisted: true,
            module: None,
        });
        self
    }

    /// A listed homeserver behind a federation gate running the govmx Synapse module.
    pub fn homeserver_with_module(
        mut self,
        label: &str,
        module: govmx_stack::module::ModuleSpec,
    ) -> NetSpec {
        self.homeservers.push(WantedHomeserver {
            label: label.to_owned(),
            trusted_ca: None,
            unlisted: false,
            module: Some(module),
        });
        self
    }

    /// clamd on its own loopback address.
    pub fn clamd(mut self) -> NetSpec {
        self.clamd = true;
        self
    }

    /// Starts it all (in parallel) in `dir`, on fresh random loopback addresses.
    pub async fn start_in(self, dir: tempfile::TempDir) -> anyhow::Result<TestNet> {
        init_tracing();
        let mut spec = StackSpec::new(dir.path().join("state"));
        for wanted in self.homeservers {
            let ip = free_loopback_ip(&[8448, 8008])?;
            let mut hs = HomeserverSpec::new(wanted.label, (ip, 8448).into(), (ip, 8008).into());
            if let Some(ca) = wanted.trusted_ca {
                hs = hs.with_trusted_ca(ca);
            }
            if wanted.unlisted {
                hs = hs.unlisted();
            }
            if let Some(module) = wanted.module {
                hs = hs.with_module(module);
            }
            spec = spec.homeserver(hs);
        }
        if self.clamd {
            let ip = free_loopback_ip(&[3310])?;
            spec = spec.clamd(ClamdSpec {
                addr: (ip, 3310).into(),
            });
        }
        let stack = Stack::start(spec).await?;
        Ok(TestNet { stack, dir })
    }

    /// [`NetSpec::start_in`] a new temporary directory.
    pub async fn start(self) -> anyhow::Result<TestNet> {
        self.start_in(tempfile::tempdir()?).await
    }
}

/// Registers `localpart` with the stack's shared-secret registration, then logs in with matrix-sdk.
pub async fn user(hs: &Homeserver, localpart: &str) -> anyhow::Result<Client> {
    hs.register_user(localpart, PASSWORD).await?;
    // Few retries: a federation failure is a 502 the negative control expects to see promptly.
    let request_config = RequestConfig::new().retry_limit(2).timeout(DEADLINE);
    let client = Client::builder()
        .homeserver_url(hs.client_url())
        .request_config(request_config)
        .build()
        .await?;
    client
        .matrix_auth()
        .login_username(localpart, PASSWORD)
        .initial_device_display_name("govmx-e2e")
        .await
        .with_context(|| format!("matrix-sdk login of {}", hs.user_id(localpart)))?;
    Ok(client)
}

/// One long-polling sync (returns early when something arrives).
async fn sync(client: &Client) -> anyhow::Result<()> {
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
        .await?;
    Ok(())
}

/// `client` joins `room_id` over federation, via the server named `via`.
pub async fn join_via(client: &Client, room_id: &RoomId, via: &str) -> anyhow::Result<()> {
    let via: OwnedServerName = via.try_into()?;
    let room_or_alias: &RoomOrAliasId = room_id.into();
    client
        .join_room_by_id_or_alias(room_or_alias, &[via])
        .await?;
    Ok(())
}

/// Syncs until `client` sees an invite to `room_id`, or [`DEADLINE`].
pub async fn wait_for_invite(client: &Client, room_id: &RoomId) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        sync(client).await?;
        if client
            .get_room(room_id)
            .is_some_and(|room| room.state() == RoomState::Invited)
        {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            bail!(
                "no invite to {room_id} for {:?} within {DEADLINE:?}",
                client.user_id()
            );
        }
    }
}

/// Sends a message as `official` in `room_id`, waits until `citizen` sees it, then the reverse:
/// the two-way exchange every federation scenario ends with.
pub async fn exchange_messages(
    official: &Client,
    citizen: &Client,
    room_id: &RoomId,
) -> anyhow::Result<()> {
    for (from, to, text) in [
        (official, citizen, "Ihr Antrag ist eingegangen."),
        (citizen, official, "Danke!"),
    ] {
        let room = from
            .get_room(room_id)
            .with_context(|| format!("{} does not know room {room_id}", user_of(from)))?;
        let sent = room.send(RoomMessageEventContent::text_plain(text)).await?;
        let body = wait_for_message(to, room_id, &sent.response.event_id).await?;
        anyhow::ensure!(body == text, "{} saw {body:?}, sent {text:?}", user_of(to));
    }
    Ok(())
}

fn user_of(client: &Client) -> String {
    client
        .user_id()
        .map_or_else(|| "a logged-out client".to_owned(), ToString::to_string)
}

/// Syncs and reads the room timeline (`/messages`) until `event_id` shows up; returns its body.
pub async fn wait_for_message(
    client: &Client,
    room_id: &RoomId,
    event_id: &EventId,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        sync(client).await?;
        if let Some(room) = client.get_room(room_id) {
            let messages = room.messages(MessagesOptions::backward()).await?;
            for event in messages.chunk {
                if event.event_id().as_deref() == Some(event_id) {
                    let content: serde_json::Value =
                        event.raw().get_field("content")?.unwrap_or_default();
                    return Ok(content["body"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        if started.elapsed() > DEADLINE {
            bail!(
                "{event_id} did not reach {:?} within {DEADLINE:?}",
                client.user_id()
            );
        }
    }
}

/// Polls `check` (which returns `Some` when done) until it succeeds or `deadline` passes;
/// between attempts it yields for `interval`.
pub async fn poll_until<T>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() > deadline {
            bail!("{what}: not reached within {deadline:?}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Sum of `govmx_gate_decisions_total` samples of `gate` with all of `labels`.
pub async fn gate_decisions(gate: &Gate, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    let metrics = gate.metrics().await?;
    Ok(govmx_stack::metric_sum(
        &metrics,
        "govmx_gate_decisions_total",
        labels,
    ))
}

/// Logs go through the test harness's capture; `GOVMX_LOG` overrides the filter.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOVMX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,govmx_stack=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Registers `localpart` as a **server admin** through the shared-secret registration API (the
/// stack registers ordinary users only) and returns its access token, for admin API clients
/// such as the exporter.
pub async fn register_admin(hs: &Homeserver, localpart: &str) -> anyhow::Result<String> {
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hs.data_dir().join("secrets.json"))?)?;
    let secret = secrets["registration_shared_secret"]
        .as_str()
        .context("secrets.json has no registration_shared_secret")?;
    let http = reqwest::Client::new();
    let url = format!("{}/_synapse/admin/v1/register", hs.client_url());
    let nonce: serde_json::Value = http.get(&url).send().await?.json().await?;
    let nonce = nonce["nonce"].as_str().context("no nonce")?;
    let mac = govmx_stack::synapse::registration_mac(secret, nonce, localpart, PASSWORD, true);
    let body = serde_json::json!({
        "nonce": nonce, "username": localpart, "password": PASSWORD, "mac": mac, "admin": true,
    });
    let response = http.post(&url).json(&body).send().await?;
    let status = response.status();
    let reply: serde_json::Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "admin registration: {status} {reply}");
    Ok(reply["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned())
}

/// Polls `hs`'s log until it contains `needle`, or [`DEADLINE`].
pub async fn wait_for_log(hs: &Homeserver, needle: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let path = hs.process().log_path().to_owned();
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains(needle) {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            bail!("{needle:?} not in {} within {DEADLINE:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
