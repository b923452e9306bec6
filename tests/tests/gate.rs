//! The govmx federation gate in front of real Synapse homeservers: listed servers federate
//! through the gates, unlisted ones are refused at the gate (inbound and on outbound CONNECT),
//! and a newly published signed list takes effect without restarting anything.
//!
//! Each test starts its own network on random loopback addresses in a temp dir.

use std::time::Duration;

use anyhow::Context as _;

use govmx_e2e::{
    DEADLINE, TestNet, exchange_messages, gate_decisions, join_via, poll_until, user,
    wait_for_invite,
};
use govmx_stack::{Gate, Homeserver, Signers, metric_sum};
use matrix_sdk::Client;
use matrix_sdk::encryption::vodozemac;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::{OwnedRoomId, UserId};

use govmx_e2e::NetSpec;

const POLL: Duration = Duration::from_millis(200);

/// A public room created by `client` on `hs`.
async fn public_room(client: &Client) -> anyhow::Result<OwnedRoomId> {
    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PublicChat);
    Ok(client.create_room(request).await?.room_id().to_owned())
}

/// Audit entries of `gate` with `field == value` and rule `rule`.
fn denials(gate: &Gate, field: &str, value: &str, rule: &str) -> Vec<serde_json::Value> {
    gate.audit_entries()
        .into_iter()
        .filter(|entry| entry[field] == value && entry["rule"] == rule)
        .collect()
}

fn synapse_log(hs: &Homeserver) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(hs.process().log_path())?)
}

async fn list_version(gate: &Gate) -> anyhow::Result<f64> {
    Ok(metric_sum(
        &gate.metrics().await?,
        "govmx_gate_list_version",
        &[],
    ))
}

async fn failed_reloads(gate: &Gate) -> anyhow::Result<f64> {
    Ok(metric_sum(
        &gate.metrics().await?,
        "govmx_gate_reloads_total",
        &[("result", "failed")],
    ))
}

/// A and B are listed: invite, join and messages both ways, every request through both gates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_servers_federate_through_gates() -> anyhow::Result<()> {
    let net = NetSpec::default()
        .homeserver("a")
        .homeserver("b")
        .start()
        .await?;
    let (a, b) = (net.hs("a"), net.hs("b"));
    let official = user(a, "amt").await?;
    let erika = user(b, "erika").await?;

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    let room = official.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(&UserId::parse(b.user_id("erika"))?)
        .await?;
    wait_for_invite(&erika, &room_id).await?;
    join_via(&erika, &room_id, &a.server_name()).await?;

    exchange_messages(&official, &erika, &room_id).await?;

    // The traffic really crossed the gates: each gate allowed inbound requests from the other
    // server (rule member:<peer>) and outbound CONNECTs to it.
    for (own, peer) in [(&a, &b), (&b, &a)] {
        let gate = net.gate(own.label());
        let rule = format!("member:{}", peer.server_name());
        let inbound = gate_decisions(
            gate,
            &[
                ("surface", "inbound"),
                ("verdict", "allow"),
                ("rule", &rule),
            ],
        )
        .await?;
        let connect = gate_decisions(
            gate,
            &[
                ("surface", "connect"),
                ("verdict", "allow"),
                ("rule", &rule),
            ],
        )
        .await?;
        assert!(
            inbound >= 1.0 && connect >= 1.0,
            "gate of {} allowed {inbound} inbound requests and {connect} CONNECTs for {rule}",
            own.label()
        );
        assert_eq!(
            gate_decisions(gate, &[("verdict", "deny")]).await?,
            0.0,
            "no denials between listed servers: {:?}",
            gate.audit_entries()
        );
    }
    Ok(())
}

