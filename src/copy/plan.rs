//! The copy plan's own decisions beside the restore planner's, pure: what the source's
//! capture failures mean for a line, which target items `--prune` soft-deletes, whether the
//! target has soft-delete at all, and which target items a copy between a KV mount and a Key
//! Vault may touch ([`Ownership`]).

use serde::Serialize;

use super::source::SourceHead;
use crate::archive::Kind;
use crate::commands::restore_plan::{
    Action, LiveProps, NativeTarget, PlannedItem, Policy, TargetListing, TargetState, decide,
};
use crate::commands::scope::{ItemKind as ScopeKind, Scope};
use crate::engine::item::{ItemData, ItemHead, VersionHead};
use crate::kv::mapping::{MARKER_TAG, Projected, is_owned, metadata_from_tags, tags_from_metadata};
use crate::vault::Tags;

/// Decides one captured source item against where it stands in the target: the restore
/// planner's decision, with the reasons a live source gives (an item that could not be read,
/// a key for a target that refuses native blobs).
pub fn decide_item(
    item: &ItemHead,
    target: TargetState<'_>,
    policy: Policy,
    native: NativeTarget,
) -> PlannedItem {
    let line = |action, reason: String| PlannedItem {
        kind: item.kind,
        name: item.name.clone(),
        action,
        method: None,
        reason: Some(reason),
        versions_present: 0,
        needs_native: false,
        unverified: false,
    };
    if item.blob.is_none() && !item.has_plain_form() {
        if item.kind == Kind::Key && native == NativeTarget::Refuses {
            return line(
                Action::Impossible,
                "Cannot decrypt backup blob: the target is in another subscription or geography, \
                 where Azure restores no key's backup, and a key has no other way out (software \
                 keys are not exportable)"
                    .to_owned(),
            );
        }
        let reason = match &item.skipped {
            Some(reason) => format!("not readable in the source: {reason}"),
            None => item.no_plain_reason(),
        };
        return line(Action::Impossible, reason);
    }
    decide(item, target, policy, native)
}

/// One item `--prune` soft-deletes: live in the target, in the selection, absent from the
/// source. Holds names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneLine {
    /// Its kind.
    pub kind: Kind,
    /// Its name in the target.
    pub name: String,
    /// Always `delete`.
    pub action: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// The target's live items in `scope` that the source does not have, by kind then name.
/// `--name`/`--exclude` narrow it like everything else: nothing outside the selection is
/// ever deleted.
pub fn prune_lines(
    source: &[SourceHead],
    listing: &TargetListing,
    scope: &Scope,
) -> Vec<PruneLine> {
    let have: std::collections::HashSet<(Kind, String)> = source
        .iter()
        .map(|h| (h.kind, h.name.to_ascii_lowercase()))
        .collect();
    let mut lines: Vec<PruneLine> = listing
        .live
        .iter()
        .filter(|((kind, lower), props)| {
            !have.contains(&(*kind, lower.clone())) && scope.includes(ScopeKind::of(*kind), props.name())
        })
        .map(|((kind, _), props)| PruneLine {
            kind: *kind,
            name: props.name().to_owned(),
            action: "delete",
            reason: "not in the source (--prune): soft-deleted, recoverable for the vault's retention",
        })
        .collect();
    lines.sort_by(|a, b| {
        (a.kind, a.name.to_ascii_lowercase()).cmp(&(b.kind, b.name.to_ascii_lowercase()))
    });
    lines
}

/// Whether a recovery level (`recoveryLevel` of an item's attributes) means soft-delete is
/// on: every level but `Purgeable` names `Recoverable`.
pub fn soft_delete_on(recovery_level: Option<&str>) -> Option<bool> {
    recovery_level.map(|level| level.contains("Recoverable"))
}

/// Who owns what in a copy with a KV side: every item the copy writes carries the tag
/// [`MARKER_TAG`] with the source's marker value, and only target items that carry it are
/// ever overwritten or soft-deleted: an item a person made in the target is left as it is,
/// whatever `--on-conflict` says.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// The marker value ([`crate::kv::mapping::marker_value`] of the source).
    pub marker: String,
    /// The source as messages name it.
    pub source: String,
}

impl Ownership {
    /// Whether an item with these tags was written by a copy from this source.
    pub fn owns(&self, tags: &Tags) -> bool {
        is_owned(tags, &self.marker)
    }

    /// Adds the marker to `tags` (what every written item carries).
    pub fn mark(&self, tags: &mut Tags) {
        tags.insert(MARKER_TAG.to_owned(), self.marker.clone());
    }

