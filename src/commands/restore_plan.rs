//! `restore`'s and `diff`'s plan as the commands name it: the engine's types
//! (`crate::engine::restore`, `crate::engine::item`) under the paths they had before the
//! engine existed, and the command-line values of `--mode` and `--on-conflict` (clap stays
//! out of the engine, so their parsers live here).

use clap::builder::PossibleValue;

pub use crate::engine::item::{Fingerprint, ItemHead, vault_attributes};
pub use crate::engine::restore::plan::{
    Action, Method, Mode, NativeTarget, OnConflict, PlannedItem, Policy, REFUSED_NATIVELY,
    TargetState, compare, decide, resume_point,
};
pub use crate::engine::restore::target::{
    LiveProps, LiveView, TargetListing, inspect_all, inspect_live, list_target, target_state,
};

impl clap::ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Mode::Auto, Mode::Native, Mode::Plain]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Mode::Auto => PossibleValue::new("auto")
                .help("Native where the target accepts the blob, plain otherwise"),
            Mode::Native => PossibleValue::new("native")
                .help("Native backup blobs only (same subscription and geography)"),
            Mode::Plain => PossibleValue::new("plain")
                .help("Values only: secrets by value, certificates with an exportable key"),
        })
    }
}

impl clap::ValueEnum for OnConflict {
    fn value_variants<'a>() -> &'a [Self] {
        &[OnConflict::Skip, OnConflict::Overwrite, OnConflict::Fail]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            OnConflict::Skip => PossibleValue::new("skip").help("Leave it as it is"),
            OnConflict::Overwrite => PossibleValue::new("overwrite").help(
                "Write the archive's state as a new version (plain); native never deletes \
                 anything",
            ),
            OnConflict::Fail => PossibleValue::new("fail")
                .help("Refuse to restore anything while a conflict exists"),
        })
    }
}