/// C runs but is not listed: its join, its invite and a `/send` transaction signed with its
/// real key are refused at A's gate, and A's Synapse never hears of C, while B (listed) joins
/// the same room and shows up in A's log. A PDU authored on C that B relays in its own
/// transaction is reported by A's gate (`relayed_events: report`, see `docs/synapse-module.md`
/// for where it is dropped): in the audit log, and as a per-PDU error in Synapse's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_server_is_refused_at_the_gate() -> anyhow::Result<()> {
    let net = NetSpec::default()
        .homeserver("a")
        .homeserver("b")
        .unlisted("c")
        .start()
        .await?;
    let (a, b, c) = (net.hs("a"), net.hs("b"), net.hs("c"));
    let official = user(a, "amt").await?;
    let outsider = user(c, "outsider").await?;
    let member = user(b, "member").await?;
    let room_id = public_room(&official).await?;

    let error = join_via(&outsider, &room_id, &a.server_name())
        .await
        .expect_err("an unlisted server must not join a room on a listed one");

    let gate = net.gate("a");
    let refused = denials(gate, "origin", &c.server_name(), "origin-not-listed");
    assert!(
        !refused.is_empty(),
        "join failed ({error:#}) but A's gate audit log has no origin-not-listed denial for {}: {:?}",
        c.server_name(),
        gate.audit_entries()
    );
    assert_eq!(refused[0]["surface"], "inbound");
    assert_eq!(refused[0]["enforced"], true);

    // C's user invites A's official: C's Synapse sends the invite to A, whose gate refuses it.
    let mut request = CreateRoomRequest::new();
    request.invite = vec![official.user_id().context("official user id")?.to_owned()];
    let invite = outsider.create_room(request).await;
    assert!(
        invite.is_err(),
        "an invite from an unlisted server must fail"
    );
    let refused = denials(gate, "origin", &c.server_name(), "origin-not-listed");
    assert!(
        refused
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.contains("/invite/"))),
        "A's gate refused no invite from C: {refused:?}"
    );

    // C sends a transaction into the room, signed with C's real key: refused at the gate.
    let (c_key_id, c_seed) = signing_seed(c)?;
    let txn = transaction(
        &c.server_name(),
        &format!("@outsider:{}", c.server_name()),
        room_id.as_str(),
        "probe-from-unlisted",
    );
    let (status, body) = signed_request(
        &net,
        a,
        &c.server_name(),
        &c_key_id,
        &c_seed,
        reqwest::Method::PUT,
        "/_matrix/federation/v1/send/probe-c-1",
        Some(&txn),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("M_FORBIDDEN") && body.contains("origin-not-listed"),
        "{body}"
    );

    // Positive control: B's join crosses the same gate, and B's server name shows up in A's
    // Synapse log (requests are logged with their X-Matrix origin), so the log would name C
    // if any of C's requests had reached A's Synapse.
    join_via(&member, &room_id, &a.server_name()).await?;
    let log = synapse_log(a)?;
    assert!(
        log.contains(&format!("{{{}}}", b.server_name())),
        "A's Synapse log has no request from {}; see {}",
        b.server_name(),
        a.process().log_path().display()
    );
    assert!(
        !log.contains(&c.server_name()),
        "A's Synapse saw something from the unlisted {}; see {}",
        c.server_name(),
        a.process().log_path().display()
    );

    // B relays a PDU authored on C in its own transaction: forwarded (B is listed), and A's
    // gate reports the unlisted author.
    let (b_key_id, b_seed) = signing_seed(b)?;
    let relayed = transaction(
        &b.server_name(),
        &format!("@outsider:{}", c.server_name()),
        room_id.as_str(),
        "probe-relayed",
    );
    let (status, body) = signed_request(
        &net,
        a,
        &b.server_name(),
        &b_key_id,
        &b_seed,
        reqwest::Method::PUT,
        "/_matrix/federation/v1/send/probe-b-1",
        Some(&relayed),
    )
    .await?;
    assert_eq!(status, 200, "B's transaction reaches A's Synapse: {body}");
    // Synapse answered with the event id it computed for the PDU; the gate matched it and put
    // its own per-PDU error there, so B learns why.
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let pdus = answer["pdus"].as_object().context("`pdus` in the answer")?;
    assert_eq!(pdus.len(), 1, "{body}");
    let (event_id, result) = pdus.iter().next().context("one PDU")?;
    assert!(event_id.starts_with('$'), "{body}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains(&c.server_name()) && e.contains("origin-not-listed")),
        "the answer carries no per-PDU error naming {}: {body}",
        c.server_name()
    );
    let reported = denials(gate, "origin", &b.server_name(), "gate.txn.unlisted_author");
    assert_eq!(reported.len(), 1, "{:?}", gate.audit_entries());
    assert_eq!(reported[0]["enforced"], false, "report mode forwards it");
    assert!(
        reported[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&c.server_name())),
        "{reported:?}"
    );
    Ok(())
}

