//! The govmx Synapse module loaded by real Synapse 1.163.2: contact rules, case grants,
//! room creation limits and hot reload, end to end over federation through the gates; and
//! the shared decision vectors through the built module in the Synapse venv.
//!
//! Both homeservers run the module on one plain policy directory in the test's temp dir. The
//! policy names the servers, so it is written once their addresses are known; the module
//! starts with no policy (refusing everything) and picks it up by its poll, which is the hot
//! reload path already.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use govmx_e2e::media::synapse_db;
use govmx_e2e::{DEADLINE, NetSpec, PASSWORD, TestNet, poll_until, wait_for_log};
use govmx_stack::module::{ModuleSpec, ensure_module};
use govmx_stack::{Credentials, Homeserver, default_cache_dir, ensure_synapse};
use serde_json::{Value, json};

/// Writes the policy set; `citizen: None` leaves the citizen server off the federation list.
fn write_policy(
    dir: &Path,
    agency: &str,
    citizen: Option<&str>,
    version: u64,
    citizens_may_talk: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let meta = |extra: &str| {
        format!(
            "metadata: {{name: e2e, version: {version}, issued: \"2026-01-01T00:00:00Z\"{extra}}}\n"
        )
    };
    let files = [
        (
            "federation.yaml",
            format!(
                "apiVersion: govmx.de/v1\nkind: FederationList\n{}servers:\n\
                 \x20 - {{serverName: \"{agency}\", organisation: {{id: amt, displayName: Amt}}, class: agency}}\n{}",
                meta(", maxAge: 3650d"),
                citizen.map_or(String::new(), |citizen| format!(
                    "  - {{serverName: \"{citizen}\", organisation: {{id: buerger, displayName: Buerger}}, class: citizen}}\n"
                ))
            ),
        ),
        (
            "agencies.yaml",
            format!(
                "apiVersion: govmx.de/v1\nkind: Agencies\n{}agencies:\n\
                 \x20 - {{id: buergeramt, name: Buergeramt, serverNames: [\"{agency}\"]}}\n",
                meta("")
            ),
        ),
        (
            "contact-rules.yaml",
            format!(
                "apiVersion: govmx.de/v1\nkind: ContactRules\n{}default: deny\nrules:\n\
                 \x20 - {{id: agency-to-citizen, from: agency, to: citizen, action: allow}}\n\
                 \x20 - {{id: agency-to-agency, from: agency, to: agency, action: allow}}\n\
                 \x20 - {{id: citizen-to-agency, from: citizen, to: agency, action: requireGrant, reason: citizens may contact an agency only within an open service request}}\n\
                 \x20 - {{id: citizen-to-citizen, from: citizen, to: citizen, action: {}, reason: the government network is not a social network between citizens}}\n\
                 roomCreation: {{maxCitizenInvitees: 1}}\n",
                meta(""),
                if citizens_may_talk { "allow" } else { "deny" }
            ),
        ),
        (
            "media-rules.yaml",
            format!(
                "apiVersion: govmx.de/v1\nkind: MediaRules\n{}maxUploadSize: 10MiB\nmime: {{}}\n",
                meta("")
            ),
        ),
    ];
    for (name, text) in files {
        // Write beside, then rename: the module never reads a half-written file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One client-API call; returns status and JSON body.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    who: &Credentials,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http.request(method, &url).bearer_auth(&who.access_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .timeout(DEADLINE)
        .send()
        .await
        .with_context(|| url.clone())?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn create_room(
    http: &reqwest::Client,
    hs: &Homeserver,
    who: &Credentials,
    invite: &[&str],
) -> anyhow::Result<(u16, Value)> {
    call(
        http,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/createRoom", hs.client_url()),
        who,
        Some(json!({"preset": "private_chat", "invite": invite})),
    )
    .await
}

async fn new_room(
    http: &reqwest::Client,
    hs: &Homeserver,
    who: &Credentials,
) -> anyhow::Result<String> {
    let (status, body) = create_room(http, hs, who, &[]).await?;
    if status != 200 {
        bail!("createRoom by {} failed: {status} {body}", who.user_id);
    }
    Ok(body["room_id"].as_str().context("room_id")?.to_owned())
}

async fn invite(
    http: &reqwest::Client,
    hs: &Homeserver,
    who: &Credentials,
    room: &str,
    user: &str,
) -> anyhow::Result<(u16, Value)> {
    call(
        http,
        reqwest::Method::POST,
        format!(
            "{}/_matrix/client/v3/rooms/{}/invite",
            hs.client_url(),
            encode(room)
        ),
        who,
        Some(json!({"user_id": user})),
    )
    .await
}

#[track_caller]
fn assert_refused(outcome: &(u16, Value), errcode: &str, reason_part: &str) {
    let (status, body) = outcome;
    assert_eq!(*status, 403, "{body}");
    assert_eq!(body["errcode"], errcode, "{body}");
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} lacks {reason_part:?}: {body}"
    );
}

