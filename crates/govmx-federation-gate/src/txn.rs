//! Filtering of federation transactions (`PUT /_matrix/federation/v1/send/{txnId}`).
//!
//! A listed peer may relay events authored on servers that are not on the list (it shares a
//! room with them). [`filter_transaction`] removes every PDU whose authoring server (the server
//! part of `sender`) is not allowed, and every EDU that names a user on such a server; what it
//! removed is merged into Synapse's answer by [`merge_response`].
//!
//! **Reporting removed PDUs** (`relayed_events: remove`). The `pdus` map of the answer is keyed
//! by event id. PDUs of room versions 1 and 2 carry their `event_id` and are reported under it.
//! For later room versions the event id is a hash over the redacted event, which depends on the
//! room version (not part of the PDU), so such PDUs are reported under the key
//! `govmx:removed:<index>` (the PDU's position in the transaction's `pdus` array). Senders
//! ignore keys they do not know; the audit log carries the sender and room.
//!
//! **Reporting forwarded PDUs** (`relayed_events: report`, the default). Synapse gets the whole
//! transaction (the govmx Synapse module drops the PDU before it is stored) and answers with
//! the event id *it* computed for every PDU of a room it knows. [`event_id_candidates`] computes
//! the ids a flagged PDU has under every room version's rules (its `event_id` field, and the
//! reference hash under each set of redaction rules, in both base64 alphabets), and
//! [`report_in_response`] replaces Synapse's entry for the one that matches with the gate's
//! `{"error": …}`, so the sending server learns why. Nothing is guessed: an id Synapse did not
//! return is never added.
//!
//! EDUs handled: `m.typing`, `m.device_list_update`, `m.signing_key_update` (`user_id`),
//! `m.direct_to_device` (`sender`), `m.presence` (each `push[].user_id`, the EDU is dropped when
//! none are left) and `m.receipt` (each user of each room, dropped when empty). Other EDU types
//! pass unchanged.

use base64::Engine as _;
use ruma_common::canonical_json::{self, CanonicalJsonValue};
use ruma_common::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// A PDU the filter removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedPdu {
    /// The key it is reported under in the `pdus` answer (see the module docs).
    pub key: String,
    /// The `sender` of the PDU, when it had a string one.
    pub sender: Option<String>,
    /// The `room_id`, when present.
    pub room_id: Option<String>,
    /// Why it was removed.
    pub reason: String,
    /// The ids the PDU has under the room versions the gate knows ([`event_id_candidates`]).
    pub event_ids: Vec<String>,
}

/// What [`filter_transaction`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterOutcome {
    /// The body to forward: the original bytes when nothing was removed.
    pub body: Vec<u8>,
    /// PDUs that were removed.
    pub removed_pdus: Vec<RemovedPdu>,
    /// EDUs removed entirely or in part, as `(edu_type, reason)`.
    pub removed_edus: Vec<(String, String)>,
}

impl FilterOutcome {
    /// Whether the forwarded body differs from the received one.
    pub fn changed(&self) -> bool {
        !self.removed_pdus.is_empty() || !self.removed_edus.is_empty()
    }
}

/// PDUs of a transaction the gate flagged, and what became of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flagged {
    /// Removed before Synapse saw them ([`merge_response`]).
    Removed(Vec<RemovedPdu>),
    /// Forwarded to Synapse, to be reported in its answer ([`report_in_response`]).
    Reported(Vec<RemovedPdu>),
}

impl Default for Flagged {
    fn default() -> Self {
        Self::Removed(Vec::new())
    }
}

impl Flagged {
    /// Whether no PDU was flagged.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Removed(pdus) | Self::Reported(pdus) => pdus.is_empty(),
        }
    }
}

/// Why a transaction body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The body is not JSON.
    #[error("transaction body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not a transaction object.
    #[error("transaction body is not a JSON object with a `pdus` array")]
    NotTransaction,
}

