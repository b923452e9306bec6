//! A change report between two versions of a document, written for a security reviewer:
//! `+` added, `-` removed, `~` changed.

use std::collections::BTreeMap;
use std::fmt::Display;

use crate::document::Document;
use crate::model::{Agencies, ContactRules, FederationList, Grant, MediaRules, TrustAnchors};

/// Why two documents cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compare a {old} document with a {new} document")]
pub struct KindMismatch {
    /// Kind of the old document.
    pub old: crate::Kind,
    /// Kind of the new document.
    pub new: crate::Kind,
}

/// The change lines from `old` to `new`; empty when they are equal.
pub fn diff(old: &Document, new: &Document) -> Result<Vec<String>, KindMismatch> {
    let mut out = Report::default();
    match (old, new) {
        (Document::FederationList(old), Document::FederationList(new)) => {
            federation(&mut out, old, new)
        }
        (Document::ContactRules(old), Document::ContactRules(new)) => contact(&mut out, old, new),
        (Document::MediaRules(old), Document::MediaRules(new)) => media(&mut out, old, new),
        (Document::Agencies(old), Document::Agencies(new)) => agencies(&mut out, old, new),
        (Document::TrustAnchors(old), Document::TrustAnchors(new)) => trust(&mut out, old, new),
        _ => {
            return Err(KindMismatch {
                old: old.kind(),
                new: new.kind(),
            });
        }
    }
    if out.lines.is_empty() && old != new {
        out.lines
            .push("~ formatting or ordering changed".to_owned());
    }
    Ok(out.lines)
}

