//! The archive format: tar, zstd and age, with a JSON manifest (`docs/FORMAT.md`).
