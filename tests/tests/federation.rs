//! Federation over TLS between real Synapse homeservers, driven by matrix-sdk clients.
//!
//! Each test starts its own homeservers on random loopback addresses in a temp dir.

use govmx_e2e::{NetSpec, exchange_messages, join_via, user, wait_for_invite};
use govmx_stack::RunCa;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::{OwnedServerName, RoomOrAliasId, UserId};

/// An agency official invites a citizen on another server; both messages cross federation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_invite_join_messages() -> anyhow::Result<()> {
    let net = NetSpec::default()
        .homeserver("agency")
        .homeserver("citizen")
        .start()
        .await?;
    let (agency, citizen) = (net.hs("agency"), net.hs("citizen"));
    let official = user(agency, "amt").await?;
    let erika = user(citizen, "erika").await?;

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    request.name = Some("Antrag 4711".to_owned());
    let room = official.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    let erika_id = UserId::parse(citizen.user_id("erika"))?;
    room.invite_user_by_id(&erika_id).await?;

    wait_for_invite(&erika, &room_id).await?;
    join_via(&erika, &room_id, &agency.server_name()).await?;

    exchange_messages(&official, &erika, &room_id).await?;
    Ok(())
}

/// Negative control: a homeserver trusting a rogue CA cannot join our room, while one trusting
/// the run CA can, in the same network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_cannot_federate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rogue_ca = RunCa::load_or_create(&dir.path().join("rogue-ca"), "rogue CA")?;
    let net = NetSpec::default()
        .homeserver("agency")
        .homeserver("trusting")
        .homeserver_trusting("rogue", rogue_ca.cert_path().to_owned())
        .start_in(dir)
        .await?;
    let (agency, trusting, rogue) = (net.hs("agency"), net.hs("trusting"), net.hs("rogue"));
    let official = user(agency, "amt").await?;
    let control = user(trusting, "control").await?;
    let outsider = user(rogue, "outsider").await?;

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PublicChat);
    let room = official.create_room(request).await?;
    let room_or_alias: &RoomOrAliasId = room.room_id().into();
    let via: OwnedServerName = agency.server_name().try_into()?;

    let rejected = outsider
        .join_room_by_id_or_alias(room_or_alias, std::slice::from_ref(&via))
        .await;
    let error = rejected.expect_err("a server that does not trust our CA must not federate");
    let log = std::fs::read_to_string(rogue.process().log_path())?;
    assert!(
        log.contains("certificate verify failed"),
        "the join failed ({error}), but not on certificate verification; see {}",
        rogue.process().log_path().display()
    );

    control
        .join_room_by_id_or_alias(room_or_alias, &[via])
        .await?;
    Ok(())
}
