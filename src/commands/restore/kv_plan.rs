//! The plan of a KV archive restored into a KV v2 mount: pure decisions, tested without a
//! server.
//!
//! A secret is restored by replaying its versions `1..=current_version` in order, so the
//! numbers match the archive's: a live version gets its data, a soft-deleted one a
//! placeholder `{}` that is then deleted, a destroyed one (or one below `oldest_version`,
//! pruned by `max_versions`) a placeholder that is then destroyed; then the metadata is
//! written. [`decide`] compares what the archive holds with what the target holds and says
//! where to start: from version 1 (absent), nowhere (identical), from the first missing
//! version (an interrupted restore, also one stopped between a placeholder and its delete or
//! destroy), or not at all (a conflict).

use serde::Serialize;

use crate::engine::restore::plan::{Action, OnConflict};
use crate::kv::{KvData, KvSecret};

/// What the replay does for one version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Write the archived data.
    Data,
    /// Write a placeholder `{}`, then soft-delete it.
    Delete,
    /// Write a placeholder `{}`, then destroy it.
    Destroy,
}

/// The state of one version number on one side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State<'a> {
    Live(Option<&'a KvData>),
    Deleted,
    Destroyed,
    /// Not listed (pruned by `max_versions`, or below the oldest kept version).
    Gone,
}

fn state(secret: &KvSecret, n: u64) -> State<'_> {
    match secret.versions.iter().find(|v| v.version == n) {
        None => State::Gone,
        Some(v) if v.destroyed => State::Destroyed,
        Some(v) if v.deleted.is_some() => State::Deleted,
        Some(v) => State::Live(v.data.as_ref()),
    }
}

/// How the archive's version `n` is replayed.
pub fn step(archived: &KvSecret, n: u64) -> Step {
    match state(archived, n) {
        State::Live(_) => Step::Data,
        State::Deleted => Step::Delete,
        State::Destroyed | State::Gone => Step::Destroy,
    }
}

/// Whether the target's version `n` is what the replay of the archive's makes of it. A
/// destroyed or pruned version matches a destroyed or pruned one (the target may prune what
/// the replay destroyed, as the source did).
fn matches(archived: State<'_>, target: State<'_>) -> bool {
    match (archived, target) {
        (State::Live(a), State::Live(t)) => a.is_some() && a == t,
        (State::Deleted, State::Deleted) => true,
        (State::Destroyed | State::Gone, State::Destroyed | State::Gone) => true,
        _ => false,
    }
}

/// Whether the target's version `n` is a placeholder the replay wrote and had still to
/// delete or destroy (a restore stopped between the two calls).
fn placeholder_pending(archived: State<'_>, target: State<'_>) -> bool {
    matches!(archived, State::Deleted | State::Destroyed | State::Gone)
        && matches!(target, State::Live(Some(data)) if data.0.is_empty())
}

/// Whether the metadata the replay writes last is already the target's.
fn same_metadata(archived: &KvSecret, target: &KvSecret) -> bool {
    archived.custom_metadata == target.custom_metadata
        && archived.max_versions == target.max_versions
        && archived.cas_required == target.cas_required
        && archived.delete_version_after == target.delete_version_after
}

/// What to do with one secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvPlanLine {
    /// The secret's path under the mount.
    pub name: String,
    /// create (also a resumed replay), skip, overwrite or conflict.
    pub action: Action,
    /// The first version the replay writes; `None` when it writes none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u64>,
    /// Whether the replay first finishes the placeholder at `from_version` (written, not yet
    /// deleted or destroyed) instead of writing it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub placeholder_written: bool,
    /// Why, in words (never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The target's current version when planned: every write's check-and-set starts here.
    pub target_version: u64,
}

