//! The copy plan's own decisions beside the restore planner's, pure: what the source's
//! capture failures mean for a line, which target items `--prune` soft-deletes, and whether
//! the target has soft-delete at all.

use serde::Serialize;

use super::source::SourceHead;
use crate::archive::Kind;
use crate::commands::restore_plan::{
    Action, NativeTarget, PlannedItem, Policy, TargetListing, TargetState, decide,
};
use crate::commands::scope::{ItemKind as ScopeKind, Scope};
use crate::engine::item::ItemHead;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::restore_plan::LiveProps;
    use crate::commands::scope::ScopeArgs;
    use crate::vault::{Attributes, SecretProperties, Tags};

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
}
