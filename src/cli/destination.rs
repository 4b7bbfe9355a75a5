//! Where archives go: `backup`'s options for archives kept off the machine, and the
//! `--trusted-signer` flag of the commands that read one. `crate::commands::destination`
//! turns them into uploads and signature checks.

use std::path::PathBuf;

/// `backup`'s options for archives kept off the machine.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Lock the new archive against deletion and change for N days: Azure version-level
    /// immutability (the container must have it enabled) or S3 Object Lock in COMPLIANCE
    /// mode (the bucket must have Object Lock enabled). Refused anywhere else.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub lock_days: Option<u32>,

    /// Sign the encrypted archive with this Ed25519 OpenSSH private key (no passphrase):
    /// the signature, as `ssh-keygen -Y sign -n coldvault` makes it, goes beside the
    /// archive as ARCHIVE.sig.
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,

    /// Sign in to Blob Storage with this method of the credential chain (env,
    /// workload-identity, managed-identity, azure-cli), reading COLDVAULT_OUTPUT_TENANT_ID,
    /// COLDVAULT_OUTPUT_CLIENT_ID, COLDVAULT_OUTPUT_CLIENT_SECRET… in place of AZURE_*: the
    /// storage account's own identity, often in another tenant.
    #[arg(long, value_name = "METHOD", env = "COLDVAULT_OUTPUT_AUTH")]
    pub output_auth: Option<String>,
}

/// `--trusted-signer` for the commands that read an archive to act on it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SignerArgs {
    /// Refuse (exit 4) an archive without a valid signature by one of these keys: an
    /// `ssh-ed25519 AAAA…` public key, or a file of them (one per line, allowed-signers
    /// lines too). Repeatable. The signature is ARCHIVE.sig beside the archive.
    #[arg(long = "trusted-signer", value_name = "PUBKEY|FILE")]
    pub trusted_signers: Vec<String>,
}
