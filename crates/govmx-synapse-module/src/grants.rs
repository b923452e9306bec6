//! Case grants issued at run time: the `/_govmx/grants` API (Synapse authenticates the caller
//! with its access token; the Python class passes the user id here) and the grants file.
//!
//! - `POST /_govmx/grants` `{"citizen", "serviceRequest", "validFor"?|"notAfter"?, "notBefore"?, "id"?}`
//!   issues (or replaces, same id) a grant of the caller's agency.
//! - `GET /_govmx/grants` lists the caller's agency's grants.
//! - `DELETE /_govmx/grants/{id}` revokes one (closure of the service request).
//!
//! Only officials of an agency (users whose class is `agency` and who belong to an agency in
//! the Agencies document) may call it, and only for their own agency.

use std::sync::Arc;

use govmx_policy::{DurationSpec, Grant, ServerClass, Timestamp, UserIdSpec};
use ruma_common::UserId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::engine::{Engine, RuntimeGrants, write_atomic, write_lock};

/// Default validity of a grant when the request names neither `validFor` nor `notAfter`.
const DEFAULT_VALIDITY: time::Duration = time::Duration::days(30);

/// Body of `POST /_govmx/grants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrantRequest {
    /// The citizen's Matrix user id.
    pub citizen: String,
    /// The service request (case file number) the grant belongs to.
    pub service_request: String,
    /// Grant id; default `<agency>:<serviceRequest>:<citizen>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Start of validity; default now.
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    /// End of validity (exclusive).
    #[serde(default)]
    pub not_after: Option<Timestamp>,
    /// Validity from `notBefore` (`7d`, `12h`), when `notAfter` is absent; default 30 days.
    #[serde(default)]
    pub valid_for: Option<DurationSpec>,
}

/// An HTTP answer of the grants API: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantReply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (a Matrix error `{"errcode","error"}` when not 2xx).
    pub body: String,
}

impl GrantReply {
    fn ok(body: serde_json::Value) -> GrantReply {
        GrantReply {
            status: 200,
            body: body.to_string(),
        }
    }