/// Removes the PDUs and EDUs that `allowed` refuses.
///
/// `allowed(server_name)` returns `Err(reason)` for servers that may not author events here.
pub fn filter_transaction(
    body: &[u8],
    allowed: &dyn Fn(&str) -> Result<(), String>,
) -> Result<FilterOutcome, TxnError> {
    let mut txn: Value =
        serde_json::from_slice(body).map_err(|e| TxnError::NotJson(e.to_string()))?;
    let object = txn.as_object_mut().ok_or(TxnError::NotTransaction)?;
    let mut removed_pdus = Vec::new();
    let mut removed_edus = Vec::new();

    match object.get_mut("pdus") {
        Some(Value::Array(pdus)) => {
            let mut index = 0usize;
            pdus.retain(|pdu| {
                let this = index;
                index += 1;
                match pdu_verdict(pdu, allowed) {
                    Ok(()) => true,
                    Err(reason) => {
                        removed_pdus.push(RemovedPdu {
                            key: pdu
                                .get("event_id")
                                .and_then(Value::as_str)
                                .map_or_else(|| format!("govmx:removed:{this}"), str::to_owned),
                            sender: pdu.get("sender").and_then(Value::as_str).map(str::to_owned),
                            room_id: pdu
                                .get("room_id")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            reason,
                            event_ids: event_id_candidates(pdu),
                        });
                        false
                    }
                }
            });
        }
        _ => return Err(TxnError::NotTransaction),
    }

    if let Some(Value::Array(edus)) = object.get_mut("edus") {
        edus.retain_mut(|edu| match filter_edu(edu, allowed) {
            EduVerdict::Keep => true,
            EduVerdict::Trimmed(kind, reason) => {
                removed_edus.push((kind, reason));
                true
            }
            EduVerdict::Drop(kind, reason) => {
                removed_edus.push((kind, reason));
                false
            }
        });
    }

    let body = if removed_pdus.is_empty() && removed_edus.is_empty() {
        body.to_vec()
    } else {
        serde_json::to_vec(&txn).map_err(|e| TxnError::NotJson(e.to_string()))?
    };
    Ok(FilterOutcome {
        body,
        removed_pdus,
        removed_edus,
    })
}

/// Adds `{"error": reason}` entries for removed PDUs to Synapse's `{"pdus": {…}}` answer.
///
/// Returns `None` when the upstream answer is not a JSON object (it is then passed on as is).
pub fn merge_response(upstream: &[u8], removed: &[RemovedPdu]) -> Option<Vec<u8>> {
    let mut answer: Value = serde_json::from_slice(upstream).ok()?;
    let object = answer.as_object_mut()?;
    let pdus = object
        .entry("pdus")
        .or_insert_with(|| Value::Object(Map::new()));
    if !pdus.is_object() {
        *pdus = Value::Object(Map::new());
    }
    let pdus = pdus.as_object_mut()?;
    for pdu in removed {
        let mut entry = Map::new();
        entry.insert("error".into(), Value::from(pdu.reason.clone()));
        pdus.insert(pdu.key.clone(), Value::Object(entry));
    }
    serde_json::to_vec(&answer).ok()
}

/// Replaces Synapse's `pdus` entries for flagged PDUs (forwarded in `report` mode) with
/// `{"error": reason}`; an entry is matched by one of the PDU's [`RemovedPdu::event_ids`].
///
/// Returns the new answer and the event ids that were annotated, or `None` when the answer is
/// not a JSON object with a `pdus` object or names none of the flagged PDUs (it is then passed
/// on as is).
pub fn report_in_response(
    upstream: &[u8],
    flagged: &[RemovedPdu],
) -> Option<(Vec<u8>, Vec<String>)> {
    let mut answer: Value = serde_json::from_slice(upstream).ok()?;
    let pdus = answer.get_mut("pdus")?.as_object_mut()?;
    let mut annotated = Vec::new();
    for pdu in flagged {
        let Some(id) = pdu
            .event_ids
            .iter()
            .find(|id| pdus.contains_key(id.as_str()))
        else {
            continue;
        };
        let mut entry = Map::new();
        entry.insert("error".into(), Value::from(pdu.reason.clone()));
        pdus.insert(id.clone(), Value::Object(entry));
        annotated.push(id.clone());
    }
    if annotated.is_empty() {
        return None;
    }
    Some((serde_json::to_vec(&answer).ok()?, annotated))
}

