//! Integration tests.
mod emulator;
mod support;
