//! The local Key Vault (`coldvault emulator`): see `docs/EMULATOR.md`.
