//! Integration tests.
mod archive;
mod backup;
mod cli;
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
mod storage;
mod support;
mod vault;