/// A's user invites a user on the unlisted C: the invite fails, and A's gate refused the
/// outbound CONNECT to C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_to_unlisted_is_refused() -> anyhow::Result<()> {
    let net = NetSpec::default()
        .homeserver("a")
        .unlisted("c")
        .start()
        .await?;
    let (a, c) = (net.hs("a"), net.hs("c"));
    let official = user(a, "amt").await?;
    user(c, "outsider").await?;

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    let room = official.create_room(request).await?;
    let error = room
        .invite_user_by_id(&UserId::parse(c.user_id("outsider"))?)
        .await
        .expect_err("inviting a user on an unlisted server must fail");

    let gate = net.gate("a");
    let target = c.server_name();
    let refused = denials(gate, "destination", &target, "gate.connect.unlisted_target");
    assert!(
        !refused.is_empty(),
        "invite failed ({error}) but A's gate audit log has no refused CONNECT to {target}: {:?}",
        gate.audit_entries()
    );
    assert_eq!(refused[0]["surface"], "connect");
    assert_eq!(refused[0]["method"], "CONNECT");
    Ok(())
}

/// A new signed list adding C lets C federate with A without restarting anything; removing C
/// blocks it again; a badly signed list is rejected and the previous one stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_adds_and_removes_server() -> anyhow::Result<()> {
    let net: TestNet = NetSpec::default()
        .homeserver("a")
        .unlisted("c")
        .start()
        .await?;
    let (a, c) = (net.hs("a"), net.hs("c"));
    let gate = net.gate("a");
    let official = user(a, "amt").await?;
    let outsider = user(c, "outsider").await?;
    let first_room = public_room(&official).await?;
    let second_room = public_room(&official).await?;
    let third_room = public_room(&official).await?;

    // Not listed: refused.
    join_via(&outsider, &first_room, &a.server_name())
        .await
        .expect_err("C is not listed yet");

    // Add C.
    let listed = net.stack.listed_servers()?;
    let mut with_c = listed.clone();
    with_c.push(c.listing()?);
    let added = net.stack.publish_federation_list(&with_c, Signers::Run)?;
    poll_until("A's gate loads the list with C", DEADLINE, POLL, || async {
        Ok((list_version(gate).await? == added as f64).then_some(()))
    })
    .await?;
    join_via(&outsider, &first_room, &a.server_name()).await?;
    let rule = format!("member:{}", c.server_name());
    assert!(gate_decisions(gate, &[("verdict", "allow"), ("rule", &rule)]).await? >= 1.0);

    // Remove C again, this time without nudging the gates: they notice the new bundle on
    // their own poll (every second).
    let denied_before = denials(gate, "origin", &c.server_name(), "origin-not-listed").len();
    let removed = net.stack.policy().publish(&listed)?;
    poll_until(
        "A's gate loads the list without C",
        DEADLINE,
        POLL,
        || async { Ok((list_version(gate).await? == removed as f64).then_some(())) },
    )
    .await?;
    join_via(&outsider, &second_room, &a.server_name())
        .await
        .expect_err("C was removed from the list");
    let denied_after = denials(gate, "origin", &c.server_name(), "origin-not-listed").len();
    assert!(
        denied_after > denied_before,
        "no new denial for C after removal"
    );

    // A list adding C again, but not signed by the threshold of pinned signers: rejected.
    let failed_before = failed_reloads(gate).await?;
    net.stack
        .publish_federation_list(&with_c, Signers::OneRunSignerAndAnUnpinnedKey)?;
    poll_until(
        "A's gate rejects the badly signed list",
        DEADLINE,
        POLL,
        || async { Ok((failed_reloads(gate).await? > failed_before).then_some(())) },
    )
    .await?;
    assert_eq!(list_version(gate).await?, removed as f64, "old list stays");
    join_via(&outsider, &third_room, &a.server_name())
        .await
        .expect_err("a badly signed list must not let C in");
    Ok(())
}

