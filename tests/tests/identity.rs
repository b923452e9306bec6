//! Agency identity end to end: the agency CA certifies an official's Matrix ID and cross-signing
//! master key, the official publishes the chain in its profile (MSC4133 custom field), and a
//! citizen on another homeserver verifies it over federation — then sees it fail for a revoked
//! certificate, a certificate for another Matrix ID, and a master key the official has reset.

use std::time::Duration;

use govmx_agency_ca::keys::MIN_KDF_ITERATIONS;
use govmx_agency_ca::store::EnrollRequest;
use govmx_agency_ca::verify::VerifyError;
use govmx_agency_ca::{AgencyDirectory, CaDir, CaSettings, HierarchyOptions, Profile};
use govmx_e2e::{DEADLINE, NetSpec, PASSWORD, poll_until, user};
use govmx_identity::{IdentityError, current_master_key, fetch_and_verify, publish};
use matrix_sdk::Client;
use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, MatrixUserIdentifier, Password, UserIdentifier,
};
use matrix_sdk::ruma::{OwnedUserId, UserId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const AGENCY_ID: &str = "wasserbehoerde";
const AGENCY_NAME: &str = "Wasserbehörde Frankfurt";

fn password_auth(localpart: &str, session: Option<String>) -> AuthData {
    let mut password = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new(localpart.to_owned())),
        PASSWORD.to_owned(),
    );
    password.session = session;
    AuthData::Password(password)
}

/// Uploads cross-signing keys (password UIA), the way a client does at first login.
async fn bootstrap_cross_signing(client: &Client, localpart: &str) -> anyhow::Result<()> {
    let encryption = client.encryption();
    if let Err(error) = encryption.bootstrap_cross_signing(None).await {
        let uiaa = error
            .as_uiaa_response()
            .ok_or_else(|| anyhow::anyhow!("bootstrap_cross_signing: {error}"))?;
        encryption
            .bootstrap_cross_signing(Some(password_auth(localpart, uiaa.session.clone())))
            .await?;
    }
    Ok(())
}

/// Replaces the account's cross-signing keys (a new master key), as after "reset identity".
async fn reset_cross_signing(client: &Client, localpart: &str) -> anyhow::Result<()> {
    if let Some(handle) = client.encryption().reset_cross_signing().await? {
        let session = match handle.auth_type() {
            CrossSigningResetAuthType::Uiaa(info) => info.session.clone(),
            CrossSigningResetAuthType::OAuth(_) => anyhow::bail!("unexpected OAuth reset"),
        };
        handle.auth(Some(password_auth(localpart, session))).await?;
    }
    Ok(())
}

/// The Agencies document: one agency whose official accounts are `@amt-*` on its homeserver.
fn agencies_yaml(server_name: &str, now: OffsetDateTime) -> anyhow::Result<String> {
    let issued = (now - time::Duration::days(1)).format(&Rfc3339)?;
    Ok(format!(
        "apiVersion: govmx.de/v1\n\
kind: Agencies\n\
metadata:\n\
\x20 name: e2e\n\
\x20 version: 1\n\
\x20 issued: {issued}\n\
agencies:\n\
\x20 - id: {AGENCY_ID}\n\
\x20   name: {AGENCY_NAME}\n\
\x20   serverNames: [\"{server_name}\"]\n\
\x20   officialAccounts: [\"@amt-*:{server_name}\"]\n"
    ))
}