/// Decides one secret: `archived` from the archive (with data), `target` as the mount holds
/// it now (`None`: no secret at that path).
pub fn decide(
    archived: &KvSecret,
    target: Option<&KvSecret>,
    on_conflict: OnConflict,
) -> KvPlanLine {
    let line = |action, from_version, reason: Option<String>, target_version| KvPlanLine {
        name: archived.path.clone(),
        action,
        from_version,
        placeholder_written: false,
        reason,
        target_version,
    };
    let Some(target) = target else {
        return line(
            Action::Create,
            Some(1).filter(|_| archived.current_version > 0),
            None,
            0,
        );
    };
    let current = target.current_version;
    let archived_last = archived.current_version;
    // How far the target's history is the archive's, version by version.
    let agreed = (1..=current.min(archived_last))
        .take_while(|&n| matches(state(archived, n), state(target, n)))
        .last()
        .unwrap_or(0);
    if current <= archived_last && agreed == current {
        if current == archived_last && same_metadata(archived, target) {
            return line(Action::Skip, None, Some("identical".to_owned()), current);
        }
        let reason = if current == archived_last {
            "every version is restored: writes the metadata".to_owned()
        } else if current == 0 {
            "exists without versions: replays every version".to_owned()
        } else {
            format!(
                "holds the archive's first {current} versions (an interrupted restore): \
                 finishes from version {}",
                current + 1
            )
        };
        return line(
            Action::Create,
            Some(current + 1).filter(|&n| n <= archived_last),
            Some(reason),
            current,
        );
    }
    if current <= archived_last
        && agreed + 1 == current
        && placeholder_pending(state(archived, current), state(target, current))
    {
        let mut resumed = line(
            Action::Create,
            Some(current),
            Some(format!(
                "an interrupted restore left version {current} as a placeholder: finishes it, \
                 then the rest"
            )),
            current,
        );
        resumed.placeholder_written = true;
        return resumed;
    }
    let differs = if current > archived_last {
        format!("exists at version {current}, beyond the archive's {archived_last}")
    } else {
        format!(
            "exists and differs from the archive at version {}",
            agreed + 1
        )
    };
    match on_conflict {
        OnConflict::Skip => line(Action::Skip, None, Some(differs), current),
        OnConflict::Fail => line(Action::Conflict, None, Some(differs), current),
        OnConflict::Overwrite => {
            let Some(data) = archived.current().and_then(|v| v.data.as_ref()) else {
                return line(
                    Action::Conflict,
                    None,
                    Some(format!(
                        "{differs}; the archive's current version is deleted or destroyed: \
                         no data to write as a new version"
                    )),
                    current,
                );
            };
            let target_data = target.current().and_then(|v| v.data.as_ref());
            if target_data == Some(data) && same_metadata(archived, target) {
                return line(
                    Action::Skip,
                    None,
                    Some(format!(
                        "{differs}, but its current data and metadata are the archive's (an \
                         earlier overwrite)"
                    )),
                    current,
                );
            }
            line(
                Action::Overwrite,
                None,
                Some(format!(
                    "{differs}: the archive's current data is added as version {} and its \
                     metadata written",
                    current + 1
                )),
                current,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvVersion;

    fn data(value: &str) -> KvData {
        KvData([("k".to_owned(), serde_json::Value::from(value))].into())
    }

    fn v(n: u64, state: &str, value: &str) -> KvVersion {
        KvVersion {
            version: n,
            created: None,
            deleted: (state == "deleted").then_some(time::OffsetDateTime::UNIX_EPOCH),
            destroyed: state == "destroyed",
            data: match state {
                "live" => Some(data(value)),
                "placeholder" => Some(KvData::default()),
                _ => None,
            },
        }
    }

    fn secret(versions: Vec<KvVersion>) -> KvSecret {
        KvSecret {
            path: "app/db".to_owned(),
            custom_metadata: [("owner".to_owned(), "a".to_owned())].into(),
            current_version: versions.last().map_or(0, |v| v.version),
            oldest_version: versions.first().map_or(0, |v| v.version),
            max_versions: 0,
            cas_required: false,
            delete_version_after: "0s".to_owned(),
            created: None,
            updated: None,
            versions,
        }
    }

    /// Versions 1 (pruned), 2 live, 3 deleted, 4 destroyed, 5 live.
    fn archived() -> KvSecret {
        let mut s = secret(vec![
            v(2, "live", "two"),
            v(3, "deleted", ""),
            v(4, "destroyed", ""),
            v(5, "live", "five"),
        ]);
        s.oldest_version = 2;
        s
    }

    /// What a complete replay of [`archived`] leaves in the target.
    fn restored() -> KvSecret {
        let mut s = secret(vec![
            v(1, "destroyed", ""),
            v(2, "live", "two"),
            v(3, "deleted", ""),
            v(4, "destroyed", ""),
            v(5, "live", "five"),
        ]);
        s.oldest_version = 1;
        s
    }

    #[test]
    fn replay_steps_keep_every_state() {
        let a = archived();
        let steps: Vec<Step> = (1..=5).map(|n| step(&a, n)).collect();
        assert_eq!(
            steps,
            [
                Step::Destroy,
                Step::Data,
                Step::Delete,
                Step::Destroy,
                Step::Data
            ]
        );
    }

    #[test]
    fn absent_is_created_and_a_complete_replay_is_identical() {
        let a = archived();
        let line = decide(&a, None, OnConflict::Skip);
        assert_eq!((line.action, line.from_version), (Action::Create, Some(1)));
        let line = decide(&a, Some(&restored()), OnConflict::Skip);
        assert_eq!(line.action, Action::Skip);
        assert_eq!(line.reason.as_deref(), Some("identical"));
        // The target pruned what the replay destroyed: still identical.
        let mut pruned = restored();
        pruned.versions.remove(0);
        assert_eq!(
            decide(&a, Some(&pruned), OnConflict::Fail).action,
            Action::Skip
        );
    }

    #[test]
    fn an_interrupted_restore_is_finished_from_where_it_stopped() {
        let a = archived();
        let mut partial = restored();
        partial.versions.truncate(3);
        partial.current_version = 3;
        let line = decide(&a, Some(&partial), OnConflict::Fail);
        assert_eq!((line.action, line.from_version), (Action::Create, Some(4)));
        assert_eq!(line.target_version, 3);
        // Stopped between version 4's placeholder and its destroy.
        partial.versions.push(v(4, "placeholder", ""));
        partial.current_version = 4;
        let line = decide(&a, Some(&partial), OnConflict::Fail);
        assert_eq!((line.action, line.from_version), (Action::Create, Some(4)));
        assert!(line.placeholder_written);
        // Every version written, the metadata not yet.
        let mut no_metadata = restored();
        no_metadata.custom_metadata.clear();
        let line = decide(&a, Some(&no_metadata), OnConflict::Fail);
        assert_eq!((line.action, line.from_version), (Action::Create, None));
    }

    #[test]
    fn a_different_history_is_a_conflict_never_rewritten() {
        let a = archived();
        let mut other = restored();
        other.versions[1] = v(2, "live", "changed");
        other.versions[4] = v(5, "live", "changed too");
        for (policy, action) in [
            (OnConflict::Skip, Action::Skip),
            (OnConflict::Fail, Action::Conflict),
            (OnConflict::Overwrite, Action::Overwrite),
        ] {
            let line = decide(&a, Some(&other), policy);
            assert_eq!(line.action, action, "{policy:?}");
            assert!(line.reason.unwrap().contains("at version 2"));
        }
        // A deleted version in the archive is never taken for a live one in the target.
        let mut live = restored();
        live.versions[2] = v(3, "live", "three");
        assert_eq!(
            decide(&a, Some(&live), OnConflict::Fail).action,
            Action::Conflict
        );
        // A target ahead of the archive.
        let mut ahead = restored();
        ahead.versions.push(v(6, "live", "six"));
        ahead.current_version = 6;
        let line = decide(&a, Some(&ahead), OnConflict::Fail);
        assert!(line.reason.unwrap().contains("beyond the archive's 5"));
    }

    #[test]
    fn overwrite_appends_once_and_never_without_data() {
        let a = archived();
        let mut other = secret(vec![v(1, "live", "theirs")]);
        assert_eq!(
            decide(&a, Some(&other), OnConflict::Overwrite).action,
            Action::Overwrite
        );
        // After the overwrite, its current data and metadata are the archive's: a rerun
        // skips instead of appending again.
        other.versions.push(v(2, "live", "five"));
        other.current_version = 2;
        assert_eq!(
            decide(&a, Some(&other), OnConflict::Overwrite).action,
            Action::Skip
        );
        let mut deleted_now = archived();
        deleted_now.versions[3] = v(5, "deleted", "");
        let line = decide(&deleted_now, Some(&other), OnConflict::Overwrite);
        assert_eq!(line.action, Action::Conflict);
    }
}
