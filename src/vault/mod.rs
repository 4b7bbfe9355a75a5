//! Azure Key Vault access behind the `VaultReader` / `VaultWriter` traits.