/// A CSR (ECDSA P-256, rcgen) naming `user_id` as a `matrix:u/` URI SAN, as an official's
/// client would make it.
fn identity_csr(user_id: &UserId) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = format!("matrix:u/{}:{}", user_id.localpart(), user_id.server_name());
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Token + CSR + enrollment for `user_id` with `master_key`; returns (chain PEM, serial).
fn issue(ca: &CaDir, user_id: &UserId, master_key: &str) -> anyhow::Result<(String, String)> {
    let now = OffsetDateTime::now_utc();
    let (token, _) = ca.create_token(
        AGENCY_ID,
        Profile::AgencyIdentity,
        Some(user_id.as_str()),
        time::Duration::hours(1),
        now,
    )?;
    let csr = identity_csr(user_id)?;
    let enrolled = ca.enroll(
        &EnrollRequest {
            token: &token,
            profile: Profile::AgencyIdentity,
            csr: csr.as_bytes(),
            master_key: Some(master_key),
        },
        now,
    )?;
    Ok((enrolled.chain_pem, enrolled.issued.serial))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizen_verifies_agency_account_over_federation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("agency-ca");
    let net = NetSpec::default()
        .homeserver("agency")
        .homeserver("citizen")
        .start_in(dir)
        .await?;
    let (agency, citizen_hs) = (net.hs("agency"), net.hs("citizen"));
    let now = OffsetDateTime::now_utc();

    // The CA, with the agency's policy.
    let mut options = HierarchyOptions::new("Land Hessen");
    options.kdf_iterations = MIN_KDF_ITERATIONS;
    CaDir::init(
        &ca_dir,
        &options,
        b"e2e root passphrase",
        CaSettings::default(),
        now,
    )?;
    let agencies = AgencyDirectory::parse(
        "agencies.yaml",
        agencies_yaml(&agency.server_name(), now)?.as_bytes(),
        now,
    )
    .map_err(anyhow::Error::msg)?;
    let ca = CaDir::open(&ca_dir, CaSettings::default(), Some(agencies))?;
    let root = std::fs::read(ca.root_path())?;

    // The official sets up cross-signing; the CA certifies the Matrix ID and the master key.
    let official = user(agency, "amt-1").await?;
    let official_id: OwnedUserId = UserId::parse(agency.user_id("amt-1"))?;
    bootstrap_cross_signing(&official, "amt-1").await?;
    let master_key = current_master_key(&official, &official_id).await?;
    let (chain, serial) = issue(&ca, &official_id, &master_key)?;
    publish(&official, &chain).await?;

    // A citizen on the other homeserver verifies it with its own token, over federation.
    let citizen = user(citizen_hs, "erika").await?;
    let crl = ca.crl_pem()?;
    let verified = fetch_and_verify(
        &citizen,
        &official_id,
        &root,
        crl.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .await?;
    assert_eq!(verified.agency_name, AGENCY_NAME);
    assert_eq!(verified.agency_id, AGENCY_ID);
    assert_eq!(verified.user_id, official_id.as_str());

    // An account that published nothing.
    let _other = user(agency, "amt-3").await?;
    let other_id = UserId::parse(agency.user_id("amt-3"))?;
    let error = fetch_and_verify(
        &citizen,
        &other_id,
        &root,
        crl.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .await
    .expect_err("nothing published");
    assert!(
        matches!(error, IdentityError::NotPublished { .. }),
        "{error}"
    );

    // A certificate for another Matrix ID, published by the official.
    let colleague_id = UserId::parse(agency.user_id("amt-2"))?;
    let (colleague_chain, _) = issue(&ca, &colleague_id, &master_key)?;
    publish(&official, &colleague_chain).await?;
    let error = fetch_and_verify(
        &citizen,
        &official_id,
        &root,
        crl.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .await
    .expect_err("certificate for another account");
    assert!(
        matches!(
            &error,
            IdentityError::Verify(VerifyError::MatrixIdMismatch { certified, expected })
                if certified == colleague_id.as_str() && expected == official_id.as_str()
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!("certificate is for {colleague_id}, not {official_id}")
    );

    // Revoked: the right certificate again, then `revoke` and the new CRL.
    publish(&official, &chain).await?;
    let crl = ca.revoke(
        &serial,
        govmx_agency_ca::ca::RevocationReason::KeyCompromise,
        OffsetDateTime::now_utc(),
    )?;
    let error = fetch_and_verify(
        &citizen,
        &official_id,
        &root,
        crl.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .await
    .expect_err("revoked");
    assert!(
        matches!(error, IdentityError::Verify(VerifyError::Revoked)),
        "{error}"
    );
    assert_eq!(error.to_string(), "revoked");

    // A fresh certificate verifies; after the official resets cross-signing it no longer does.
    let (chain, _) = issue(&ca, &official_id, &master_key)?;
    publish(&official, &chain).await?;
    let verified = fetch_and_verify(
        &citizen,
        &official_id,
        &root,
        crl.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .await?;
    assert_eq!(verified.agency_name, AGENCY_NAME);
    reset_cross_signing(&official, "amt-1").await?;
    let new_key = current_master_key(&official, &official_id).await?;
    assert_ne!(new_key, master_key, "reset must create a new master key");
    let error = poll_until(
        "the citizen sees the new master key",
        DEADLINE,
        Duration::from_millis(250),
        async || match fetch_and_verify(
            &citizen,
            &official_id,
            &root,
            crl.as_bytes(),
            OffsetDateTime::now_utc(),
        )
        .await
        {
            Ok(_) => Ok(None),
            Err(error @ IdentityError::Verify(VerifyError::MasterKeyMismatch { .. })) => {
                Ok(Some(error))
            }
            Err(other) => Err(other.into()),
        },
    )
    .await?;
    assert!(
        matches!(
            &error,
            IdentityError::Verify(VerifyError::MasterKeyMismatch { certified, current })
                if *certified == master_key && *current == new_key
        ),
        "{error}"
    );
    Ok(())
}
