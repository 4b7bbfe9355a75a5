//! The restore plan, pure: [`compare`] tells how an item differs from its live state,
//! [`resume_point`] where an interrupted plain replay can continue, and [`decide`] turns an
//! item and where it stands in the target into one [`PlannedItem`]. Nothing here reads or
//! writes a store: the inputs are an [`ItemHead`] (names and digests, never values), a
//! [`LiveView`] and the options, so every rule is tested without a server and any source
//! (an archive, a live vault) and any target plan alike.

use serde::Serialize;

use super::target::LiveView;
use crate::archive::Attributes as ArchivedAttributes;
use crate::engine::item::{Fingerprint, ItemHead};
use crate::model::ItemKind as Kind;
use crate::vault::Attributes;

/// How items are written into the target (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Native where the target accepts the blob, plain otherwise.
    Auto,
    /// Native backup blobs only (same subscription and geography).
    Native,
    /// Values only: secrets by value, certificates with an exportable key.
    Plain,
}

/// What to do with an item that exists in the target and differs (`--on-conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Leave it as it is.
    Skip,
    /// Write the archive's state as a new version (plain); native never deletes anything.
    Overwrite,
    /// Refuse to restore anything while a conflict exists.
    Fail,
}

/// How an item present on both sides differs: the names of the fields that changed
/// (`value`, `version`, `content_type`, `tags`, `attributes`). Empty when identical; `None`
/// when the archive holds nothing to compare with.
pub fn compare(item: &ItemHead, live: &LiveView) -> Option<Vec<&'static str>> {
    let mut changed = Vec::new();
    match item.kind {
        Kind::Secret => {
            if let Some(current) = item.versions.last() {
                let same_value = match &live.value {
                    Some(digest) => digest.as_slice() == current.value_digest,
                    None => live.version.as_deref() == Some(current.version.as_str()),
                };
                if !same_value {
                    changed.push("value");
                }
                if current.content_type != live.content_type {
                    changed.push("content_type");
                }
                if current.tags != live.tags {
                    changed.push("tags");
                }
                if !same_attributes(&current.attributes, &live.attributes, true) {
                    changed.push("attributes");
                }
            } else {
                let blob = item.blob.as_ref()?;
                if blob.version.is_none() || blob.version != live.version {
                    changed.push("version");
                }
                if blob.content_type != live.content_type {
                    changed.push("content_type");
                }
                if blob.tags != live.tags {
                    changed.push("tags");
                }
                if !same_attributes(&blob.attributes, &live.attributes, true) {
                    changed.push("attributes");
                }
            }
        }
        Kind::Key => {
            let blob = item.blob.as_ref()?;
            if blob.version.is_none() || blob.version != live.version {
                changed.push("version");
            }
            if blob.tags != live.tags {
                changed.push("tags");
            }
            if !same_attributes(&blob.attributes, &live.attributes, true) {
                changed.push("attributes");
            }
        }
        Kind::Certificate => {
            let same_value = match (&item.thumbprint, &live.value) {
                (Some(archived), Some(thumbprint)) => archived == thumbprint,
                _ => {
                    item.captured_version().is_some()
                        && item.captured_version() == live.version.as_deref()
                }
            };
            if !same_value {
                changed.push("value");
            }
            if let Some(blob) = &item.blob {
                if blob.tags != live.tags {
                    changed.push("tags");
                }
                // A certificate's nbf and exp come from the X.509 certificate itself.
                if !same_attributes(&blob.attributes, &live.attributes, false) {
                    changed.push("attributes");
                }
            }
        }
    }
    Some(changed)
}

/// Where a plain replay that stopped part-way can continue: the number of archived versions
/// already present, when the live versions are exactly the archive's first ones (in any
/// order).
pub fn resume_point(item: &ItemHead, live: &LiveView) -> Option<usize> {
    let history = live.history.as_ref()?;
    if history.is_empty() || history.len() >= item.versions.len() {
        return None;
    }
    // Compared as multisets: versions written within one second have the same `created`,
    // and the vault's order among them is not the order they were written in.
    let mut live: Vec<Option<Fingerprint>> = history.clone();
    let mut archived: Vec<Option<Fingerprint>> = item.versions[..history.len()]
        .iter()
        .map(|record| Some(record.content_digest))
        .collect();
    live.sort();
    archived.sort();
    (live == archived).then_some(history.len())
}

