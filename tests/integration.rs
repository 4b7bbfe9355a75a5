//! Integration tests.
mod archive;
mod backup;
mod cli;
mod copy;
mod demo;
mod docs;
mod emulator;
mod emulator_arm;
mod emulator_keys;
mod emulator_persist;
mod network;
mod outputs;
mod pacing;
mod reader_limits;
mod restore;
mod support;
mod vault;
