//! `restore`'s and `diff`'s plan as the commands name it: the engine's types
//! (`crate::engine::restore`, `crate::engine::item`) under the paths they had before the
//! engine existed. The command-line values of `--mode` and `--on-conflict` are in
//! `crate::cli::restore` (clap stays out of the engine).

pub use crate::engine::item::{Fingerprint, ItemHead, vault_attributes};
pub use crate::engine::restore::plan::{
    Action, Method, Mode, NativeTarget, OnConflict, PlannedItem, Policy, REFUSED_NATIVELY,
    TargetState, compare, decide, resume_point,
};
pub use crate::engine::restore::target::{
    LiveProps, LiveView, TargetListing, inspect_all, inspect_live, list_target, target_state,
};
