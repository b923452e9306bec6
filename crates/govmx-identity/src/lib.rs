//! Agency identity in Matrix: where an agency account's certificate chain lives, and the check a
//! citizen's client runs on it.
//!
//! - [`publish`]: an agency account (logged in with matrix-sdk) stores its agency-identity chain
//!   (leaf + intermediate, PEM) in its own profile, in the custom profile field
//!   [`PROFILE_FIELD`] (MSC4133, stable `/_matrix/client/v3/profile/{userId}/{field}`).
//! - [`fetch_and_verify`]: a citizen's client reads that field with its own access token (its
//!   homeserver asks the agency's homeserver over federation, `GET /_matrix/federation/v1/query/profile`),
//!   reads the user's current cross-signing master key with `/keys/query`, and runs
//!   [`govmx_agency_ca::verify::verify_identity`] with the pinned root and the CA's CRL.
//!
//! The format is documented in `docs/agency-identity-matrix.md`.
#![forbid(unsafe_code)]

use govmx_agency_ca::verify::{Verified, VerifyError, VerifyInput, verify_identity};
use matrix_sdk::Client;
use matrix_sdk::ruma::api::client::keys::get_keys;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::profile::{ProfileFieldName, ProfileFieldValue};
use matrix_sdk::ruma::{OwnedUserId, UserId};
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use time::OffsetDateTime;

/// The custom profile field holding the chain: a JSON string with the PEM certificates, leaf
/// first, then the intermediate(s); never the root (clients pin it).
pub const PROFILE_FIELD: &str = "de.govmx.identity_chain";

/// Largest chain [`publish`] accepts (Synapse caps a whole profile at 64 KiB).
pub const MAX_CHAIN_BYTES: usize = 16 * 1024;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The chain is not PEM certificates.
    #[error("the chain is not PEM certificates: {0}")]
    InvalidChain(String),
    /// The client has no session.
    #[error("the client is not logged in")]
    NotLoggedIn,
    /// The homeserver refused or could not be reached.
    #[error("the homeserver did not store the profile field {PROFILE_FIELD}: {0}")]
    Matrix(#[source] Box<matrix_sdk::Error>),
}

