//! Integration tests.
mod emulator;
mod support;
mod vault;
mod archive;
mod cli;