/// The ids `pdu` has in the room versions this build knows (1–12): its `event_id` field (room
/// versions 1 and 2), and for later versions `$` + the reference hash (SHA-256 of the canonical
/// JSON of the event redacted under that version's rules, without `signatures` and `unsigned`)
/// in standard (version 3) or URL-safe (4 and later) unpadded base64. Duplicates are removed.
/// Empty for a PDU that is not canonical JSON (Synapse refuses those anyway).
pub fn event_id_candidates(pdu: &Value) -> Vec<String> {
    const VERSIONS: [RoomVersionRules; 10] = [
        RoomVersionRules::V3,
        RoomVersionRules::V4,
        RoomVersionRules::V6,
        RoomVersionRules::V7,
        RoomVersionRules::V8,
        RoomVersionRules::V9,
        RoomVersionRules::V10,
        RoomVersionRules::V11,
        RoomVersionRules::V12,
        RoomVersionRules::V5,
    ];
    let mut ids: Vec<String> = pdu
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    let Some(object) = pdu.as_object() else {
        return ids;
    };
    let Ok(object) = canonical_json::try_from_json_map(object.clone()) else {
        return ids;
    };
    for rules in VERSIONS {
        let engine = match rules.event_id_format {
            EventIdFormatVersion::V2 => &base64::engine::general_purpose::STANDARD_NO_PAD,
            EventIdFormatVersion::V3 => &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            _ => continue,
        };
        let Ok(mut redacted) = canonical_json::redact(object.clone(), &rules.redaction, None)
        else {
            continue;
        };
        redacted.remove("signatures");
        redacted.remove("unsigned");
        let hash = Sha256::digest(CanonicalJsonValue::Object(redacted).to_string());
        let id = format!("${}", engine.encode(hash));
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The server part of a user id (`@local:server`), if it has one.
pub fn server_of_user(user_id: &str) -> Option<&str> {
    let rest = user_id.strip_prefix('@')?;
    let (_, server) = rest.split_once(':')?;
    (!server.is_empty()).then_some(server)
}

fn pdu_verdict(pdu: &Value, allowed: &dyn Fn(&str) -> Result<(), String>) -> Result<(), String> {
    let Some(sender) = pdu.get("sender").and_then(Value::as_str) else {
        return Err("PDU has no sender".to_owned());
    };
    let Some(server) = server_of_user(sender) else {
        return Err(format!("PDU sender {sender:?} is not a user id"));
    };
    allowed(server).map_err(|reason| format!("PDU authored by {server}: {reason}"))
}

enum EduVerdict {
    Keep,
    Trimmed(String, String),
    Drop(String, String),
}

fn check_user(
    user: Option<&Value>,
    allowed: &dyn Fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    let Some(user) = user.and_then(Value::as_str) else {
        return Ok(());
    };
    match server_of_user(user) {
        Some(server) => {
            allowed(server).map_err(|reason| format!("user {user} on {server}: {reason}"))
        }
        None => Err(format!("{user:?} is not a user id")),
    }
}

fn filter_edu(edu: &mut Value, allowed: &dyn Fn(&str) -> Result<(), String>) -> EduVerdict {
    let kind = edu
        .get("edu_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(content) = edu.get_mut("content") else {
        return EduVerdict::Keep;
    };
    match kind.as_str() {
        "m.typing" | "m.device_list_update" | "m.signing_key_update" => {
            match check_user(content.get("user_id"), allowed) {
                Ok(()) => EduVerdict::Keep,
                Err(reason) => EduVerdict::Drop(kind, reason),
            }
        }
        "m.direct_to_device" => match check_user(content.get("sender"), allowed) {
            Ok(()) => EduVerdict::Keep,
            Err(reason) => EduVerdict::Drop(kind, reason),
        },
        "m.presence" => {
            let Some(Value::Array(push)) = content.get_mut("push") else {
                return EduVerdict::Keep;
            };
            let mut first_reason = None;
            push.retain(|entry| match check_user(entry.get("user_id"), allowed) {
                Ok(()) => true,
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                    false
                }
            });
            match first_reason {
                None => EduVerdict::Keep,
                Some(reason) if push.is_empty() => EduVerdict::Drop(kind, reason),
                Some(reason) => EduVerdict::Trimmed(kind, reason),
            }
        }
        "m.receipt" => {
            let Some(rooms) = content.as_object_mut() else {
                return EduVerdict::Keep;
            };
            let mut first_reason = None;
            for receipts in rooms.values_mut() {
                let Some(receipts) = receipts.as_object_mut() else {
                    continue;
                };
                for users in receipts.values_mut() {
                    let Some(users) = users.as_object_mut() else {
                        continue;
                    };
                    users.retain(|user, _| {
                        match check_user(Some(&Value::from(user.as_str())), allowed) {
                            Ok(()) => true,
                            Err(reason) => {
                                first_reason.get_or_insert(reason);
                                false
                            }
                        }
                    });
                }
                receipts.retain(|_, users| users.as_object().is_none_or(|u| !u.is_empty()));
            }
            rooms.retain(|_, receipts| receipts.as_object().is_none_or(|r| !r.is_empty()));
            match first_reason {
                None => EduVerdict::Keep,
                Some(reason) if rooms.is_empty() => EduVerdict::Drop(kind, reason),
                Some(reason) => EduVerdict::Trimmed(kind, reason),
            }
        }
        _ => EduVerdict::Keep,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn listed(server: &str) -> Result<(), String> {
        if server == "good.example" || server == "127.0.0.2:8448" {
            Ok(())
        } else {
            Err("not on the federation list".into())
        }
    }

    #[test]
    fn untouched_transaction_keeps_its_bytes() {
        let body =
            br#"{ "origin": "good.example", "pdus": [{"sender": "@a:good.example"}], "edus": [] }"#;
        let out = filter_transaction(body, &listed).unwrap();
        assert!(!out.changed());
        assert_eq!(out.body, body.to_vec());
    }

    #[test]
    fn removes_unlisted_pdus_and_edus() {
        let body = json!({
            "origin": "good.example",
            "pdus": [
                {"sender": "@a:good.example", "room_id": "!r"},
                {"sender": "@m:evil.example", "room_id": "!r", "event_id": "$v1id:evil.example"},
                {"sender": "@m:evil.example", "room_id": "!r"},
                {"room_id": "!r"},
                {"sender": "@a:127.0.0.2:8448"},
            ],
            "edus": [
                {"edu_type": "m.typing", "content": {"room_id": "!r", "user_id": "@m:evil.example", "typing": true}},
                {"edu_type": "m.typing", "content": {"room_id": "!r", "user_id": "@a:good.example", "typing": true}},
                {"edu_type": "m.presence", "content": {"push": [{"user_id": "@m:evil.example"}, {"user_id": "@a:good.example"}]}},
                {"edu_type": "m.receipt", "content": {"!r": {"m.read": {"@m:evil.example": {}}}}},
                {"edu_type": "m.direct_to_device", "content": {"sender": "@m:evil.example"}},
                {"edu_type": "m.something", "content": {"user_id": "@m:evil.example"}},
            ]
        });
        let out = filter_transaction(&serde_json::to_vec(&body).unwrap(), &listed).unwrap();
        let forwarded: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            forwarded["pdus"],
            json!([{"sender": "@a:good.example", "room_id": "!r"}, {"sender": "@a:127.0.0.2:8448"}])
        );
        assert_eq!(
            forwarded["edus"],
            json!([
                {"edu_type": "m.typing", "content": {"room_id": "!r", "user_id": "@a:good.example", "typing": true}},
                {"edu_type": "m.presence", "content": {"push": [{"user_id": "@a:good.example"}]}},
                {"edu_type": "m.something", "content": {"user_id": "@m:evil.example"}},
            ])
        );
        let keys: Vec<_> = out.removed_pdus.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["$v1id:evil.example", "govmx:removed:2", "govmx:removed:3"]
        );
        assert_eq!(
            out.removed_pdus[0].reason,
            "PDU authored by evil.example: not on the federation list"
        );
        assert_eq!(out.removed_pdus[2].reason, "PDU has no sender");
        let kinds: Vec<_> = out.removed_edus.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["m.typing", "m.presence", "m.receipt", "m.direct_to_device"]
        );
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(
            filter_transaction(b"{", &listed),
            Err(TxnError::NotJson(_))
        ));
        assert_eq!(
            filter_transaction(b"[]", &listed),
            Err(TxnError::NotTransaction)
        );
        assert_eq!(
            filter_transaction(br#"{"pdus": 1}"#, &listed),
            Err(TxnError::NotTransaction)
        );
    }

    #[test]
    fn merges_answer() {
        let removed = vec![RemovedPdu {
            key: "govmx:removed:1".into(),
            sender: None,
            room_id: None,
            reason: "no".into(),
            event_ids: vec![],
        }];
        let merged = merge_response(br#"{"pdus": {"$a": {}}}"#, &removed).unwrap();
        let merged: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(
            merged,
            json!({"pdus": {"$a": {}, "govmx:removed:1": {"error": "no"}}})
        );
        let merged: Value =
            serde_json::from_slice(&merge_response(b"{}", &removed).unwrap()).unwrap();
        assert_eq!(
            merged,
            json!({"pdus": {"govmx:removed:1": {"error": "no"}}})
        );
        assert_eq!(merge_response(b"oops", &removed), None);
    }

    #[test]
    fn event_id_candidates_cover_both_alphabets_and_the_v1_field() {
        let pdu = json!({
            "event_id": "$old:evil.example",
            "room_id": "!r:good.example",
            "sender": "@m:evil.example",
            "type": "m.room.message",
            "content": {"body": "hi"},
            "hashes": {"sha256": "x"},
            "depth": 3,
            "origin": "evil.example",
            "prev_events": [],
            "auth_events": [],
            "origin_server_ts": 1,
            "signatures": {"evil.example": {"ed25519:a": "sig"}},
            "unsigned": {"age": 5},
        });
        let ids = event_id_candidates(&pdu);
        assert_eq!(ids[0], "$old:evil.example");
        // Room version 3 (standard base64) and 4+ (URL-safe) differ; v11 drops `origin`, so
        // its hash differs from v4–v10's. Every id is `$` + 43 characters of a SHA-256.
        assert!(
            ids[1..]
                .iter()
                .all(|id| id.len() == 44 && id.starts_with('$')),
            "{ids:?}"
        );
        assert!(ids.len() >= 4, "{ids:?}");
        // Signatures and unsigned data are not part of the id.
        let mut resigned = pdu.clone();
        resigned["signatures"] = json!({"other.example": {"ed25519:b": "sig2"}});
        resigned["unsigned"] = json!({});
        assert_eq!(event_id_candidates(&resigned), ids);
        // Redacted content is not part of it either, kept fields are.
        let mut edited = pdu.clone();
        edited["content"]["body"] = json!("changed");
        assert_eq!(event_id_candidates(&edited), ids);
        edited["depth"] = json!(4);
        assert!(
            event_id_candidates(&edited)[1..]
                .iter()
                .all(|id| !ids.contains(id))
        );
        // Not canonical JSON (a float): only the field.
        let mut float = pdu;
        float["depth"] = json!(1.5);
        assert_eq!(event_id_candidates(&float), ["$old:evil.example"]);
    }

    #[test]
    fn reports_in_synapse_answer_only_under_ids_it_returned() {
        let flagged = vec![RemovedPdu {
            key: "govmx:removed:0".into(),
            sender: Some("@m:evil.example".into()),
            room_id: Some("!r".into()),
            reason: "PDU authored by evil.example: not listed".into(),
            event_ids: vec!["$v1:evil.example".into(), "$hashB".into(), "$hashC".into()],
        }];
        let answer = br#"{"pdus": {"$other": {}, "$hashC": {"error": "403: bad signature"}}}"#;
        let (merged, annotated) = report_in_response(answer, &flagged).unwrap();
        assert_eq!(annotated, ["$hashC"]);
        assert_eq!(
            serde_json::from_slice::<Value>(&merged).unwrap(),
            json!({"pdus": {"$other": {}, "$hashC": {"error": "PDU authored by evil.example: not listed"}}})
        );
        assert_eq!(
            report_in_response(br#"{"pdus": {"$other": {}}}"#, &flagged),
            None
        );
        assert_eq!(report_in_response(b"{}", &flagged), None);
        assert_eq!(report_in_response(b"oops", &flagged), None);
    }

    #[test]
    fn user_server_part() {
        assert_eq!(server_of_user("@a:b.example:8448"), Some("b.example:8448"));
        assert_eq!(server_of_user("@a:[::1]:8448"), Some("[::1]:8448"));
        assert_eq!(server_of_user("a:b"), None);
        assert_eq!(server_of_user("@a"), None);
        assert_eq!(server_of_user("@a:"), None);
    }
}
