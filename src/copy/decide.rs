//! The two-way decision of `coldvault sync`, pure: what to do with one item given what each
//! side holds now and what both held at the end of the last sync.
//!
//! Each side's state of an item is [`SideState`]: present (with a *stamp* — a digest of its
//! current version id and metadata, which changes whenever the item changes on that side — and
//! a *content* digest — value, content type, tags, `enabled`/`nbf`/`exp`, which is equal on both
//! sides when they hold the same thing), soft-deleted, or absent. The last sync's state is the
//! pair of stamps it recorded ([`Last`], see [`super::state`]). Then:
//!
//! - same content on both sides: in sync;
//! - present on one side only: copy it, unless the last sync saw it on the other side and this
//!   side has not changed it since — then the other side deleted it, and the deletion is
//!   propagated as a soft-delete; if this side changed it meanwhile, it is a conflict;
//! - present on both, different: the side that changed since the last sync wins (a new version
//!   on the other); both changed, or no last state to tell, is a conflict;
//! - conflicts are reported and skipped, unless `--prefer a|b|newest` picks a side (newest: the
//!   later `updated` time, or the deletion time of a soft-deleted side; a tie stays a conflict).
//!
//! Without a state file every item has no last state: the first run is a union and deletes
//! nothing.

use serde::Serialize;

/// An item present on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Digest of the current version id and metadata: changes when the item changes here.
    pub stamp: String,
    /// Digest of what a copy carries (value, content type, tags, writable attributes): equal
    /// on both sides when they hold the same thing.
    pub content: [u8; 32],
    /// When the current version was last updated (Unix seconds), for `--prefer newest`.
    pub updated: Option<i64>,
}

/// Where an item stands on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideState {
    /// Live and read.
    Present(Observed),
    /// Soft-deleted (a copy onto this side recovers it first).
    Deleted {
        /// When it was deleted (Unix seconds), for `--prefer newest`.
        at: Option<i64>,
    },
    /// Neither live nor soft-deleted.
    Absent,
}

impl SideState {
    fn observed(&self) -> Option<&Observed> {
        match self {
            SideState::Present(o) => Some(o),
            _ => None,
        }
    }

    /// The time `--prefer newest` compares.
    fn time(&self) -> Option<i64> {
        match self {
            SideState::Present(o) => o.updated,
            SideState::Deleted { at } => *at,
            SideState::Absent => None,
        }
    }
}

/// The stamps the last sync recorded for an item, one per side (`None`: absent there).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Last {
    /// Side A's stamp.
    pub a: Option<String>,
    /// Side B's stamp.
    pub b: Option<String>,
}

/// `--prefer`: how a conflict is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// Side A's state wins.
    A,
    /// Side B's state wins.
    B,
    /// The side changed last wins.
    Newest,
}

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// The first vault.
    A,
    /// The second vault.
    B,
}

impl Which {
    /// The other side.
    pub fn other(self) -> Which {
        match self {
            Which::A => Which::B,
            Which::B => Which::A,
        }
    }

    /// `a` or `b`.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::A => "a",
            Which::B => "b",
        }
    }
}

/// What sync does with one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Decision {
    /// Both sides hold the same thing.
    InSync,
    /// Neither side has it (any more): forget it.
    Gone,
    /// Write `from`'s state onto the other side: a create (`new`) or a new version.
    Copy {
        /// The side whose state is copied.
        from: Which,
        /// Whether the other side lacks the item (create, or recover then write).
        new: bool,
        /// Why, for the report.
        reason: String,
    },
    /// Soft-delete the item on `on` (it was deleted on the other side).
    Delete {
        /// The side to delete on.
        on: Which,
        /// Why.
        reason: String,
    },
    /// Both sides changed it, or nothing tells which did: reported and skipped.
    Conflict {
        /// What conflicts.
        reason: String,
    },
}

/// Decides one item; see the module documentation.
pub fn decide(
    a: &SideState,
    b: &SideState,
    last: Option<&Last>,
    prefer: Option<Prefer>,
) -> Decision {
    match (a.observed(), b.observed()) {
        (None, None) => Decision::Gone,
        (Some(oa), Some(ob)) if oa.content == ob.content => Decision::InSync,
        (Some(oa), Some(ob)) => {
            let Some(last) = last else {
                return settle(
                    a,
                    b,
                    prefer,
                    "differs on both sides and no sync state tells which side changed".to_owned(),
                );
            };
            let a_changed = last.a.as_deref() != Some(oa.stamp.as_str());
            let b_changed = last.b.as_deref() != Some(ob.stamp.as_str());
            match (a_changed, b_changed) {
                (true, false) => copy(Which::A, false, "changed on a since the last sync"),
                (false, true) => copy(Which::B, false, "changed on b since the last sync"),
                (true, true) => settle(
                    a,
                    b,
                    prefer,
                    "changed on both sides since the last sync".to_owned(),
                ),
                (false, false) => settle(
                    a,
                    b,
                    prefer,
                    "differs on both sides since before the last sync (an unsettled conflict)"
                        .to_owned(),
                ),
            }
        }
        (Some(present), None) => one_sided(Which::A, present, last, a, b, prefer),
        (None, Some(present)) => one_sided(Which::B, present, last, a, b, prefer),
    }
}

