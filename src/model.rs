//! The item model every layer shares: what kinds of items there are.
//!
//! The archive (`crate::archive`, where it is `Kind`), the Key Vault client (`crate::vault`,
//! where it is `ItemKind`) and the engine all name the same [`ItemKind`], so nothing converts
//! one kind into another. This module imports nothing else of the crate: every layer may use
//! it. Its serde form (`secret`, `key`, `certificate`) is the archive format's and the JSON
//! output's, so it must not change.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The three kinds of Key Vault items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A secret (`/secrets`).
    Secret,
    /// A key (`/keys`).
    Key,
    /// A certificate (`/certificates`).
    Certificate,
}

impl ItemKind {
    /// Every kind, in the order backups visit them and counts and tables list them.
    pub const ALL: [ItemKind; 3] = [ItemKind::Secret, ItemKind::Key, ItemKind::Certificate];

    /// The lower-case singular word (`secret`, `key`, `certificate`).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Secret => "secret",
            ItemKind::Key => "key",
            ItemKind::Certificate => "certificate",
        }
    }

    /// The plural word, which is also the archive folder of this kind's entries (`secrets`).
    pub fn folder(self) -> &'static str {
        match self {
            ItemKind::Secret => "secrets",
            ItemKind::Key => "keys",
            ItemKind::Certificate => "certificates",
        }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive format and `--json` output spell kinds this way.
    #[test]
    fn kinds_keep_their_serialized_names() {
        let text = serde_json::to_string(&ItemKind::ALL).unwrap();
        assert_eq!(text, r#"["secret","key","certificate"]"#);
        assert_eq!(ItemKind::Certificate.folder(), "certificates");
        assert_eq!(ItemKind::Key.to_string(), "key");
    }
}
