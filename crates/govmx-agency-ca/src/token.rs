//! One-time enrollment tokens: bound to an agency, a profile and optionally a subject (Matrix ID
//! or host), expiring, stored only as SHA-256 hashes. The secret is shown once, at creation.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use crate::ca::Profile;

/// Prefix of every token secret (makes leaked tokens greppable).
pub const TOKEN_PREFIX: &str = "govmxca_";

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token with this secret exists (or it is malformed).
    #[error("unknown enrollment token")]
    Unknown,
    /// Already redeemed.
    #[error("enrollment token {id} was already used at {used_at}")]
    Used {
        /// The token id.
        id: String,
        /// When.
        used_at: String,
    },
    /// Past its expiry.
    #[error("enrollment token {id} expired at {expired_at}")]
    Expired {
        /// The token id.
        id: String,
        /// When.
        expired_at: String,
    },
    /// Bound to another profile.
    #[error("enrollment token {id} is for profile {bound}, not {requested}")]
    WrongProfile {
        /// The token id.
        id: String,
        /// The bound profile.
        bound: Profile,
        /// The requested profile.
        requested: Profile,
    },
}

/// A stored token (no secret; only its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id: the first 12 hex digits of the hash (for logs and listings).
    pub id: String,
    /// SHA-256 of the secret, lower-case hex.
    pub sha256: String,
    /// The agency id.
    pub agency: String,
    /// The profile.
    pub profile: Profile,
    /// The bound subject (Matrix ID or host), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was redeemed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
    /// The serial it was redeemed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_for: Option<String>,
}

/// All tokens (the `tokens.json` document).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenStore {
    /// The records.
    pub tokens: Vec<TokenRecord>,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl TokenStore {
    /// Creates a token and returns its secret (shown once) and record.
    pub fn create(
        &mut self,
        agency: &str,
        profile: Profile,
        subject: Option<&str>,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> (String, TokenRecord) {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let sha256 = hash(&secret);
        let record = TokenRecord {
            id: sha256[..12].to_owned(),
            sha256,
            agency: agency.to_owned(),
            profile,
            subject: subject.map(str::to_owned),
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
            used_for: None,
        };
        self.tokens.push(record.clone());
        (secret, record)
    }

    /// Checks `secret` for `profile` at `now` without redeeming it.
    pub fn check(
        &self,
        secret: &str,
        profile: Profile,
        now: OffsetDateTime,
    ) -> Result<&TokenRecord, TokenError> {
        let digest = hash(secret.trim());
        let record = self
            .tokens
            .iter()
            .find(|t| t.sha256 == digest)
            .ok_or(TokenError::Unknown)?;
        if let Some(used_at) = record.used_at {
            return Err(TokenError::Used {
                id: record.id.clone(),
                used_at: rfc3339(used_at),
            });
        }
        if now >= record.expires_at {
            return Err(TokenError::Expired {
                id: record.id.clone(),
                expired_at: rfc3339(record.expires_at),
            });
        }
        if record.profile != profile {
            return Err(TokenError::WrongProfile {
                id: record.id.clone(),
                bound: record.profile,
                requested: profile,
            });
        }
        Ok(record)
    }

    /// Marks the token with this secret as used for `serial` (after a successful [`check`]).
    ///
    /// [`check`]: TokenStore::check
    pub fn redeem(
        &mut self,
        secret: &str,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<(), TokenError> {
        let digest = hash(secret.trim());
        let record = self
            .tokens
            .iter_mut()
            .find(|t| t.sha256 == digest)
            .ok_or(TokenError::Unknown)?;
        if let Some(used_at) = record.used_at {
            return Err(TokenError::Used {
                id: record.id.clone(),
                used_at: rfc3339(used_at),
            });
        }
        record.used_at = Some(now);
        record.used_for = Some(serial.to_owned());
        Ok(())
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn one_time_bound_expiring_hashed() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let mut store = TokenStore::default();
        let (secret, record) = store.create(
            "wasserbehoerde",
            Profile::AgencyIdentity,
            None,
            Duration::hours(1),
            now,
        );
        assert!(secret.starts_with(TOKEN_PREFIX));
        let json = serde_json::to_string(&store).unwrap();
        assert!(!json.contains(&secret), "the secret must not be stored");
        assert!(json.contains(&record.sha256));

        assert_eq!(
            store.check("govmxca_nope", Profile::AgencyIdentity, now),
            Err(TokenError::Unknown)
        );
        assert!(matches!(
            store.check(&secret, Profile::HomeserverTls, now),
            Err(TokenError::WrongProfile {
                bound: Profile::AgencyIdentity,
                requested: Profile::HomeserverTls,
                ..
            })
        ));
        assert!(matches!(
            store.check(&secret, Profile::AgencyIdentity, now + Duration::hours(1)),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(
            store
                .check(&secret, Profile::AgencyIdentity, now)
                .unwrap()
                .agency,
            "wasserbehoerde"
        );
        store.redeem(&secret, "4abc", now).unwrap();
        assert!(matches!(
            store.check(&secret, Profile::AgencyIdentity, now),
            Err(TokenError::Used { .. })
        ));
        assert!(matches!(
            store.redeem(&secret, "4abd", now),
            Err(TokenError::Used { .. })
        ));
        let back: TokenStore =
            serde_json::from_str(&serde_json::to_string(&store).unwrap()).unwrap();
        assert_eq!(back, store);
    }
}
