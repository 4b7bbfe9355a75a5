//! Integration tests.
mod backup;
mod emulator;
mod support;
mod vault;
mod archive;
mod cli;
