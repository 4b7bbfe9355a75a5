//! coldvault: cold, encrypted, offline copies of Azure Key Vaults, and the way back.
//!
//! The library is drawn along the lines crates could later be split on:
//! [`archive`] is the on-disk format (no Azure, no command line, no printing), [`vault`] is
//! Azure Key Vault access (no archive knowledge), [`commands`] joins them one subcommand per
//! file, [`output`] renders human text, JSON and progress, and [`emulator`] is the local Key
//! Vault that every end-to-end test runs against. [`model`] is the item kind every layer
//! shares, and [`engine`] runs the verbs (restore, diff) over store traits, with no command
//! line and no printing (`docs/ARCHITECTURE.md`). [`fleet`] finds vaults through Azure
//! Resource Manager and spreads them over shards.
//! [`atomic_file`] (temp file, fsync, rename, folder fsync) imports nothing else of the crate,
//! so the archive writer, the commands and the emulator all write files through it.
//! [`copy`] moves items vault to vault (`coldvault copy`, `coldvault sync`).

pub mod archive;
pub mod atomic_file;
pub mod cli;
pub mod commands;
pub mod copy;
pub mod dest;
pub mod emulator;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod kv;
pub mod model;
pub mod output;
pub mod signing;
pub mod usage;
pub mod vault;