    fn error(status: u16, errcode: &str, message: impl Into<String>) -> GrantReply {
        GrantReply {
            status,
            body: json!({"errcode": errcode, "error": message.into()}).to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    grants: Vec<Grant>,
}

/// Parses the grants file (`{"grants": [...]}`, each as in the ContactRules document).
pub(crate) fn parse_grants_file(bytes: &[u8]) -> Result<Vec<Grant>, String> {
    serde_json::from_slice::<GrantsFile>(bytes)
        .map(|file| file.grants)
        .map_err(|error| error.to_string())
}

impl Engine {
    /// Answers one grants API request from the authenticated `issuer`. `grant_id` is the
    /// decoded path segment after `/_govmx/grants/`, if any.
    pub fn grants_api(
        &self,
        method: &str,
        issuer: &str,
        grant_id: Option<&str>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> GrantReply {
        let Some(path) = self.config.grants_file.clone() else {
            return GrantReply::error(
                404,
                "M_UNRECOGNIZED",
                "runtime grants are not enabled on this homeserver (no grants_file)",
            );
        };
        let Some(loaded) = self.current() else {
            return GrantReply::error(
                503,
                "M_FORBIDDEN",
                "the homeserver has no valid contact policy loaded",
            );
        };
        let set = &loaded.set;
        let Ok(issuer_id) = <&UserId>::try_from(issuer) else {
            return GrantReply::error(400, "M_INVALID_PARAM", "the caller is not a valid user id");
        };
        let agency = match (set.class_of(issuer_id), set.agency_of(issuer_id)) {
            (Some(ServerClass::Agency), Some(agency)) => agency.to_owned(),
            _ => {
                return GrantReply::error(
                    403,
                    "M_FORBIDDEN",
                    format!("{issuer} is not an official of an agency and may not manage grants"),
                );
            }
        };
        match (method, grant_id) {
            ("GET", None) => {
                let runtime = self.runtime_grants();
                let grants: Vec<&Grant> = runtime
                    .grants
                    .iter()
                    .filter(|grant| grant.agency == agency)
                    .collect();
                GrantReply::ok(json!({"agency": agency, "grants": grants}))
            }
            ("POST", None) => {
                let request: GrantRequest = match serde_json::from_slice(body) {
                    Ok(request) => request,
                    Err(error) => {
                        return GrantReply::error(
                            400,
                            "M_BAD_JSON",
                            format!("grant request: {error}"),
                        );
                    }
                };
                let grant = match self.new_grant(set, &agency, request, now) {
                    Ok(grant) => grant,
                    Err(reply) => return reply,
                };
                let reply = json!({"grant": &grant});
                match self.update_grants(&path, now, |grants| {
                    grants.retain(|existing| existing.id != grant.id);
                    grants.push(grant);
                    true
                }) {
                    Ok(_) => GrantReply::ok(reply),
                    Err(reply) => reply,
                }
            }
            ("DELETE", Some(id)) => {
                let current = self.runtime_grants();
                match current.grants.iter().find(|grant| grant.id == id) {
                    None => GrantReply::error(404, "M_NOT_FOUND", format!("no grant {id:?}")),
                    Some(grant) if grant.agency != agency => GrantReply::error(
                        403,
                        "M_FORBIDDEN",
                        format!("grant {id:?} belongs to another agency"),
                    ),
                    Some(_) => match self.update_grants(&path, now, |grants| {
                        grants.retain(|grant| grant.id != id);
                        true
                    }) {
                        Ok(_) => GrantReply::ok(json!({"revoked": id})),
                        Err(reply) => reply,
                    },
                }
            }
            _ => GrantReply::error(
                405,
                "M_UNRECOGNIZED",
                "use GET or POST /_govmx/grants, or DELETE /_govmx/grants/{id}",
            ),
        }
    }

    fn new_grant(
        &self,
        set: &govmx_policy::PolicySet,
        agency: &str,
        request: GrantRequest,
        now: OffsetDateTime,
    ) -> Result<Grant, GrantReply> {
        let bad = |message: String| GrantReply::error(400, "M_INVALID_PARAM", message);
        let citizen = UserId::parse(request.citizen.as_str())
            .map_err(|error| bad(format!("citizen {:?}: {error}", request.citizen)))?;
        if set.class_of(&citizen) != Some(ServerClass::Citizen) {
            return Err(bad(format!(
                "{citizen} is not a citizen of this network (its server is not listed with class citizen)"
            )));
        }
        let service_request = request.service_request.trim();
        if service_request.is_empty()
            || service_request.len() > 200
            || service_request.chars().any(char::is_control)
        {
            return Err(bad(
                "serviceRequest must be 1 to 200 printable characters".to_owned()
            ));
        }
        let not_before = request.not_before.map_or(now, |t| t.0);
        let not_after = match (request.not_after, request.valid_for) {
            (Some(_), Some(_)) => {
                return Err(bad("give notAfter or validFor, not both".to_owned()));
            }
            (Some(t), None) => t.0,
            (None, Some(d)) => not_before + d.duration(),
            (None, None) => not_before + DEFAULT_VALIDITY,
        };
        if not_after <= not_before {
            return Err(bad("notAfter must be after notBefore".to_owned()));
        }
        let max = time::Duration::days(i64::from(self.config.max_grant_days));
        if not_after - now > max {
            return Err(bad(format!(
                "a grant may last at most {} days from now",
                self.config.max_grant_days
            )));
        }
        let id = request
            .id
            .unwrap_or_else(|| format!("{agency}:{service_request}:{citizen}"));
        if id.is_empty() || id.len() > 300 || id.chars().any(char::is_control) {
            return Err(bad("id must be 1 to 300 printable characters".to_owned()));
        }
        Ok(Grant {
            id,
            agency: agency.to_owned(),
            citizen: UserIdSpec(citizen),
            service_request: service_request.to_owned(),
            not_before: Timestamp(not_before),
            not_after: Timestamp(not_after),
        })
    }

    /// Applies `change` to the grants (expired ones dropped), writes the file and swaps it in.
    fn update_grants(
        &self,
        path: &std::path::Path,
        now: OffsetDateTime,
        change: impl FnOnce(&mut Vec<Grant>) -> bool,
    ) -> Result<(), GrantReply> {
        let mut guard = write_lock(&self.grants);
        let mut grants: Vec<Grant> = guard
            .grants
            .iter()
            .filter(|grant| grant.not_after.0 > now)
            .cloned()
            .collect();
        change(&mut grants);
        let mut text = serde_json::to_vec_pretty(&GrantsFile { grants })
            .map_err(|error| GrantReply::error(500, "M_UNKNOWN", error.to_string()))?;
        text.push(b'\n');
        write_atomic(path, &text).map_err(|_| {
            GrantReply::error(500, "M_UNKNOWN", "the grants file could not be written")
        })?;
        let grants =
            parse_grants_file(&text).map_err(|error| GrantReply::error(500, "M_UNKNOWN", error))?;
        use sha2::Digest as _;
        *guard = Arc::new(RuntimeGrants {
            grants,
            fingerprint: Some(sha2::Sha256::digest(&text).into()),
        });
        Ok(())
    }
}
