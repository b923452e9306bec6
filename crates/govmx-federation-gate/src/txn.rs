//! Filtering of federation transactions (`PUT /_matrix/federation/v1/send/{txnId}`).
//!
//! A listed peer may relay events authored on servers that are not on the list (it shares a
//! room with them). [`filter_transaction`] removes every PDU whose authoring server (the server
//! part of `sender`) is not allowed, and every EDU that names a user on such a server; what it
//! removed is merged into Synapse's answer by [`merge_response`].
//!
//! **Reporting removed PDUs.** The `pdus` map of the answer is keyed by event id. PDUs of room
//! versions 1 and 2 carry their `event_id` and are reported under it. For later room versions the
//! event id is a hash over the redacted event, which depends on the room version (not part of
//! the PDU), so the gate does not compute it: such PDUs are reported under the key
//! `govmx:removed:<index>` (the PDU's position in the transaction's `pdus` array). Senders ignore
//! keys they do not know; the audit log carries the sender and room.
//!
//! EDUs handled: `m.typing`, `m.device_list_update`, `m.signing_key_update` (`user_id`),
//! `m.direct_to_device` (`sender`), `m.presence` (each `push[].user_id`, the EDU is dropped when
//! none are left) and `m.receipt` (each user of each room, dropped when empty). Other EDU types
//! pass unchanged.

use serde_json::{Map, Value};

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
    fn user_server_part() {
        assert_eq!(server_of_user("@a:b.example:8448"), Some("b.example:8448"));
        assert_eq!(server_of_user("@a:[::1]:8448"), Some("[::1]:8448"));
        assert_eq!(server_of_user("a:b"), None);
        assert_eq!(server_of_user("@a"), None);
        assert_eq!(server_of_user("@a:"), None);
    }
}