/// Why an account is not verified as an agency account.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The account has no chain in its profile.
    #[error("not published: {user_id} has no {PROFILE_FIELD} profile field")]
    NotPublished {
        /// The account.
        user_id: OwnedUserId,
    },
    /// The profile field is there but is not a PEM chain.
    #[error("published value is not a PEM certificate chain: {0}")]
    InvalidPublished(String),
    /// `/keys/query` has no cross-signing master key for the account.
    #[error("{user_id} has no cross-signing master key (/keys/query)")]
    NoMasterKey {
        /// The account.
        user_id: OwnedUserId,
    },
    /// `/keys/query` failed for the account's server.
    #[error("/keys/query could not reach {server}: {detail}")]
    KeysQueryFailed {
        /// The server that failed.
        server: String,
        /// What the homeserver reported.
        detail: String,
    },
    /// A request to the citizen's homeserver failed.
    #[error("request to the homeserver failed: {0}")]
    Matrix(#[source] Box<matrix_sdk::Error>),
    /// The chain was fetched but does not verify (revoked, wrong Matrix ID, master key
    /// mismatch, expired, untrusted chain, …).
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl From<matrix_sdk::HttpError> for IdentityError {
    fn from(error: matrix_sdk::HttpError) -> Self {
        IdentityError::Matrix(Box::new(error.into()))
    }
}

/// Publishes `chain_pem` (leaf + intermediates, PEM) in the logged-in account's profile field
/// [`PROFILE_FIELD`], replacing an earlier one.
pub async fn publish(client: &Client, chain_pem: &str) -> Result<(), PublishError> {
    check_chain(chain_pem).map_err(PublishError::InvalidChain)?;
    if client.user_id().is_none() {
        return Err(PublishError::NotLoggedIn);
    }
    let value = ProfileFieldValue::new(
        PROFILE_FIELD,
        serde_json::Value::String(chain_pem.to_owned()),
    )
    .map_err(|e| PublishError::InvalidChain(e.to_string()))?;
    client
        .account()
        .set_profile_field(value)
        .await
        .map_err(|e| PublishError::Matrix(Box::new(e)))
}

/// Removes the published chain from the logged-in account's profile (after revocation).
pub async fn unpublish(client: &Client) -> Result<(), PublishError> {
    if client.user_id().is_none() {
        return Err(PublishError::NotLoggedIn);
    }
    client
        .account()
        .delete_profile_field(ProfileFieldName::from(PROFILE_FIELD))
        .await
        .map_err(|e| PublishError::Matrix(Box::new(e)))
}

/// Fetches the chain `user_id` published ([`PROFILE_FIELD`]), as seen by `client`'s homeserver.
pub async fn fetch_chain(client: &Client, user_id: &UserId) -> Result<String, IdentityError> {
    let not_published = || IdentityError::NotPublished {
        user_id: user_id.to_owned(),
    };
    let value = match client
        .account()
        .fetch_profile_field_of(user_id.to_owned(), ProfileFieldName::from(PROFILE_FIELD))
        .await
    {
        Ok(value) => value,
        Err(error) if matches!(error.client_api_error_kind(), Some(ErrorKind::NotFound)) => {
            return Err(not_published());
        }
        Err(error) => return Err(IdentityError::Matrix(Box::new(error))),
    };
    let value = value.ok_or_else(not_published)?;
    match value.value().as_ref() {
        serde_json::Value::Null => Err(not_published()),
        serde_json::Value::String(chain) => {
            check_chain(chain).map_err(IdentityError::InvalidPublished)?;
            Ok(chain.clone())
        }
        other => Err(IdentityError::InvalidPublished(format!(
            "expected a JSON string, found {}",
            json_kind(other)
        ))),
    }
}

/// The user's current cross-signing master key (unpadded base64), from `/keys/query` on
/// `client`'s homeserver, bypassing the client's crypto store cache.
pub async fn current_master_key(
    client: &Client,
    user_id: &UserId,
) -> Result<String, IdentityError> {
    let mut request = get_keys::v3::Request::new();
    request.device_keys.insert(user_id.to_owned(), Vec::new());
    let response = client.send(request).await?;
    if let Some(failure) = response.failures.get(user_id.server_name().as_str()) {
        return Err(IdentityError::KeysQueryFailed {
            server: user_id.server_name().to_string(),
            detail: failure.to_string(),
        });
    }
    let no_key = || IdentityError::NoMasterKey {
        user_id: user_id.to_owned(),
    };
    let raw = response.master_keys.get(user_id).ok_or_else(no_key)?;
    let key: serde_json::Value = raw.deserialize_as().map_err(|_| no_key())?;
    master_key_of(&key, user_id).ok_or_else(no_key)
}

/// The ed25519 key of a `/keys/query` master key object, if it belongs to `user_id`, has the
/// `master` usage and exactly one ed25519 key.
fn master_key_of(key: &serde_json::Value, user_id: &UserId) -> Option<String> {
    if key.get("user_id")?.as_str()? != user_id.as_str() {
        return None;
    }
    let usage = key.get("usage")?.as_array()?;
    if !usage.iter().any(|u| u.as_str() == Some("master")) {
        return None;
    }
    let mut keys = key
        .get("keys")?
        .as_object()?
        .iter()
        .filter(|(id, _)| id.starts_with("ed25519:"));
    let (_, value) = keys.next()?;
    if keys.next().is_some() {
        return None;
    }
    value.as_str().map(str::to_owned)
}

/// Fetches `user_id`'s published chain and current master key through `client` (the citizen's
/// own homeserver) and verifies them against `pinned_root_pem` and `crl` (PEM or DER) at `now`.
pub async fn fetch_and_verify(
    client: &Client,
    user_id: &UserId,
    pinned_root_pem: &[u8],
    crl: &[u8],
    now: OffsetDateTime,
) -> Result<Verified, IdentityError> {
    let chain = fetch_chain(client, user_id).await?;
    let master_key = current_master_key(client, user_id).await?;
    Ok(verify_identity(&VerifyInput {
        chain_pem: chain.as_bytes(),
        root_pem: pinned_root_pem,
        expected_user_id: user_id.as_str(),
        current_master_key: &master_key,
        crl,
        now,
    })?)
}

fn check_chain(chain_pem: &str) -> Result<(), String> {
    if chain_pem.len() > MAX_CHAIN_BYTES {
        return Err(format!(
            "{} bytes, more than {MAX_CHAIN_BYTES}",
            chain_pem.len()
        ));
    }
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_sdk::ruma::user_id;
    use serde_json::json;

    #[test]
    fn master_key_of_accepts_only_the_users_single_master_key() {
        let alice = user_id!("@alice:example.org");
        let key = json!({
            "user_id": "@alice:example.org",
            "usage": ["master"],
            "keys": {"ed25519:abc": "abc"},
        });
        assert_eq!(master_key_of(&key, alice).as_deref(), Some("abc"));
        let other = json!({"user_id": "@bob:example.org", "usage": ["master"], "keys": {"ed25519:abc": "abc"}});
        assert_eq!(master_key_of(&other, alice), None);
        let not_master = json!({"user_id": "@alice:example.org", "usage": ["self_signing"], "keys": {"ed25519:abc": "abc"}});
        assert_eq!(master_key_of(&not_master, alice), None);
        let two = json!({"user_id": "@alice:example.org", "usage": ["master"], "keys": {"ed25519:a": "a", "ed25519:b": "b"}});
        assert_eq!(master_key_of(&two, alice), None);
    }

    #[test]
    fn check_chain_refuses_non_pem_and_empty() {
        assert!(check_chain("hello").is_err());
        assert!(check_chain("").is_err());
        assert!(check_chain(&"x".repeat(MAX_CHAIN_BYTES + 1)).is_err());
    }
}