fn same_attributes(archived: &ArchivedAttributes, live: &Attributes, with_times: bool) -> bool {
    let enabled = |e: Option<bool>| e.unwrap_or(true);
    let seconds = |t: Option<time::OffsetDateTime>| t.map(|t| t.unix_timestamp());
    enabled(archived.enabled) == enabled(live.enabled)
        && (!with_times
            || (seconds(archived.not_before) == seconds(live.not_before)
                && seconds(archived.expires) == seconds(live.expires)))
}

/// What the plan does with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The target lacks it: write it.
    Create,
    /// Nothing to do: identical, or existing and left alone.
    Skip,
    /// Exists and differs: write the archive's state as a new version.
    Overwrite,
    /// Soft-deleted in the target: recover it, then bring it up to the archive's state.
    Recover,
    /// Exists or is soft-deleted, and the options say not to touch it.
    Conflict,
    /// Cannot be restored into this target with these options.
    Impossible,
}

impl Action {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Skip => "skip",
            Action::Overwrite => "overwrite",
            Action::Recover => "recover",
            Action::Conflict => "conflict",
            Action::Impossible => "impossible",
        }
    }

    /// Whether the item ends up not restored (exit 3).
    pub fn is_failure(self) -> bool {
        matches!(self, Action::Conflict | Action::Impossible)
    }
}

/// How a write is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The native backup blob.
    Native,
    /// Values (secret versions, certificate import).
    Plain,
    /// Native, or plain when the target refuses the blob.
    Auto,
}

impl Method {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Native => "native",
            Method::Plain => "plain",
            Method::Auto => "auto",
        }
    }
}

/// Whether the target takes the archive's native backup blobs. Azure opens a blob only in a
/// vault of the source's subscription and geography ("Cannot decrypt backup blob" elsewhere),
/// and nothing tells which subscription a vault is in short of a restore, so a plan knows it
/// only from a restore that cannot create anything (see `restore::probe_native`) or from the
/// target being the source vault itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeTarget {
    /// The target opens the archive's blobs: native writes will work.
    Accepts,
    /// The target refuses them (another subscription or geography).
    Refuses,
    /// Not known: an item that only a native restore brings back may or may not come back.
    Unverified,
}

/// The reason a plan line gives when the target refuses native blobs.
pub const REFUSED_NATIVELY: &str = "the target refuses the archive's native blobs (Cannot \
                                    decrypt backup blob: another subscription or geography)";

/// One line of the plan. Holds names and reasons, never values.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedItem {
    /// The item's kind.
    pub kind: Kind,
    /// The item's name.
    pub name: String,
    /// What will be done.
    pub action: Action,
    /// How it will be written, for writing actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Why, or a detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a plain replay that continues an interrupted one: archived versions already
    /// present in the target.
    #[serde(skip_serializing_if = "is_zero")]
    pub versions_present: usize,
    /// A create that only a native restore can make (no plain form, or `--mode native`):
    /// it happens only if the target accepts the archive's blobs.
    #[serde(skip)]
    pub needs_native: bool,
    /// Set when `needs_native` and the plan could not learn whether the target accepts the
    /// blobs: the item may not be restored.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl PlannedItem {
    /// Whether a dry run counts this line as an item that would not (or might not) be
    /// restored: a conflict, an impossibility, or a native-only create the target was not
    /// seen to accept.
    pub fn may_fail(&self) -> bool {
        self.action.is_failure() || self.unverified
    }
}

/// Where an item stands in the target.
#[derive(Debug)]
pub enum TargetState<'a> {
    /// Neither live nor soft-deleted.
    Absent,
    /// The name is a certificate's managed secret in the target.
    ManagedName,
    /// Soft-deleted.
    Deleted,
    /// Live, with what was read of it, or why it could not be read.
    Live(Result<&'a LiveView, &'a str>),
}

/// The options that shape decisions.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `--mode`.
    pub mode: Mode,
    /// `--on-conflict`.
    pub on_conflict: OnConflict,
    /// `--recover-deleted`.
    pub recover_deleted: bool,
}