    /// Marks every version of a captured item (and its blob's metadata, which a certificate
    /// import takes its tags from) as this copy's. Into a Key Vault, Key Vault's tag limit is
    /// kept (the marker first) and the entries left out are named in the answer; into a KV
    /// mount (`kv_target`), `nbf` and `exp` are dropped: KV cannot hold them, and a rerun must
    /// compare equal.
    pub fn mark_item(&self, item: &mut ItemData, kv_target: bool) -> Option<String> {
        let mut dropped: Vec<String> = Vec::new();
        let mut project = |tags: &mut Tags| {
            // What the target can hold, as it will hold it: a rerun compares equal, and what
            // does not fit (into KV: empty values, long names, past 64) is named once.
            let projected = if kv_target {
                self.mark(tags);
                metadata_from_tags(tags, None)
            } else {
                tags_from_metadata(tags, Some(&self.marker))
            };
            for name in projected.dropped {
                if !dropped.contains(&name) {
                    dropped.push(name);
                }
            }
            *tags = projected.kept;
        };
        for record in &mut item.versions {
            project(&mut record.tags);
            if kv_target {
                record.attributes.not_before = None;
                record.attributes.expires = None;
            }
        }
        if let Some(blob) = &mut item.head.blob {
            project(&mut blob.tags);
        }
        item.head.versions = item.versions.iter().map(VersionHead::of).collect();
        dropped.sort();
        Projected {
            kept: Tags::new(),
            dropped,
        }
        .dropped_note(!kv_target)
    }

    /// The line for an item that exists in the target without this source's marker, live
    /// (`tags` of the live item) or soft-deleted (`tags` of the deleted one): a conflict that
    /// writes nothing. `None` when the item is the copy's own, or absent.
    pub fn refuse(&self, item: &ItemHead, tags: Option<&Tags>) -> Option<PlannedItem> {
        let tags = tags?;
        if self.owns(tags) {
            return None;
        }
        Some(PlannedItem {
            kind: item.kind,
            name: item.name.clone(),
            action: Action::Conflict,
            method: None,
            reason: Some(format!(
                "exists in the target and was not created by coldvault from {}: left as it is",
                self.source
            )),
            versions_present: 0,
            needs_native: false,
            unverified: false,
        })
    }
}

/// The target's tags of `head`'s item when it is there, live or soft-deleted.
pub fn target_tags<'a>(listing: &'a TargetListing, head: &ItemHead) -> Option<&'a Tags> {
    let key = head.key();
    match listing.live.get(&key) {
        Some(props) => Some(live_tags(props)),
        None => listing.deleted.get(&key).map(|d| &d.tags),
    }
}