/// An item present on `here` only.
fn one_sided(
    here: Which,
    present: &Observed,
    last: Option<&Last>,
    a: &SideState,
    b: &SideState,
    prefer: Option<Prefer>,
) -> Decision {
    let there = here.other();
    let (last_here, last_there) = match (last, here) {
        (Some(l), Which::A) => (l.a.as_deref(), l.b.as_deref()),
        (Some(l), Which::B) => (l.b.as_deref(), l.a.as_deref()),
        (None, _) => (None, None),
    };
    if last_there.is_none() {
        let reason = format!("new on {}", here.as_str());
        return copy(here, true, &reason);
    }
    if last_here == Some(present.stamp.as_str()) {
        return Decision::Delete {
            on: here,
            reason: format!(
                "deleted on {} since the last sync and unchanged on {}",
                there.as_str(),
                here.as_str()
            ),
        };
    }
    settle(
        a,
        b,
        prefer,
        format!(
            "deleted on {} but changed on {} since the last sync",
            there.as_str(),
            here.as_str()
        ),
    )
}

fn copy(from: Which, new: bool, reason: &str) -> Decision {
    Decision::Copy {
        from,
        new,
        reason: reason.to_owned(),
    }
}

/// A conflict, settled by `prefer` when given.
fn settle(a: &SideState, b: &SideState, prefer: Option<Prefer>, reason: String) -> Decision {
    let winner = match prefer {
        None => None,
        Some(Prefer::A) => Some(Which::A),
        Some(Prefer::B) => Some(Which::B),
        Some(Prefer::Newest) => match (a.time(), b.time()) {
            (Some(ta), Some(tb)) if ta > tb => Some(Which::A),
            (Some(ta), Some(tb)) if tb > ta => Some(Which::B),
            _ => None,
        },
    };
    let Some(winner) = winner else {
        let suffix = match prefer {
            Some(Prefer::Newest) => "; --prefer newest cannot tell which is newer",
            _ => "; skipped (settle it with --prefer a|b|newest)",
        };
        return Decision::Conflict {
            reason: format!("{reason}{suffix}"),
        };
    };
    let (win, _) = match winner {
        Which::A => (a, b),
        Which::B => (b, a),
    };
    let reason = format!("{reason}; {} preferred", winner.as_str());
    match win {
        SideState::Present(_) => {
            let other_present = match winner {
                Which::A => b.observed().is_some(),
                Which::B => a.observed().is_some(),
            };
            Decision::Copy {
                from: winner,
                new: !other_present,
                reason,
            }
        }
        SideState::Deleted { .. } | SideState::Absent => Decision::Delete {
            on: winner.other(),
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};
    use sha2::{Digest, Sha256};

    use super::*;

    fn present(stamp: &str, value: &str, updated: i64) -> SideState {
        SideState::Present(Observed {
            stamp: stamp.to_owned(),
            content: Sha256::digest(value.as_bytes()).into(),
            updated: Some(updated),
        })
    }

    fn last(a: Option<&str>, b: Option<&str>) -> Last {
        Last {
            a: a.map(str::to_owned),
            b: b.map(str::to_owned),
        }
    }

    #[test]
    fn equal_content_is_in_sync_whatever_the_stamps() {
        let d = decide(&present("a1", "x", 1), &present("b9", "x", 2), None, None);
        assert_eq!(d, Decision::InSync);
    }

    #[test]
    fn new_on_one_side_is_copied_to_the_other() {
        let d = decide(&present("a1", "x", 1), &SideState::Absent, None, None);
        assert!(
            matches!(
                d,
                Decision::Copy {
                    from: Which::A,
                    new: true,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = decide(
            &SideState::Absent,
            &present("b1", "x", 1),
            Some(&last(None, None)),
            None,
        );
        assert!(
            matches!(
                d,
                Decision::Copy {
                    from: Which::B,
                    new: true,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn a_new_version_on_one_side_becomes_a_new_version_on_the_other() {
        let l = last(Some("a1"), Some("b1"));
        let d = decide(
            &present("a2", "new", 5),
            &present("b1", "old", 1),
            Some(&l),
            None,
        );
        assert!(
            matches!(
                d,
                Decision::Copy {
                    from: Which::A,
                    new: false,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = decide(
            &present("a1", "old", 1),
            &present("b2", "new", 5),
            Some(&l),
            None,
        );
        assert!(
            matches!(
                d,
                Decision::Copy {
                    from: Which::B,
                    new: false,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn both_changed_is_a_conflict_settled_only_by_prefer() {
        let l = last(Some("a1"), Some("b1"));
        let a = present("a2", "from-a", 10);
        let b = present("b2", "from-b", 20);
        assert!(matches!(
            decide(&a, &b, Some(&l), None),
            Decision::Conflict { .. }
        ));
        assert!(matches!(
            decide(&a, &b, Some(&l), Some(Prefer::A)),
            Decision::Copy {
                from: Which::A,
                new: false,
                ..
            }
        ));
        assert!(matches!(
            decide(&a, &b, Some(&l), Some(Prefer::B)),
            Decision::Copy { from: Which::B, .. }
        ));
        assert!(matches!(
            decide(&a, &b, Some(&l), Some(Prefer::Newest)),
            Decision::Copy { from: Which::B, .. }
        ));
        let tie = present("b2", "from-b", 10);
        assert!(matches!(
            decide(&a, &tie, Some(&l), Some(Prefer::Newest)),
            Decision::Conflict { .. }
        ));
    }

    #[test]
    fn without_state_a_difference_is_a_conflict() {
        let d = decide(&present("a1", "x", 1), &present("b1", "y", 2), None, None);
        assert!(matches!(d, Decision::Conflict { .. }), "{d:?}");
    }

    #[test]
    fn a_deletion_is_propagated_only_with_state_and_only_when_unchanged() {
        let l = last(Some("a1"), Some("b1"));
        let d = decide(
            &present("a1", "x", 1),
            &SideState::Deleted { at: Some(5) },
            Some(&l),
            None,
        );
        assert!(matches!(d, Decision::Delete { on: Which::A, .. }), "{d:?}");
        // Without state: a union, nothing deleted.
        let d = decide(
            &present("a1", "x", 1),
            &SideState::Deleted { at: Some(5) },
            None,
            None,
        );
        assert!(
            matches!(
                d,
                Decision::Copy {
                    from: Which::A,
                    new: true,
                    ..
                }
            ),
            "{d:?}"
        );
        // Changed on a after b deleted it: a conflict, settled by prefer.
        let changed = present("a2", "y", 9);
        let deleted = SideState::Deleted { at: Some(5) };
        assert!(matches!(
            decide(&changed, &deleted, Some(&l), None),
            Decision::Conflict { .. }
        ));
        assert!(matches!(
            decide(&changed, &deleted, Some(&l), Some(Prefer::B)),
            Decision::Delete { on: Which::A, .. }
        ));
        assert!(matches!(
            decide(&changed, &deleted, Some(&l), Some(Prefer::Newest)),
            Decision::Copy {
                from: Which::A,
                new: true,
                ..
            }
        ));
    }

    #[test]
    fn an_item_gone_from_both_sides_is_forgotten() {
        let l = last(Some("a1"), Some("b1"));
        let d = decide(
            &SideState::Absent,
            &SideState::Deleted { at: None },
            Some(&l),
            None,
        );
        assert_eq!(d, Decision::Gone);
    }

    /// One side of the simulation: name → (stamp, value, updated), and soft-deleted names.
    #[derive(Debug, Default, Clone)]
    struct Model {
        live: BTreeMap<String, (String, String, i64)>,
        deleted: BTreeMap<String, i64>,
    }

    impl Model {
        fn state(&self, name: &str) -> SideState {
            match self.live.get(name) {
                Some((stamp, value, updated)) => present(stamp, value, *updated),
                None => match self.deleted.get(name) {
                    Some(at) => SideState::Deleted { at: Some(*at) },
                    None => SideState::Absent,
                },
            }
        }

        fn write(&mut self, name: &str, value: &str, clock: &mut i64) {
            *clock += 1;
            self.deleted.remove(name);
            let stamp = format!("{name}@{clock}");
            self.live
                .insert(name.to_owned(), (stamp, value.to_owned(), *clock));
        }

        fn delete(&mut self, name: &str, clock: &mut i64) {
            *clock += 1;
            if self.live.remove(name).is_some() {
                self.deleted.insert(name.to_owned(), *clock);
            }
        }

        fn values(&self) -> BTreeMap<String, String> {
            self.live
                .iter()
                .map(|(k, (_, v, _))| (k.clone(), v.clone()))
                .collect()
        }
    }

    /// One sync run on the models, as `coldvault sync --state` runs it: decide every name,
    /// apply, record the stamps of items left equal on both sides (or conflicting).
    fn run(
        a: &mut Model,
        b: &mut Model,
        state: &mut BTreeMap<String, Last>,
        prefer: Option<Prefer>,
        clock: &mut i64,
    ) {
        let names: std::collections::BTreeSet<String> = a
            .live
            .keys()
            .chain(b.live.keys())
            .chain(a.deleted.keys())
            .chain(b.deleted.keys())
            .chain(state.keys())
            .cloned()
            .collect();
        for name in names {
            let decision = decide(&a.state(&name), &b.state(&name), state.get(&name), prefer);
            match decision {
                Decision::Copy { from, .. } => {
                    let (src, dst) = match from {
                        Which::A => (&*a, &mut *b),
                        Which::B => (&*b, &mut *a),
                    };
                    let value = src.live[&name].1.clone();
                    dst.write(&name, &value, clock);
                }
                Decision::Delete { on, .. } => match on {
                    Which::A => a.delete(&name, clock),
                    Which::B => b.delete(&name, clock),
                },
                Decision::InSync | Decision::Gone => {}
                // An unsettled conflict keeps the last state, so the next run sees the same
                // conflict rather than mistaking one side for new.
                Decision::Conflict { .. } => continue,
            }
            let stamp = |m: &Model| m.live.get(&name).map(|(s, _, _)| s.clone());
            match (stamp(a), stamp(b)) {
                (None, None) => {
                    state.remove(&name);
                }
                (sa, sb) => {
                    state.insert(name.clone(), Last { a: sa, b: sb });
                }
            }
        }
    }

    fn random_edits(
        rng: &mut rand::rngs::StdRng,
        side: &mut Model,
        names: &[String],
        clock: &mut i64,
    ) {
        for _ in 0..rng.gen_range(1..5) {
            let name = &names[rng.gen_range(0..names.len())];
            match rng.gen_range(0..3) {
                0 => side.delete(name, clock),
                _ => {
                    let value = format!("v{}", rng.r#gen::<u32>());
                    side.write(name, &value, clock);
                }
            }
        }
    }

    #[test]
    fn ten_alternating_runs_with_random_edits_converge() {
        let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
        for seed in 0..200u64 {
            for prefer in [Some(Prefer::A), Some(Prefer::B), Some(Prefer::Newest), None] {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let (mut a, mut b) = (Model::default(), Model::default());
                let mut state = BTreeMap::new();
                let mut clock = 0i64;
                for round in 0..10 {
                    // Alternating: one side is edited, sometimes both (conflicts).
                    if round % 2 == 0 || rng.gen_bool(0.3) {
                        random_edits(&mut rng, &mut a, &names, &mut clock);
                    }
                    if round % 2 == 1 || rng.gen_bool(0.3) {
                        random_edits(&mut rng, &mut b, &names, &mut clock);
                    }
                    run(&mut a, &mut b, &mut state, prefer, &mut clock);
                    if prefer.is_some() {
                        // A conflict settled by a side, or by time (the clock is strict),
                        // leaves nothing unsettled.
                        assert_eq!(
                            a.values(),
                            b.values(),
                            "seed {seed} round {round} {prefer:?}"
                        );
                    }
                }
                // Without --prefer, conflicts stay; one more run after the last edits, now
                // preferring a, settles them all.
                run(&mut a, &mut b, &mut state, Some(Prefer::A), &mut clock);
                assert_eq!(a.values(), b.values(), "seed {seed} final {prefer:?}");
                // And a run with nothing changed does nothing.
                let (a0, b0) = (a.values(), b.values());
                let stamps: Vec<_> = a.live.values().map(|v| v.0.clone()).collect();
                run(&mut a, &mut b, &mut state, prefer, &mut clock);
                assert_eq!((a0, b0), (a.values(), b.values()));
                assert_eq!(
                    stamps,
                    a.live.values().map(|v| v.0.clone()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn a_deletion_on_one_side_reaches_the_other_only_with_state() {
        let (mut a, mut b) = (Model::default(), Model::default());
        let mut clock = 0;
        a.write("db", "pw", &mut clock);
        let mut state = BTreeMap::new();
        run(&mut a, &mut b, &mut state, None, &mut clock);
        assert_eq!(b.values().get("db").map(String::as_str), Some("pw"));
        b.delete("db", &mut clock);
        run(&mut a, &mut b, &mut state, None, &mut clock);
        assert!(a.live.is_empty() && b.live.is_empty(), "{a:?} {b:?}");
        assert!(a.deleted.contains_key("db"), "soft-deleted, not purged");
        // Without state the deleted item comes back.
        let (mut a, mut b) = (Model::default(), Model::default());
        a.write("db", "pw", &mut clock);
        run(&mut a, &mut b, &mut BTreeMap::new(), None, &mut clock);
        b.delete("db", &mut clock);
        run(&mut a, &mut b, &mut BTreeMap::new(), None, &mut clock);
        assert_eq!(b.values().get("db").map(String::as_str), Some("pw"));
    }
}