/// Decides what to do with one archived item given where it stands in the target and whether
/// the target takes the archive's native blobs.
pub fn decide(
    item: &ItemHead,
    target: TargetState<'_>,
    policy: Policy,
    native_target: NativeTarget,
) -> PlannedItem {
    let plan = |action, method, reason: Option<String>| PlannedItem {
        kind: item.kind,
        name: item.name.clone(),
        action,
        method,
        reason,
        versions_present: 0,
        needs_native: false,
        unverified: false,
    };
    let native = item.blob.is_some();
    let plain = item.has_plain_form();
    if !native && !plain {
        let reason = match &item.skipped {
            Some(reason) => format!("not captured by the backup: {reason}"),
            None => "the archive holds neither a native blob nor a plain form".to_owned(),
        };
        return plan(Action::Impossible, None, Some(reason));
    }
    let write_method = match policy.mode {
        Mode::Native if native => Ok(Method::Native),
        Mode::Native => Err("no native blob in the archive: try --mode plain".to_owned()),
        Mode::Plain if plain => Ok(Method::Plain),
        Mode::Plain => Err(item.no_plain_reason()),
        Mode::Auto => Ok(match (native, plain) {
            (true, true) => Method::Auto,
            (true, false) => Method::Native,
            _ => Method::Plain,
        }),
    };
    let write_method = match write_method {
        Ok(method) => method,
        Err(reason) => return plan(Action::Impossible, None, Some(reason)),
    };
    match target {
        TargetState::Absent => match (write_method, native_target) {
            (Method::Auto, NativeTarget::Refuses) => plan(
                Action::Create,
                Some(Method::Plain),
                Some(format!("{REFUSED_NATIVELY}: written by value")),
            ),
            (Method::Native, NativeTarget::Refuses) => {
                let why = if plain {
                    "--mode plain writes it by value".to_owned()
                } else {
                    item.no_plain_reason()
                };
                let mut line = plan(
                    Action::Impossible,
                    None,
                    Some(format!("{REFUSED_NATIVELY}; {why}")),
                );
                line.needs_native = true;
                line
            }
            (Method::Native, accepts_or_unknown) => {
                let unverified = accepts_or_unknown == NativeTarget::Unverified;
                let mut line = plan(
                    Action::Create,
                    Some(Method::Native),
                    unverified.then(|| {
                        "unverified: comes back only if the target is in the source's \
                         subscription and geography"
                            .to_owned()
                    }),
                );
                line.needs_native = true;
                line.unverified = unverified;
                line
            }
            (method, _) => plan(Action::Create, Some(method), None),
        },
        TargetState::ManagedName => plan(
            Action::Impossible,
            None,
            Some("the name belongs to a certificate's managed secret in the target".to_owned()),
        ),
        TargetState::Deleted if policy.recover_deleted => plan(
            Action::Recover,
            Some(write_method),
            Some("soft-deleted in the target: recovered, then brought up to the archive".into()),
        ),
        TargetState::Deleted => plan(
            Action::Conflict,
            None,
            Some(
                "soft-deleted in the target: pass --recover-deleted to recover it \
                 (coldvault never purges)"
                    .to_owned(),
            ),
        ),
        TargetState::Live(Err(reason)) => plan(
            Action::Conflict,
            None,
            Some(format!(
                "exists in the target and could not be read: {reason}"
            )),
        ),
        TargetState::Live(Ok(view)) => {
            let changed = compare(item, view).unwrap_or_else(|| vec!["version"]);
            if changed.is_empty() {
                return plan(Action::Skip, None, Some("identical".to_owned()));
            }
            if write_method != Method::Native
                && let Some(present) = resume_point(item, view)
            {
                let mut line = plan(
                    Action::Create,
                    Some(Method::Plain),
                    Some(format!(
                        "finishing an interrupted restore: {present} of {} versions present",
                        item.versions.len()
                    )),
                );
                line.versions_present = present;
                return line;
            }
            let differs = format!("exists and differs ({})", changed.join(", "));
            match policy.on_conflict {
                OnConflict::Skip => plan(Action::Skip, None, Some(differs)),
                OnConflict::Fail => plan(Action::Conflict, None, Some(differs)),
                OnConflict::Overwrite if plain && policy.mode != Mode::Native => plan(
                    Action::Overwrite,
                    Some(Method::Plain),
                    Some(format!(
                        "{differs}: the archive's state is added as a new version"
                    )),
                ),
                OnConflict::Overwrite => {
                    let why = if item.kind == Kind::Key || policy.mode == Mode::Native {
                        "a native restore never replaces a live item"
                    } else {
                        "no plain form to write as a new version"
                    };
                    plan(Action::Conflict, None, Some(format!("{differs}; {why}")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::archive::SecretRecord;
    use crate::engine::item::{BlobHead, VersionHead, value_digest};
    use age::secrecy::SecretString;

    fn record(version: &str, value: &str, current: bool, created: i64) -> VersionHead {
        VersionHead::of(&SecretRecord {
            name: "db".into(),
            version: version.into(),
            value: SecretString::from(value.to_owned()),
            content_type: Some("text/plain".into()),
            tags: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            attributes: ArchivedAttributes {
                created: time::OffsetDateTime::from_unix_timestamp(created).ok(),
                ..ArchivedAttributes::default()
            },
            current,
        })
    }

    fn secret(values: &[&str]) -> ItemHead {
        let mut item = ItemHead::new(Kind::Secret, "db");
        let n = values.len();
        for (i, v) in values.iter().enumerate() {
            item.versions
                .push(record(&format!("v{i}"), v, i + 1 == n, 1000 + i as i64));
        }
        item.blob = Some(BlobHead {
            version: Some(format!("v{}", n - 1)),
            ..BlobHead::default()
        });
        item
    }

    fn live_like(item: &ItemHead, value: &str) -> LiveView {
        let current = item.versions.last().unwrap();
        LiveView {
            version: Some("other".into()),
            value: Some(value_digest(value).to_vec()),
            content_type: current.content_type.clone(),
            tags: current.tags.clone(),
            attributes: Attributes::default(),
            history: None,
        }
    }

    const DEFAULT: Policy = Policy {
        mode: Mode::Auto,
        on_conflict: OnConflict::Skip,
        recover_deleted: false,
    };

    #[test]
    fn absent_items_are_created_natively_or_plainly() {
        let item = secret(&["a", "b"]);
        let line = decide(&item, TargetState::Absent, DEFAULT, NativeTarget::Accepts);
        assert_eq!(line.action, Action::Create);
        assert_eq!(line.method, Some(Method::Auto));
        let mut key = ItemHead::new(Kind::Key, "k");
        key.blob = item.blob.as_ref().map(|b| BlobHead {
            version: b.version.clone(),
            ..BlobHead::default()
        });
        let plain = Policy {
            mode: Mode::Plain,
            ..DEFAULT
        };
        let line = decide(&key, TargetState::Absent, plain, NativeTarget::Accepts);
        assert_eq!(line.action, Action::Impossible);
        assert!(line.reason.unwrap().contains("no plain form"));
    }

    #[test]
    fn identical_is_skipped_and_differences_follow_the_policy() {
        let item = secret(&["a", "b"]);
        let same = live_like(&item, "b");
        assert_eq!(compare(&item, &same), Some(vec![]));
        assert_eq!(
            decide(
                &item,
                TargetState::Live(Ok(&same)),
                DEFAULT,
                NativeTarget::Accepts
            )
            .action,
            Action::Skip
        );
        let mut other = live_like(&item, "zzz");
        other.tags.clear();
        assert_eq!(compare(&item, &other), Some(vec!["value", "tags"]));
        let skip = decide(
            &item,
            TargetState::Live(Ok(&other)),
            DEFAULT,
            NativeTarget::Accepts,
        );
        assert_eq!(skip.action, Action::Skip);
        assert!(skip.reason.unwrap().contains("value, tags"));
        let overwrite = Policy {
            on_conflict: OnConflict::Overwrite,
            ..DEFAULT
        };
        let line = decide(
            &item,
            TargetState::Live(Ok(&other)),
            overwrite,
            NativeTarget::Accepts,
        );
        assert_eq!(
            (line.action, line.method),
            (Action::Overwrite, Some(Method::Plain))
        );
        let native = Policy {
            mode: Mode::Native,
            ..overwrite
        };
        assert_eq!(
            decide(
                &item,
                TargetState::Live(Ok(&other)),
                native,
                NativeTarget::Accepts
            )
            .action,
            Action::Conflict
        );
        let fail = Policy {
            on_conflict: OnConflict::Fail,
            ..DEFAULT
        };
        assert_eq!(
            decide(
                &item,
                TargetState::Live(Ok(&other)),
                fail,
                NativeTarget::Accepts
            )
            .action,
            Action::Conflict
        );
    }

    #[test]
    fn soft_deleted_needs_recover_deleted() {
        let item = secret(&["a"]);
        let line = decide(&item, TargetState::Deleted, DEFAULT, NativeTarget::Accepts);
        assert_eq!(line.action, Action::Conflict);
        assert!(line.reason.unwrap().contains("--recover-deleted"));
        let recover = Policy {
            recover_deleted: true,
            ..DEFAULT
        };
        assert_eq!(
            decide(&item, TargetState::Deleted, recover, NativeTarget::Accepts).action,
            Action::Recover
        );
    }

    #[test]
    fn an_interrupted_replay_resumes_where_it_stopped() {
        let item = secret(&["a", "b", "c"]);
        let mut view = live_like(&item, "b");
        view.history = Some(vec![
            Some(item.versions[0].content_digest),
            Some(item.versions[1].content_digest),
        ]);
        assert_eq!(resume_point(&item, &view), Some(2));
        let line = decide(
            &item,
            TargetState::Live(Ok(&view)),
            DEFAULT,
            NativeTarget::Accepts,
        );
        assert_eq!(line.action, Action::Create);
        assert_eq!(line.versions_present, 2);
        view.history = Some(vec![Some([0; 32])]);
        assert_eq!(resume_point(&item, &view), None);
    }

    /// Versions written within one second share `created`, and the vault lists them in id
    /// order: a half-done replay must still be recognised.
    #[test]
    fn versions_listed_out_of_order_still_resume() {
        let item = secret(&["a", "b", "c"]);
        let mut view = live_like(&item, "a");
        view.history = Some(vec![
            Some(item.versions[1].content_digest),
            Some(item.versions[0].content_digest),
        ]);
        assert_eq!(resume_point(&item, &view), Some(2));
        view.history = Some(vec![
            Some(item.versions[2].content_digest),
            Some(item.versions[0].content_digest),
        ]);
        assert_eq!(
            resume_point(&item, &view),
            None,
            "not the first two versions"
        );
    }

    fn key_item() -> ItemHead {
        let mut key = ItemHead::new(Kind::Key, "signing-key");
        key.blob = Some(BlobHead {
            version: Some("k1".into()),
            tags: BTreeMap::new(),
            attributes: ArchivedAttributes::default(),
            content_type: None,
        });
        key
    }

    /// `restore --dry-run` into another subscription said "0 impossible": a vault that
    /// refuses the blobs makes native-only items impossible with Azure's reason, and the rest
    /// plain.
    #[test]
    fn dry_run_predicts_cross_subscription_refusals() {
        let key = key_item();
        let line = decide(&key, TargetState::Absent, DEFAULT, NativeTarget::Refuses);
        assert_eq!(line.action, Action::Impossible);
        let reason = line.reason.unwrap();
        assert!(reason.contains("Cannot decrypt backup blob"), "{reason}");
        assert!(reason.contains("keys have no plain form"), "{reason}");
        assert!(line.needs_native && line.action.is_failure());

        let secret = secret(&["a", "b"]);
        let line = decide(&secret, TargetState::Absent, DEFAULT, NativeTarget::Refuses);
        assert_eq!(
            (line.action, line.method),
            (Action::Create, Some(Method::Plain))
        );
        assert!(!line.may_fail());

        let native = Policy {
            mode: Mode::Native,
            ..DEFAULT
        };
        let line = decide(&secret, TargetState::Absent, native, NativeTarget::Refuses);
        assert_eq!(line.action, Action::Impossible);
        assert!(line.reason.unwrap().contains("--mode plain"));

        // Refusal changes nothing for items the target already holds.
        let same = live_like(&secret, "b");
        let line = decide(
            &secret,
            TargetState::Live(Ok(&same)),
            DEFAULT,
            NativeTarget::Refuses,
        );
        assert_eq!(line.action, Action::Skip);
    }

    #[test]
    fn an_unknown_target_leaves_native_only_creates_unverified() {
        let key = key_item();
        let line = decide(&key, TargetState::Absent, DEFAULT, NativeTarget::Unverified);
        assert_eq!(
            (line.action, line.method),
            (Action::Create, Some(Method::Native))
        );
        assert!(line.unverified && line.may_fail());
        assert!(
            serde_json::to_string(&line)
                .unwrap()
                .contains("\"unverified\":true")
        );
        let line = decide(&key, TargetState::Absent, DEFAULT, NativeTarget::Accepts);
        assert!(!line.unverified && !line.may_fail());
        assert!(!serde_json::to_string(&line).unwrap().contains("unverified"));
        // Items with a plain form come back either way.
        let secret = secret(&["a"]);
        let line = decide(
            &secret,
            TargetState::Absent,
            DEFAULT,
            NativeTarget::Unverified,
        );
        assert_eq!(line.method, Some(Method::Auto));
        assert!(!line.may_fail());
    }

    #[test]
    fn plan_lines_never_hold_values() {
        let item = secret(&["canary-5e1f"]);
        let line = decide(&item, TargetState::Absent, DEFAULT, NativeTarget::Accepts);
        let text = format!("{line:?} {}", serde_json::to_string(&line).unwrap());
        assert!(!text.contains("canary-5e1f"));
        assert!(!format!("{item:?}").contains("canary-5e1f"));
    }
}