/// Signs a federation request as `origin` with `key` (32-byte seed), sends it to `to`'s gate
/// and returns the HTTP status and body.
#[allow(clippy::too_many_arguments)]
async fn signed_request(
    net: &TestNet,
    to: &Homeserver,
    origin: &str,
    key_id: &str,
    seed: &[u8; 32],
    method: reqwest::Method,
    uri: &str,
    content: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let destination = to.server_name();
    // serde_json's maps are sorted and `to_string` is compact: canonical JSON for these values.
    let mut signed = serde_json::json!({
        "method": method.as_str(),
        "uri": uri,
        "origin": origin,
        "destination": destination,
    });
    if let Some(content) = content {
        signed["content"] = content.clone();
    }
    let key = vodozemac::Ed25519SecretKey::from_slice(seed);
    let sig = key.sign(signed.to_string().as_bytes()).to_base64();
    let header = format!(
        r#"X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}""#
    );
    let mut request = net
        .stack
        .federation_client()?
        .request(method, format!("{}{uri}", to.federation_url()))
        .header("Authorization", header);
    if let Some(content) = content {
        request = request.json(content);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// [`signed_request`] for a GET; returns the HTTP status.
async fn signed_get(
    net: &TestNet,
    to: &Homeserver,
    origin: &str,
    key_id: &str,
    seed: &[u8; 32],
    uri: &str,
) -> anyhow::Result<u16> {
    let (status, _) = signed_request(
        net,
        to,
        origin,
        key_id,
        seed,
        reqwest::Method::GET,
        uri,
        None,
    )
    .await?;
    Ok(status)
}

/// `hs`'s Synapse signing key: key id and seed.
fn signing_seed(hs: &Homeserver) -> anyhow::Result<(String, [u8; 32])> {
    let signing_key = std::fs::read_to_string(hs.data_dir().join("signing.key"))?;
    let [_, version, seed] = signing_key.split_whitespace().collect::<Vec<_>>()[..] else {
        anyhow::bail!("unexpected signing key file");
    };
    let seed: [u8; 32] = vodozemac::base64_decode(seed)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("seed is not 32 bytes"))?;
    Ok((format!("ed25519:{version}"), seed))
}

/// A `/send` transaction from `origin` holding one message PDU by `sender` in `room`.
fn transaction(origin: &str, sender: &str, room: &str, body: &str) -> serde_json::Value {
    serde_json::json!({
        "origin": origin,
        "origin_server_ts": 1_700_000_000_000u64,
        "pdus": [{
            "room_id": room,
            "sender": sender,
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": body},
            "origin_server_ts": 1_700_000_000_000u64,
            "depth": 10,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "x"},
            "signatures": {},
        }],
        "edus": [],
    })
}