/// The tags a live item's list entry shows.
pub fn live_tags(props: &LiveProps) -> &Tags {
    match props {
        LiveProps::Secret(p) => &p.tags,
        LiveProps::Key(p) => &p.tags,
        LiveProps::Certificate(p) => &p.tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::scope::ScopeArgs;
    use crate::vault::{Attributes, SecretProperties};

    fn live_secret(name: &str) -> ((Kind, String), LiveProps) {
        (
            (Kind::Secret, name.to_ascii_lowercase()),
            LiveProps::Secret(SecretProperties {
                name: name.to_owned(),
                version: None,
                id: format!("https://t.vault.azure.net/secrets/{name}"),
                content_type: None,
                tags: Tags::new(),
                attributes: Attributes::default(),
                managed: false,
                key_id: None,
            }),
        )
    }

    fn head(name: &str) -> SourceHead {
        SourceHead {
            kind: Kind::Secret,
            name: name.to_owned(),
        }
    }

    #[test]
    fn prune_takes_exactly_the_extraneous_items_of_the_selection() {
        let mut listing = TargetListing::default();
        for name in ["app-a", "App-B", "app-extra", "other-extra"] {
            let (k, v) = live_secret(name);
            listing.live.insert(k, v);
        }
        let source = [head("app-a"), head("app-b")];
        let all = prune_lines(&source, &listing, &Scope::everything());
        let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["app-extra", "other-extra"]);
        let only_app = Scope::resolve(&ScopeArgs {
            names: vec!["app-*".into()],
            ..ScopeArgs::default()
        })
        .unwrap();
        let names: Vec<String> = prune_lines(&source, &listing, &only_app)
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["app-extra"]);
        let excluded = Scope::resolve(&ScopeArgs {
            excludes: vec!["*-extra".into()],
            ..ScopeArgs::default()
        })
        .unwrap();
        assert!(prune_lines(&source, &listing, &excluded).is_empty());
    }

    #[test]
    fn soft_delete_is_read_from_the_recovery_level() {
        assert_eq!(soft_delete_on(Some("Recoverable+Purgeable")), Some(true));
        assert_eq!(soft_delete_on(Some("CustomizedRecoverable")), Some(true));
        assert_eq!(soft_delete_on(Some("Purgeable")), Some(false));
        assert_eq!(soft_delete_on(None), None);
    }

    #[test]
    fn a_key_for_a_refusing_target_names_azures_reason() {
        let key = ItemHead::new(Kind::Key, "signing");
        let policy = Policy {
            mode: crate::commands::restore_plan::Mode::Auto,
            on_conflict: crate::commands::restore_plan::OnConflict::Skip,
            recover_deleted: false,
        };
        let line = decide_item(&key, TargetState::Absent, policy, NativeTarget::Refuses);
        assert_eq!(line.action, Action::Impossible);
        assert!(line.reason.unwrap().contains("Cannot decrypt backup blob"));
    }

    #[test]
    fn only_items_carrying_the_sources_marker_are_the_copys_own() {
        let ownership = Ownership {
            marker: "bao+http://127.0.0.1:8200/secret".to_owned(),
            source: "bao+http://127.0.0.1:8200/secret".to_owned(),
        };
        let head = ItemHead::new(Kind::Secret, "app");
        assert!(ownership.refuse(&head, None).is_none(), "absent: created");
        let mut tags = Tags::new();
        ownership.mark(&mut tags);
        assert!(ownership.refuse(&head, Some(&tags)).is_none(), "owned");
        // A marker of another source is not this copy's.
        tags.insert(
            MARKER_TAG.to_owned(),
            "bao+http://127.0.0.1:8200/other".to_owned(),
        );
        let line = ownership.refuse(&head, Some(&tags)).expect("refused");
        assert_eq!(line.action, Action::Conflict);
        assert!(
            line.reason
                .as_deref()
                .unwrap()
                .contains("not created by coldvault from bao+http://127.0.0.1:8200/secret"),
            "{line:?}"
        );
        let by_hand = Tags::from([("team".to_owned(), "a".to_owned())]);
        assert!(ownership.refuse(&head, Some(&by_hand)).is_some());
    }

    fn record(tags: Tags) -> crate::archive::SecretRecord {
        crate::archive::SecretRecord {
            name: "app".to_owned(),
            version: "1".to_owned(),
            value: age::secrecy::SecretString::from("v".to_owned()),
            content_type: None,
            tags,
            attributes: crate::archive::Attributes {
                expires: time::OffsetDateTime::from_unix_timestamp(1_900_000_000).ok(),
                ..Default::default()
            },
            current: true,
        }
    }

    #[test]
    fn marking_keeps_key_vaults_tag_limit_with_the_marker_first_and_names_what_was_left_out() {
        let ownership = Ownership {
            marker: "bao+http://127.0.0.1:8200/secret".to_owned(),
            source: "bao+http://127.0.0.1:8200/secret".to_owned(),
        };
        let many: Tags = (0..16)
            .map(|i| (format!("k{i:02}"), "v".to_owned()))
            .collect();
        let mut item = ItemData::new(ItemHead::new(Kind::Secret, "app"));
        item.versions.push(record(many.clone()));
        let note = ownership
            .mark_item(&mut item, false)
            .expect("entries left out");
        let tags = &item.versions[0].tags;
        assert_eq!(tags.len(), 15);
        assert!(ownership.owns(tags));
        assert!(
            note.contains("2 custom_metadata entries not copied"),
            "{note}"
        );
        assert!(note.contains("k14, k15"), "{note}");
        assert_eq!(
            item.head.versions.len(),
            1,
            "heads follow the marked versions"
        );
        assert_eq!(item.head.versions[0].tags, *tags);

        // Into KV: the marker is added, nothing is cut, and nbf/exp (which KV cannot hold)
        // are dropped so a rerun compares equal.
        let mut item = ItemData::new(ItemHead::new(Kind::Secret, "app"));
        item.versions.push(record(many));
        assert!(ownership.mark_item(&mut item, true).is_none());
        assert_eq!(item.versions[0].tags.len(), 17);
        assert!(item.versions[0].attributes.expires.is_none());

        // Into KV, what KV refuses (an empty value) is left out of the source's side too and
        // named, so the written item and the source compare equal on the next run.
        let mut tags: Tags = [("team", "a"), ("empty", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tags.insert("coldvault-content-type".into(), "forged".into());
        let mut item = ItemData::new(ItemHead::new(Kind::Secret, "app"));
        item.versions.push(record(tags));
        let note = ownership
            .mark_item(&mut item, true)
            .expect("the empty tag named");
        assert!(note.contains("1 tag not copied: KV allows"), "{note}");
        assert!(note.contains("empty"), "{note}");
        let kept: Vec<&str> = item.versions[0].tags.keys().map(String::as_str).collect();
        assert_eq!(kept, ["coldvault-source", "team"]);
        assert_eq!(item.head.versions[0].tags, item.versions[0].tags);
    }
}
