//! Integration tests.
mod emulator;
mod support;
mod vault;