/// An agency and a citizen homeserver, both running the module on one policy directory (in
/// the test's temp dir), with policy version 1 (both servers listed) loaded by both.
async fn module_net() -> anyhow::Result<(TestNet, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy)?;
    let net = NetSpec::default()
        .homeserver_with_module("agency", ModuleSpec::new(&policy))
        .homeserver_with_module("citizen", ModuleSpec::new(&policy))
        .start_in(dir)
        .await?;
    let (agency, citizen) = (net.hs("agency"), net.hs("citizen"));
    write_policy(
        &policy,
        &agency.server_name(),
        Some(&citizen.server_name()),
        1,
        false,
    )?;
    wait_for_log(agency, "govmx policy: loaded version 1").await?;
    wait_for_log(citizen, "govmx policy: loaded version 1").await?;
    Ok((net, policy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_rules_grants_room_limits_and_hot_reload() -> anyhow::Result<()> {
    let (net, policy) = module_net().await?;
    let (agency, citizen) = (net.hs("agency"), net.hs("citizen"));

    let http = reqwest::Client::builder().no_proxy().build()?;
    let official = agency.register_user("amt", PASSWORD).await?;
    let erika = citizen.register_user("erika", PASSWORD).await?;
    let max = citizen.register_user("max", PASSWORD).await?;

    // The official may invite the citizen (over federation: both modules agree).
    let room = new_room(&http, agency, &official).await?;
    let (status, body) = invite(&http, agency, &official, &room, &erika.user_id).await?;
    assert_eq!(status, 200, "official → citizen must be allowed: {body}");

    // The citizen may not invite the official without a grant: her server defers the grant
    // question to the agency's server, which refuses the invite on arrival.
    let erika_room = new_room(&http, citizen, &erika).await?;
    let refused = invite(&http, citizen, &erika, &erika_room, &official.user_id).await?;
    assert_refused(
        &refused,
        "M_INVITE_BLOCKED",
        "only within an open service request",
    );

    // A room inviting two citizens at once is refused at creation.
    let refused = create_room(&http, agency, &official, &[&erika.user_id, &max.user_id]).await?;
    assert_refused(&refused, "M_FORBIDDEN", "at most 1 are allowed");
    // Citizen to citizen is refused by rule (on the citizen's own server).
    let refused = invite(&http, citizen, &erika, &erika_room, &max.user_id).await?;
    assert_refused(&refused, "M_INVITE_BLOCKED", "not a social network");

    // Grants: a citizen may not issue them; the official issues one for the service request.
    let grants_url = format!("{}/_govmx/grants", agency.client_url());
    let request =
        json!({"citizen": erika.user_id, "serviceRequest": "MELD-2026-004711", "validFor": "1h"});
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/_govmx/grants", citizen.client_url()),
        &erika,
        Some(request.clone()),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        grants_url.clone(),
        &official,
        Some(request),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let grant_id = body["grant"]["id"].as_str().context("grant id")?.to_owned();
    let (status, body) = invite(&http, citizen, &erika, &erika_room, &official.user_id).await?;
    assert_eq!(status, 200, "with a grant the citizen may invite: {body}");

    // Revoked (the service request is closed): refused again.
    let (status, body) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{grants_url}/{}", encode(&grant_id)),
        &official,
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let room2 = new_room(&http, citizen, &erika).await?;
    let refused = invite(&http, citizen, &erika, &room2, &official.user_id).await?;
    assert_refused(&refused, "M_INVITE_BLOCKED", "no valid grant");

    // Expiry: a grant valid for a few seconds allows the invite, then no longer.
    let short =
        json!({"citizen": erika.user_id, "serviceRequest": "MELD-2026-004712", "validFor": "6s"});
    let issued = Instant::now();
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        grants_url,
        &official,
        Some(short),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = invite(&http, citizen, &erika, &room2, &official.user_id).await?;
    assert_eq!(status, 200, "during its validity: {body}");
    // Expiry is a matter of time passing: wait past notAfter, then the invite is refused.
    tokio::time::sleep_until((issued + Duration::from_secs(7)).into()).await;
    let room3 = new_room(&http, citizen, &erika).await?;
    let refused = invite(&http, citizen, &erika, &room3, &official.user_id).await?;
    assert_refused(&refused, "M_INVITE_BLOCKED", "no valid grant");

    // Changing the contact rules takes effect without restarting Synapse.
    let citizen_pid = citizen.process().pid();
    write_policy(
        &policy,
        &agency.server_name(),
        Some(&citizen.server_name()),
        2,
        true,
    )?;
    wait_for_log(citizen, "govmx policy: loaded version 2").await?;
    let (status, body) = invite(&http, citizen, &erika, &erika_room, &max.user_id).await?;
    assert_eq!(
        status, 200,
        "after the change citizens may contact each other: {body}"
    );
    assert_eq!(citizen.process().pid(), citizen_pid, "no restart");
    Ok(())
}

/// Whether `hs`'s database holds the event (Synapse's `events` table).
fn event_stored(hs: &Homeserver, event_id: &str) -> anyhow::Result<bool> {
    let count: i64 = synapse_db(hs)?.query_row(
        "SELECT count(*) FROM events WHERE event_id = ?1",
        [event_id],
        |row| row.get(0),
    )?;
    Ok(count > 0)
}

/// Sends a text message as `who`; returns the event ID.
async fn send_text(
    http: &reqwest::Client,
    hs: &Homeserver,
    who: &Credentials,
    room: &str,
    text: &str,
) -> anyhow::Result<String> {
    let (status, body) = call(
        http,
        reqwest::Method::PUT,
        format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            hs.client_url(),
            encode(room),
            encode(text)
        ),
        who,
        Some(json!({"msgtype": "m.text", "body": text})),
    )
    .await?;
    if status != 200 {
        bail!(
            "sending {text:?} as {} failed: {status} {body}",
            who.user_id
        );
    }
    Ok(body["event_id"].as_str().context("event_id")?.to_owned())
}

/// Waits until `hs` has stored the event.
async fn wait_stored(hs: &Homeserver, event_id: &str) -> anyhow::Result<()> {
    poll_until(
        &format!("{event_id} stored on {}", hs.server_name()),
        DEADLINE,
        Duration::from_millis(100),
        async || Ok(event_stored(hs, event_id)?.then_some(())),
    )
    .await
}

/// Events are dropped on arrival when their *author's* server is not on the federation list
/// (the module's `should_drop_federated_event`), whichever server relays them. Here the gates
/// still let the citizen server through (they have their own list), so what stops its events
/// after a list without it is published is the module alone: Synapse logs the drop and its
/// database never holds the event. Listing the server again lets its next event in, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_authored_off_the_list_are_dropped_on_arrival() -> anyhow::Result<()> {
    let (net, policy) = module_net().await?;
    let (agency, citizen) = (net.hs("agency"), net.hs("citizen"));
    let (agency_name, citizen_name) = (agency.server_name(), citizen.server_name());

    let http = reqwest::Client::builder().no_proxy().build()?;
    let official = agency.register_user("amt", PASSWORD).await?;
    let erika = citizen.register_user("erika", PASSWORD).await?;
    let room = new_room(&http, agency, &official).await?;
    let (status, body) = invite(&http, agency, &official, &room, &erika.user_id).await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!(
            "{}/_matrix/client/v3/join/{}?server_name={}",
            citizen.client_url(),
            encode(&room),
            encode(&agency_name)
        ),
        &erika,
        Some(json!({})),
    )
    .await?;
    assert_eq!(status, 200, "the citizen joins over federation: {body}");
    let listed = send_text(&http, citizen, &erika, &room, "while-listed").await?;
    wait_stored(agency, &listed).await?;

    // A list without the citizen server. The agency's module takes it; the citizen's module
    // refuses it (its own server is missing) and keeps version 1.
    write_policy(&policy, &agency_name, None, 2, false)?;
    wait_for_log(agency, "govmx policy: loaded version 2").await?;
    let dropped = send_text(&http, citizen, &erika, &room, "while-off-the-list").await?;
    wait_for_log(agency, &format!("govmx dropped federated event {dropped}")).await?;
    let log = std::fs::read_to_string(agency.process().log_path())?;
    assert!(
        log.contains(&format!("contains spam, dropping {dropped}")),
        "Synapse itself reports the drop"
    );
    assert!(
        log.contains("[origin-not-listed]"),
        "the module names the rule"
    );
    assert!(
        !event_stored(agency, &dropped)?,
        "a dropped event never reaches the agency's database"
    );
    assert!(
        event_stored(citizen, &dropped)?,
        "the citizen server did send it"
    );

    // Listed again: the citizen's next event arrives, nothing was restarted.
    let agency_pid = agency.process().pid();
    write_policy(&policy, &agency_name, Some(&citizen_name), 3, false)?;
    wait_for_log(agency, "govmx policy: loaded version 3").await?;
    let relisted = send_text(&http, citizen, &erika, &room, "listed-again").await?;
    wait_stored(agency, &relisted).await?;
    assert_eq!(agency.process().pid(), agency_pid, "no restart");
    Ok(())
}