#[derive(Default)]
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    fn field<T: PartialEq + Display>(&mut self, what: &str, old: T, new: T) {
        if old != new {
            // "~ maxAge: 30d → 400d", but "~ server x: class citizen → agency".
            let separator = if what.contains(": ") { " " } else { ": " };
            self.push(format!("~ {what}{separator}{old} → {new}"));
        }
    }

    fn header(&mut self, title: &str, old_version: u64, new_version: u64) {
        if old_version != new_version {
            self.push(format!("{title} version {old_version} → {new_version}"));
        }
    }

    /// Compares two lists by key; `describe` renders an entry, `changed` reports changes.
    fn keyed<T>(
        &mut self,
        what: &str,
        old: &[T],
        new: &[T],
        key: impl Fn(&T) -> String,
        describe: impl Fn(&T) -> String,
        mut changed: impl FnMut(&mut Report, &str, &T, &T),
    ) {
        let old_map: BTreeMap<String, &T> = old.iter().map(|item| (key(item), item)).collect();
        let new_map: BTreeMap<String, &T> = new.iter().map(|item| (key(item), item)).collect();
        for (name, item) in &new_map {
            if !old_map.contains_key(name) {
                self.push(format!("+ {what} {name} ({}) added", describe(item)));
            }
        }
        for (name, item) in &old_map {
            match new_map.get(name) {
                None => self.push(format!("- {what} {name} ({}) removed", describe(item))),
                Some(new_item) => changed(self, name, item, new_item),
            }
        }
    }

    fn set_change<T: Display + PartialEq>(&mut self, what: &str, old: &[T], new: &[T]) {
        let removed: Vec<String> = old
            .iter()
            .filter(|item| !new.contains(item))
            .map(|item| format!("{item} removed"))
            .collect();
        let added: Vec<String> = new
            .iter()
            .filter(|item| !old.contains(item))
            .map(|item| format!("{item} added"))
            .collect();
        if !removed.is_empty() || !added.is_empty() {
            self.push(format!(
                "~ {what}: {}",
                removed
                    .into_iter()
                    .chain(added)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}

fn federation(out: &mut Report, old: &FederationList, new: &FederationList) {
    out.header(
        "Federation list",
        old.metadata.version,
        new.metadata.version,
    );
    out.field("name", &old.metadata.name, &new.metadata.name);
    out.field("issued", old.metadata.issued, new.metadata.issued);
    out.field("maxAge", &old.metadata.max_age, &new.metadata.max_age);
    out.keyed(
        "server",
        &old.servers,
        &new.servers,
        |server| server.server_name.to_string(),
        |server| format!("{}, {}", server.organisation.display_name, server.class),
        |out, name, old, new| {
            out.field(&format!("server {name}: class"), old.class, new.class);
            out.field(
                &format!("server {name}: organisation"),
                &old.organisation.display_name,
                &new.organisation.display_name,
            );
            out.field(
                &format!("server {name}: organisation id"),
                &old.organisation.id,
                &new.organisation.id,
            );
            let mut keys = Vec::new();
            for (id, key) in &old.signing_keys {
                match new.signing_keys.get(id) {
                    None => keys.push(format!("{id} removed")),
                    Some(new_key) if new_key != key => keys.push(format!("{id} changed")),
                    Some(_) => {}
                }
            }
            keys.extend(
                new.signing_keys
                    .keys()
                    .filter(|id| !old.signing_keys.contains_key(*id))
                    .map(|id| format!("{id} added")),
            );
            if !keys.is_empty() {
                out.push(format!("~ signing keys of {name}: {}", keys.join(", ")));
            }
            out.set_change(
                &format!("delegated hosts of {name}"),
                &old.delegated_hosts,
                &new.delegated_hosts,
            );
        },
    );
}

fn grant_summary(grant: &Grant) -> String {
    format!(
        "{} → agency {}, service request {}, {} to {}",
        grant.citizen, grant.agency, grant.service_request, grant.not_before, grant.not_after
    )
}

fn contact(out: &mut Report, old: &ContactRules, new: &ContactRules) {
    out.header("Contact rules", old.metadata.version, new.metadata.version);
    out.field(
        "default",
        format!("{:?}", old.default).to_lowercase(),
        format!("{:?}", new.default).to_lowercase(),
    );
    out.keyed(
        "contact rule",
        &old.rules,
        &new.rules,
        |rule| rule.id.clone(),
        |rule| format!("{} → {}: {}", rule.from, rule.to, rule.action),
        |out, id, old, new| {
            out.field(&format!("contact rule {id}: from"), old.from, new.from);
            out.field(&format!("contact rule {id}: to"), old.to, new.to);
            out.field(
                &format!("contact rule {id}: action"),
                old.action,
                new.action,
            );
            out.field(
                &format!("contact rule {id}: reason"),
                old.reason.as_deref().unwrap_or("-"),
                new.reason.as_deref().unwrap_or("-"),
            );
        },
    );
    let old_order: Vec<&str> = old
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| new.rules.iter().any(|r| r.id == *id))
        .collect();
    let new_order: Vec<&str> = new
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| old.rules.iter().any(|r| r.id == *id))
        .collect();
    if old_order != new_order {
        out.push(format!(
            "~ contact rule order (first match wins): {} → {}",
            old_order.join(", "),
            new_order.join(", ")
        ));
    }
    out.field(
        "roomCreation.maxCitizenInvitees",
        old.room_creation.max_citizen_invitees,
        new.room_creation.max_citizen_invitees,
    );
    out.keyed(
        "grant",
        &old.grants,
        &new.grants,
        |grant| grant.id.clone(),
        grant_summary,
        |out, id, old, new| {
            out.field(
                &format!("grant {id}"),
                grant_summary(old),
                grant_summary(new),
            );
        },
    );
}

fn media(out: &mut Report, old: &MediaRules, new: &MediaRules) {
    out.header("Media rules", old.metadata.version, new.metadata.version);
    out.field("maxUploadSize", &old.max_upload_size, &new.max_upload_size);
    out.set_change("allowed MIME types", &old.mime.allow, &new.mime.allow);
    out.set_change("blocked MIME types", &old.mime.block, &new.mime.block);
    out.field(
        "scannerUnavailable",
        format!("{:?}", old.scanner_unavailable).to_lowercase(),
        format!("{:?}", new.scanner_unavailable).to_lowercase(),
    );
    out.field(
        "remoteMedia.scan",
        old.remote_media.scan,
        new.remote_media.scan,
    );
}

fn agencies(out: &mut Report, old: &Agencies, new: &Agencies) {
    out.header("Agencies", old.metadata.version, new.metadata.version);
    out.keyed(
        "agency",
        &old.agencies,
        &new.agencies,
        |agency| agency.id.clone(),
        |agency| agency.name.clone(),
        |out, id, old, new| {
            out.field(&format!("agency {id}: name"), &old.name, &new.name);
            out.set_change(
                &format!("server names of agency {id}"),
                &old.server_names,
                &new.server_names,
            );
            out.set_change(
                &format!("official accounts of agency {id}"),
                &old.official_accounts,
                &new.official_accounts,
            );
        },
    );
}

fn trust(out: &mut Report, old: &TrustAnchors, new: &TrustAnchors) {
    out.header("Trust anchors", old.metadata.version, new.metadata.version);
    out.field("threshold", old.threshold, new.threshold);
    out.keyed(
        "trust key",
        &old.keys,
        &new.keys,
        |key| key.id.clone(),
        |key| key.owner.clone(),
        |out, id, old, new| {
            out.field(
                &format!("trust key {id}: public key"),
                &old.public_key,
                &new.public_key,
            );
            out.field(&format!("trust key {id}: owner"), &old.owner, &new.owner);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_document;

    const FEDERATION: &str = include_str!("../../../policies/federation.yaml");
    const CONTACT: &str = include_str!("../../../policies/contact-rules.yaml");
    const MEDIA: &str = include_str!("../../../policies/media-rules.yaml");
    const AGENCIES: &str = include_str!("../../../policies/agencies.yaml");

    #[track_caller]
    fn check(old: &str, edit: impl Fn(&str) -> String, expect: expect_test::Expect) {
        let parse = |text: &str| {
            parse_document("x.yaml", text.as_bytes(), None)
                .unwrap()
                .document
        };
        let lines = diff(&parse(old), &parse(&edit(old))).unwrap();
        expect.assert_eq(&lines.join("\n"));
    }

    #[test]
    fn federation_changes() {
        check(FEDERATION, |t| t.to_owned(), expect_test::expect![""]);
        check(
            FEDERATION,
            |t| {
                t.replace("version: 7 ", "version: 8 ")
                    .replace("class: citizen ", "class: agency ")
                    .replace("\"ed25519:a_buergeramt\"", "\"ed25519:b_buergeramt\"")
                    .replace(
                        "delegatedHosts: [\"127.0.0.4:8448\"]",
                        "delegatedHosts: [\"10.0.0.4:8448\"]",
                    )
                    .replace("maxAge: 400d", "maxAge: 30d")
                    + "  - serverName: \"127.0.0.5:8448\"\n    organisation: {id: lra, displayName: Landratsamt X}\n    class: agency\n"
            },
            expect_test::expect![[r#"
                Federation list version 7 → 8
                ~ maxAge: 400d → 30d
                + server 127.0.0.5:8448 (Landratsamt X, agency) added
                ~ signing keys of 127.0.0.2:8448: ed25519:a_buergeramt removed, ed25519:b_buergeramt added
                ~ server 127.0.0.3:8448: class citizen → agency
                ~ delegated hosts of 127.0.0.4:8448: 127.0.0.4:8448 removed, 10.0.0.4:8448 added"#]],
        );
        let without_portal = |t: &str| {
            let start = t.find("  - serverName: \"127.0.0.3:8448\"").unwrap();
            t[..start].to_owned()
        };
        check(
            FEDERATION,
            without_portal,
            expect_test::expect!["- server 127.0.0.3:8448 (Bürgerportal Hessen, citizen) removed"],
        );
    }

    #[test]
    fn contact_media_agency_changes() {
        check(
            CONTACT,
            |t| {
                t.replace("action: deny", "action: allow")
                    .replace("maxCitizenInvitees: 1", "maxCitizenInvitees: 5")
                    .replace("id: grant-2026-0001", "id: grant-2026-0002")
            },
            expect_test::expect![[r#"
                ~ contact rule citizen-to-citizen: action deny → allow
                ~ roomCreation.maxCitizenInvitees: 1 → 5
                + grant grant-2026-0002 (@erika.mustermann:127.0.0.3:8448 → agency buergeramt-musterstadt, service request MELD-2026-004711, 2026-11-20T00:00:00Z to 2027-02-20T00:00:00Z) added
                - grant grant-2026-0001 (@erika.mustermann:127.0.0.3:8448 → agency buergeramt-musterstadt, service request MELD-2026-004711, 2026-11-20T00:00:00Z to 2027-02-20T00:00:00Z) removed"#]],
        );
        check(
            MEDIA,
            |t| {
                t.replace("50MiB", "100MiB")
                    .replace("    - text/plain\n", "")
                    .replace("scannerUnavailable: reject", "scannerUnavailable: allow")
            },
            expect_test::expect![[r#"
                ~ maxUploadSize: 50MiB → 100MiB
                ~ allowed MIME types: text/plain removed
                ~ scannerUnavailable: reject → allow"#]],
        );
        check(
            AGENCIES,
            |t| {
                t.replace("name: Wasserbehörde", "name: Obere Wasserbehörde")
                    .replace("\"@poststelle:127.0.0.2:8448\"", "\"@info:127.0.0.2:8448\"")
            },
            expect_test::expect![[r#"
                ~ official accounts of agency buergeramt-musterstadt: @poststelle:127.0.0.2:8448 removed, @info:127.0.0.2:8448 added
                ~ agency wasserbehoerde: name Wasserbehörde → Obere Wasserbehörde"#]],
        );
    }

    #[test]
    fn kinds_must_match() {
        let parse = |text: &str| {
            parse_document("x.yaml", text.as_bytes(), None)
                .unwrap()
                .document
        };
        assert!(diff(&parse(MEDIA), &parse(AGENCIES)).is_err());
    }
}