/// Strict mode: a request claiming to come from B but signed with another key is refused at
/// A's gate and never reaches A's Synapse; the same request signed with B's real key (pinned in
/// the run's list) is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_forged_origin() -> anyhow::Result<()> {
    let net = NetSpec::default()
        .homeserver("a")
        .homeserver("b")
        .start()
        .await?;
    let (a, b) = (net.hs("a"), net.hs("b"));
    let (key_id, real_seed) = signing_seed(b)?;
    assert_eq!(
        b.listing()?.signing_keys,
        [(key_id.clone(), {
            let public = vodozemac::Ed25519SecretKey::from_slice(&real_seed).public_key();
            public.to_base64()
        })],
        "the run's list pins B's real Synapse signing key"
    );

    let forged_uri = "/_matrix/federation/v1/query/directory?room_alias=%23forged-probe%3Ax";
    let status = signed_get(&net, a, &b.server_name(), &key_id, &[7; 32], forged_uri).await?;
    assert!(
        status == 401 || status == 403,
        "forged request answered {status}"
    );
    let gate = net.gate("a");
    let refused = denials(
        gate,
        "origin",
        &b.server_name(),
        "gate.strict.bad_signature",
    );
    assert_eq!(refused.len(), 1, "{:?}", gate.audit_entries());
    assert_eq!(refused[0]["path"], "/_matrix/federation/v1/query/directory");

    // Control: signed with B's real key, the same kind of request reaches Synapse (which
    // answers 404 for the unknown alias) and shows up in its log.
    let genuine_uri = "/_matrix/federation/v1/query/directory?room_alias=%23genuine-probe%3Ax";
    let status = signed_get(&net, a, &b.server_name(), &key_id, &real_seed, genuine_uri).await?;
    assert_ne!(status, 401, "a correctly signed request must pass the gate");
    let log = poll_until(
        "A's Synapse logs the genuine request",
        DEADLINE,
        POLL,
        || async {
            let log = synapse_log(a)?;
            Ok(log.contains("genuine-probe").then_some(log))
        },
    )
    .await?;
    assert!(
        !log.contains("forged-probe"),
        "the forged request reached A's Synapse; see {}",
        a.process().log_path().display()
    );

    // A list that pins no key for B: A's gate fetches B's keys from B itself (through B's
    // gate, TLS from the run CA), verifies them and checks the signature with them.
    let mut servers = net.stack.listed_servers()?;
    for server in servers
        .iter_mut()
        .filter(|s| s.server_name == b.server_name())
    {
        server.signing_keys.clear();
    }
    let unpinned = net.stack.publish_federation_list(&servers, Signers::Run)?;
    poll_until(
        "A's gate uses the list without B's key",
        DEADLINE,
        POLL,
        || async {
            let metrics = gate.metrics().await?;
            Ok(
                (metric_sum(&metrics, "govmx_gate_list_version", &[]) == unpinned as f64)
                    .then_some(()),
            )
        },
    )
    .await?;
    let fetched_uri = "/_matrix/federation/v1/query/directory?room_alias=%23fetched-probe%3Ax";
    let status = signed_get(&net, a, &b.server_name(), &key_id, &real_seed, fetched_uri).await?;
    assert_ne!(
        status, 401,
        "signed with B's real key, checked with the fetched key"
    );
    let forged_uri = "/_matrix/federation/v1/query/directory?room_alias=%23forged-unpinned%3Ax";
    let status = signed_get(&net, a, &b.server_name(), &key_id, &[7; 32], forged_uri).await?;
    assert_eq!(status, 401, "a forgery fails against the fetched key too");
    poll_until(
        "A's Synapse logs the fetched-key request",
        DEADLINE,
        POLL,
        || async { Ok(synapse_log(a)?.contains("fetched-probe").then_some(())) },
    )
    .await?;
    assert!(!synapse_log(a)?.contains("forged-unpinned"));
    let metrics = gate.metrics().await?;
    assert_eq!(
        metric_sum(
            &metrics,
            "govmx_gate_key_fetches_total",
            &[("result", "fetched")]
        ),
        1.0,
        "B's keys were fetched once"
    );
    Ok(())
}