/// The shared vectors (`crates/govmx-policy/tests/vectors/`) through the built module, in the
/// Synapse venv's Python: the same decisions as `PolicySet` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_vectors_through_the_built_module() -> anyhow::Result<()> {
    let cache = default_cache_dir();
    let python = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let python = ensure_synapse(&cache)?;
        ensure_module(&cache, &python)?;
        Ok(python)
    })
    .await??;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = tempfile::tempdir()?;
    let output = tokio::process::Command::new(&python)
        .arg(root.join("crates/govmx-synapse-module/tests/vectors.py"))
        .arg(root.join("crates/govmx-policy/tests/vectors/contact"))
        .arg(scratch.path())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("ok "),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked: usize = stdout.trim_start_matches("ok ").trim().parse()?;
    assert!(checked >= 15, "{stdout}");
    Ok(())
}

/// Starts the media scanner in this process with only its scan API (bearer `token_file`) on
/// `listen`, scanning with `clamd`. Returns the shutdown trigger and the serve task.
async fn scan_api_scanner(
    dir: &Path,
    listen: std::net::SocketAddr,
    clamd: std::net::SocketAddr,
    token_file: &Path,
) -> anyhow::Result<(
    govmx_service::ShutdownTrigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let q = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool)?;
    std::fs::set_permissions(&spool, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let yaml = format!(
        "listen: \"{listen}\"\nadmin_listen: \"127.0.0.1:0\"\nupstream: \"http://127.0.0.1:9\"\n\
         clamd:\n  addresses: [\"{clamd}\"]\n  connect_timeout: 1s\n  io_timeout: 10s\n  scan_timeout: 30s\n  health_interval: 1s\n\
         max_upload_size: 10485760\nspool:\n  dir: {spool}\n  memory_limit: 1MiB\naudit_log: {audit}\n\
         scan_api:\n  enabled: true\n  token_file: {token}\n",
        spool = q(&spool),
        audit = q(&dir.join("audit.jsonl")),
        token = q(token_file),
    );
    let path = dir.join("media-scanner.yaml");
    std::fs::write(&path, yaml)?;
    let config: govmx_media_scanner::config::Config =
        govmx_service::config::load_validated(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = govmx_media_scanner::Server::bind(config).await?;
    let (trigger, shutdown) = govmx_service::Shutdown::manual();
    Ok((trigger, tokio::spawn(server.serve(shutdown))))
}

/// A file with the EICAR signature uploaded on a homeserver without the upload gate is refused
/// when the protected homeserver fetches it over federation (its module scans remote media);
/// a clean file passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_eicar_is_refused_over_federation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy)?;
    let token_file = dir.path().join("scan.token");
    std::fs::write(&token_file, "scan-api-token-e2e")?;
    let scanner_ip = govmx_stack::free_loopback_ip(&[8090])?;
    let scanner_addr = std::net::SocketAddr::from((scanner_ip, 8090));
    let module =
        ModuleSpec::new(&policy).with_scanner(format!("http://{scanner_addr}"), &token_file);
    let scanner_dir = dir.path().join("scanner");
    let net = NetSpec::default()
        .homeserver_with_module("agency", module)
        .homeserver("citizen")
        .clamd()
        .start_in(dir)
        .await?;
    let (agency, citizen) = (net.hs("agency"), net.hs("citizen"));
    let clamd = net.stack.clamd().context("clamd")?.addr();
    let (_trigger, _task) =
        scan_api_scanner(&scanner_dir, scanner_addr, clamd, &token_file).await?;
    write_policy(
        &policy,
        &agency.server_name(),
        Some(&citizen.server_name()),
        1,
        false,
    )?;
    wait_for_log(agency, "govmx policy: loaded version 1").await?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()?;
    let uploader = citizen.register_user("erika", PASSWORD).await?;
    let reader = agency.register_user("amt", PASSWORD).await?;
    let mut fetched = Vec::new();
    for (name, bytes) in [
        ("eicar", govmx_stack::eicar_test_file()),
        ("clean", b"a clean text file\n".to_vec()),
    ] {
        // Straight to the citizen's Synapse: no upload gate there.
        let response = http
            .post(format!(
                "{}/_matrix/media/v3/upload?filename={name}.txt",
                citizen.client_url()
            ))
            .bearer_auth(&uploader.access_token)
            .header("content-type", "text/plain")
            .body(bytes.clone())
            .send()
            .await?;
        let body: Value = response.json().await?;
        let mxc = body["content_uri"]
            .as_str()
            .with_context(|| format!("upload: {body}"))?;
        let (server, id) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .context("mxc")?;
        let response = http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{server}/{id}",
                agency.client_url()
            ))
            .bearer_auth(&reader.access_token)
            .send()
            .await?;
        let status = response.status().as_u16();
        let got = response.bytes().await?.to_vec();
        fetched.push((
            name,
            status,
            got == bytes,
            String::from_utf8_lossy(&got).into_owned(),
        ));
    }
    let (_, eicar_status, eicar_same, eicar_body) = &fetched[0];
    assert!(
        *eicar_status >= 400 && !eicar_same,
        "EICAR fetched over federation must be refused: {eicar_status} {eicar_body}"
    );
    let (_, clean_status, clean_same, clean_body) = &fetched[1];
    assert!(
        *clean_status == 200 && *clean_same,
        "a clean remote file passes: {clean_status} {clean_body}"
    );
    let log = std::fs::read_to_string(agency.process().log_path())?;
    assert!(
        log.contains("govmx refused media"),
        "no refusal logged by the module"
    );
    assert!(
        log.contains("media-infected"),
        "refused, but not as infected"
    );
    Ok(())
}
