//! The exporter in-process against a real network: two Synapse homeservers federating through
//! their gates, real clamd, the media scanner in front of the agency server, the run's signed
//! federation list and the run CA's certificate.
//!
//! After the scenario (a federated invite, an invite to an unlisted server refused at the
//! border, a clean and an EICAR upload, extra users) the exporter's `/metrics` shows each fact;
//! every service's live `/metrics` passes `promtool check metrics`; stopping Synapse marks that
//! target down while clamd, CA and policy keep their values.
//!
//! Not covered here: a *failing* destination. Synapse records a failure only after its long
//! retries of a transaction (10 retries, up to 60 s apart: about 9 minutes); the destination
//! logic is unit-tested in `govmx-exporter` (`synapse::tests`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use govmx_e2e::media::{Scanner, http, tiny_png, upload};
use govmx_e2e::{
    DEADLINE, NetSpec, PASSWORD, exchange_messages, gate_decisions, join_via, poll_until,
    register_admin, user, wait_for_invite,
};
use govmx_exporter::Exporter;
use govmx_exporter::exposition::to_classic_text;
use govmx_service::Shutdown;
use govmx_stack::eicar_test_file;
use matrix_sdk::ruma::UserId;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The value of the sample of `name` whose labels include all of `labels`, if there is one.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all)
                .then(|| value.parse().ok())
                .flatten()
        })
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// `promtool check metrics` on OpenMetrics text (converted to the classic format it reads).
fn promtool_check_metrics(what: &str, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "cannot run promtool; install it with `apt-get install -y --no-install-recommends prometheus`",
        )?;
    let classic = to_classic_text(text);
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(classic.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics of the {what}:\n{}{}\n--- input ---\n{classic}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Kills a homeserver's Synapse (its process group); the stack reaps it on drop.
fn kill_synapse(hs: &govmx_stack::Homeserver) -> anyhow::Result<()> {
    let pid = hs.process().pid().context("Synapse runs")?;
    let group = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .context("a pid")?;
    kill_process_group(group, Signal::KILL)?;
    Ok(())
}

/// clamd's own `VERSION` reply, asked directly.
async fn clamd_version(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"zVERSION\0").await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply)
        .trim_end_matches(['\0', '\n'])
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_reports_the_network_and_survives_a_synapse_outage() -> anyhow::Result<()> {
    let net = NetSpec::default()
        .homeserver("agency")
        .homeserver("citizen")
        .clamd()
        .start()
        .await?;
    let (agency, citizen) = (net.hs("agency"), net.hs("citizen"));
    let clamd_addr = net.stack.clamd().expect("clamd was requested").addr();
    let scanner = Scanner::start(agency, clamd_addr, &net.dir().join("scanner"), 8 << 20).await?;

    // Users: the exporter's admin, the official, three clerks, an uploader.
    let admin_token = register_admin(agency, "exporter").await?;
    let official = user(agency, "amt").await?;
    for clerk in ["clerk1", "clerk2", "clerk3"] {
        agency.register_user(clerk, PASSWORD).await?;
    }
    let uploader = agency.register_user("uploader", PASSWORD).await?;
    let erika = user(citizen, "erika").await?;

    // Federation: one room, a citizen invited across the border; an unlisted server refused.
    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    let room = official.create_room(request).await?;
    room.invite_user_by_id(&UserId::parse(citizen.user_id("erika"))?)
        .await?;
    wait_for_invite(&erika, room.room_id()).await?;
    join_via(&erika, room.room_id(), &agency.server_name()).await?;
    // Messages make Synapse's federation sender record the citizen server as a destination.
    exchange_messages(&official, &erika, room.room_id()).await?;
    let outsider = UserId::parse("@fremd:127.0.0.1:1")?;
    assert!(
        room.invite_user_by_id(&outsider).await.is_err(),
        "an unlisted server must not be reachable"
    );
    let denied = gate_decisions(
        net.gate("agency"),
        &[("surface", "connect"), ("verdict", "deny")],
    )
    .await?;
    assert!(denied >= 1.0, "the gate refused the unlisted server");

    // Media: a clean PNG is stored, EICAR is refused by the scanner.
    let clean = upload(
        &http(),
        &scanner.url(),
        &uploader.access_token,
        "image/png",
        tiny_png(),
    )
    .await?;
    assert_eq!(clean.status, 200, "{}", clean.body);
    let eicar = upload(
        &http(),
        &scanner.url(),
        &uploader.access_token,
        "application/octet-stream",
        eicar_test_file(),
    )
    .await?;
    assert_eq!(eicar.status, 403, "{}", eicar.body);

    // CA: one more server certificate from the network's agency CA, then revoked.
    let run_ca = net.stack.ca();
    let (_, retired_serial) =
        run_ca.issue_server_cert_with_serial("127.0.0.99".parse()?, &net.dir().join("retired"))?;
    run_ca.revoke(&retired_serial)?;
    let issued_tls = std::fs::read_dir(run_ca.issued_dir().join("homeserver-tls"))?.count() as f64;
    assert!(issued_tls >= 3.0, "two homeservers and the retired server");

    // The exporter, in-process, against all four targets.
    let dir = net.dir().join("exporter");
    std::fs::create_dir_all(&dir)?;
    let token_file = dir.join("synapse-admin-token");
    std::fs::write(&token_file, &admin_token)?;
    let policy = net.stack.policy();
    let yaml = format!(
        "admin_listen: 127.0.0.1:0\ninterval: 2s\n\
         synapse:\n  url: {}\n  access_token_file: {}\n  timeout: 2s\n\
         clamd:\n  address: {clamd_addr}\n  timeout: 2s\n\
         ca:\n  certs_dir: {}\n  crl: {}\n  timeout: 2s\n\
         policy:\n  bundle_dir: {}\n  trust: {}\n  timeout: 2s\n",
        agency.client_url(),
        token_file.display(),
        run_ca.issued_dir().display(),
        run_ca.crl_path().display(),
        policy.bundle_dir().display(),
        policy.trust_path().display(),
    );
    let config = govmx_service::config::from_yaml_str_validated(&yaml, "exporter.yaml")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let exporter = Exporter::bind(config).await?;
    let addr = exporter.admin_addr()?;
    let (trigger, shutdown) = Shutdown::manual();
    let serving = tokio::spawn(exporter.serve(shutdown));

    // What Synapse itself lists (the stack or the scanner may register accounts of their own):
    // at least the exporter, amt, clerk1..3 and uploader.
    let listed: serde_json::Value = http()
        .get(format!(
            "{}/_synapse/admin/v2/users?limit=1000&guests=false",
            agency.client_url()
        ))
        .bearer_auth(&admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let expect_users = listed["users"].as_array().context("users")?.len() as f64;
    assert!(expect_users >= 6.0, "{listed}");
    let mut last = String::new();
    let text = poll_until(
        "exporter facts",
        DEADLINE,
        Duration::from_millis(200),
        async || {
            let text = scrape(addr).await?;
            last.clone_from(&text);
            let up = |t: &str| metric(&text, "govmx_up", &[("target", t)]) == Some(1.0);
            let done = ["synapse", "clamd", "ca", "policy"].iter().all(|t| up(t))
                && metric(&text, "govmx_synapse_users", &[]) == Some(expect_users)
                && metric(&text, "govmx_synapse_local_media", &[]) == Some(1.0)
                && metric(
                    &text,
                    "govmx_synapse_federation_destinations",
                    &[("state", "healthy")],
                ) == Some(1.0);
            Ok(done.then_some(text))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; last scrape:\n{last}"))?;
    assert_eq!(
        metric(&text, "govmx_synapse_rooms", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "govmx_synapse_federation_destinations",
            &[("state", "healthy")]
        )
        .is_some_and(|n| n >= 1.0),
        "the citizen server is a healthy destination:\n{text}"
    );
    assert!(
        metric(&text, "govmx_synapse_local_media_bytes", &[])
            .is_some_and(|n| n == tiny_png().len() as f64),
        "{text}"
    );
    assert_eq!(metric(&text, "govmx_synapse_event_reports", &[]), Some(0.0));
    // clamd: what the exporter says is what clamd says.
    let version = clamd_version(clamd_addr).await?;
    let engine = version
        .strip_prefix("ClamAV ")
        .and_then(|v| v.split('/').next())
        .context("clamd VERSION")?;
    assert_eq!(
        metric(&text, "govmx_clamd_build_info", &[("engine", engine)]),
        Some(1.0),
        "clamd said {version:?}:\n{text}"
    );
    let db_version = version
        .split('/')
        .nth(1)
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(
        metric(&text, "govmx_clamd_signature_db_version", &[]),
        db_version,
        "clamd said {version:?}"
    );
    assert_eq!(
        metric(&text, "govmx_clamd_signature_db_known", &[]),
        Some(if db_version.is_some() { 1.0 } else { 0.0 })
    );
    // CA: every homeserver's certificate valid, the retired one revoked and on the CRL.
    assert_eq!(
        metric(
            &text,
            "govmx_ca_certificates",
            &[("profile", "homeserver-tls"), ("state", "valid")]
        ),
        Some(issued_tls - 1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "govmx_ca_certificates",
            &[("profile", "homeserver-tls"), ("state", "revoked")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "govmx_ca_crl_revoked_certificates", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "govmx_ca_crl_next_update_timestamp_seconds", &[]).is_some_and(|t| t
            > SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()),
        "{text}"
    );
    // Policy: the run's signed list, two signers.
    let bundle_version = policy.current_version().context("a published list")? as f64;
    assert_eq!(
        metric(&text, "govmx_policy_bundle_version", &[]),
        Some(bundle_version)
    );
    assert_eq!(metric(&text, "govmx_policy_bundle_signers", &[]), Some(2.0));
    assert_eq!(
        metric(&text, "govmx_policy_federation_list_servers", &[]),
        Some(2.0)
    );

    // A new account shows up in the next collection.
    agency.register_user("clerk4", PASSWORD).await?;
    poll_until(
        "one more user",
        DEADLINE,
        Duration::from_millis(200),
        async || {
            let text = scrape(addr).await?;
            Ok(
                (metric(&text, "govmx_synapse_users", &[]) == Some(expect_users + 1.0))
                    .then_some(()),
            )
        },
    )
    .await?;

    // Every service's live /metrics passes promtool.
    promtool_check_metrics("exporter", &text)?;
    promtool_check_metrics("federation gate", &net.gate("agency").metrics().await?)?;
    let scanner_text = scrape(scanner.admin_addr()).await?;
    assert_eq!(
        metric(
            &scanner_text,
            "govmx_media_scans_total",
            &[("verdict", "infected")]
        ),
        Some(1.0)
    );
    promtool_check_metrics("media scanner", &scanner_text)?;

    // Synapse stops: its target goes down and keeps its values; the others stay up, unchanged.
    kill_synapse(agency)?;
    let after = poll_until(
        "govmx_up{target=\"synapse\"} 0",
        DEADLINE,
        Duration::from_millis(200),
        async || {
            let text = scrape(addr).await?;
            Ok((metric(&text, "govmx_up", &[("target", "synapse")]) == Some(0.0)).then_some(text))
        },
    )
    .await?;
    assert_eq!(
        metric(&after, "govmx_synapse_users", &[]),
        Some(expect_users + 1.0)
    );
    for target in ["clamd", "ca", "policy"] {
        assert_eq!(
            metric(&after, "govmx_up", &[("target", target)]),
            Some(1.0),
            "{target} stays up:\n{after}"
        );
    }
    for (name, labels) in [
        ("govmx_clamd_build_info", vec![("engine", engine)]),
        ("govmx_policy_bundle_version", vec![]),
        (
            "govmx_ca_certificates",
            vec![("profile", "homeserver-tls"), ("state", "valid")],
        ),
    ] {
        assert_eq!(
            metric(&after, name, &labels),
            metric(&text, name, &labels),
            "{name} keeps its value"
        );
    }
    assert!(
        metric(
            &after,
            "govmx_exporter_collect_failures_total",
            &[("target", "synapse")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    trigger.trigger();
    serving.await??;
    drop(scanner);
    Ok(())
}
