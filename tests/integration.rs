//! Integration tests.
mod archive;
mod backup;
mod cli;
mod demo;
mod docs;
mod emulator;
mod emulator_keys;
mod pacing;
mod restore;
mod support;
mod vault;
