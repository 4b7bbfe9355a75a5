//! Integration tests.
mod backup;
mod demo;
mod docs;
mod restore;
mod emulator;
mod emulator_keys;
mod support;
mod vault;
mod archive;
mod cli;
