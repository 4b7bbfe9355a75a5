//! Entry paths inside the tar stream (`docs/FORMAT.md`, "Layout"), and the rules that keep a
//! path safe to extract: relative, no `..`, no empty or `.` components, plain ASCII.
//!
//! Item names and version ids are restricted to `[0-9A-Za-z-]` (Key Vault's own rule), so
//! every path the writer builds is safe by construction; the reader still checks every path
//! it meets, since an archive may come from anywhere.

use super::error::VerifyError;
use super::manifest::{EntryType, Kind};

/// The first entry of every archive.
pub const FORMAT_MARKER_PATH: &str = "coldvault-archive.json";

/// The last entry of every archive.
pub const MANIFEST_PATH: &str = "manifest.json";

/// Content type of a PKCS#12 certificate export (Key Vault's value).
pub const PKCS12_CONTENT_TYPE: &str = "application/x-pkcs12";

/// Content type of a PEM certificate export (Key Vault's value).
pub const PEM_CONTENT_TYPE: &str = "application/x-pem-file";

/// Why a name or version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not 1–127 characters of `[0-9A-Za-z-]`.
    #[error("invalid {what} {value:?}: expected 1-127 characters of 0-9, a-z, A-Z and -")]
    Invalid {
        /// "name" or "version".
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The entry type needs a version and none was given.
    #[error("a {0} entry needs a version")]
    MissingVersion(&'static str),
    /// The entry type does not exist for this kind.
    #[error("a {0} entry cannot belong to a {1}")]
    WrongKind(&'static str, Kind),
    /// A certificate export with a content type that is neither PFX nor PEM.
    #[error("certificate export content type must be {PKCS12_CONTENT_TYPE} or {PEM_CONTENT_TYPE}")]
    ExportContentType,
}

/// Checks a Key Vault item name or version id: 1–127 characters of `[0-9A-Za-z-]`.
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 127
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            what,
            value: value.chars().take(140).collect(),
        })
    }
}

/// The canonical path of an entry. Every entry of a valid archive sits at the path this
/// returns for its manifest fields.
pub fn entry_path(
    entry_type: EntryType,
    kind: Kind,
    name: &str,
    version: Option<&str>,
    content_type: Option<&str>,
) -> Result<String, NameError> {
    check_name("name", name)?;
    if let Some(version) = version {
        check_name("version", version)?;
    }
    let folder = kind.folder();
    let need_version = || version.ok_or(NameError::MissingVersion(entry_type.as_str()));
    let only = |wanted: Kind| {
        if kind == wanted {
            Ok(())
        } else {
            Err(NameError::WrongKind(entry_type.as_str(), kind))
        }
    };
    Ok(match entry_type {
        EntryType::SecretVersion => {
            only(Kind::Secret)?;
            format!("{folder}/{name}/versions/{}.json", need_version()?)
        }
        EntryType::Backup => format!("{folder}/{name}/backup.bin"),
        EntryType::Policy => {
            if kind == Kind::Secret {
                return Err(NameError::WrongKind(entry_type.as_str(), kind));
            }
            format!("{folder}/{name}/policy.json")
        }
        EntryType::KeyPublicJwk => {
            only(Kind::Key)?;
            format!("{folder}/{name}/public/{}.jwk.json", need_version()?)
        }
        EntryType::CertificatePublic => {
            only(Kind::Certificate)?;
            format!("{folder}/{name}/public/{}.cer", need_version()?)
        }
        EntryType::CertificateExport => {
            only(Kind::Certificate)?;
            let extension = match content_type {
                Some(PKCS12_CONTENT_TYPE) => "pfx",
                Some(PEM_CONTENT_TYPE) => "pem",
                _ => return Err(NameError::ExportContentType),
            };
            format!("{folder}/{name}/export/{}.{extension}", need_version()?)
        }
    })
}

/// Normalises and checks a path read from a tar header. Returns the path without a leading
/// `./` (which `tar -C dir .` writes) and without a trailing `/` (directories).
pub fn check_tar_path(raw: &[u8]) -> Result<String, VerifyError> {
    let shown = String::from_utf8_lossy(raw)
        .chars()
        .take(300)
        .collect::<String>();
    let unsafe_path = |why| VerifyError::UnsafePath {
        path: shown.clone(),
        why,
    };
    let text = std::str::from_utf8(raw).map_err(|_| unsafe_path("not UTF-8"))?;
    if text.starts_with('/') || text.starts_with('\\') || text.as_bytes().get(1) == Some(&b':') {
        return Err(unsafe_path("absolute path"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) || text.contains('\\') {
        return Err(unsafe_path(
            "characters outside printable ASCII or a backslash",
        ));
    }
    let text = text.strip_prefix("./").unwrap_or(text);
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.is_empty() || text == "." {
        // The archive root itself (`./`), written by `tar -C dir .`.
        return Ok(String::new());
    }
    for component in text.split('/') {
        match component {
            ".." => return Err(unsafe_path("parent-directory component (..)")),
            "" | "." => return Err(unsafe_path("empty or . component")),
            _ => {}
        }
    }
    Ok(text.to_owned())
}

/// If `path` is a secret version's canonical path, its name and version.
pub fn parse_secret_version_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("secrets/")?;
    let (name, rest) = rest.split_once('/')?;
    let version = rest.strip_prefix("versions/")?.strip_suffix(".json")?;
    Some((name, version))
}

/// What a canonical entry path says: the entry's type, the item's kind and name, and the
/// version it names (secret versions, public parts, exports). `None` for any other path (the
/// format marker, the manifest, a path no writer makes). The inverse of [`entry_path`].
pub fn parse_entry_path(path: &str) -> Option<(EntryType, Kind, &str, Option<&str>)> {
    let (folder, rest) = path.split_once('/')?;
    let kind = Kind::ALL.into_iter().find(|k| k.folder() == folder)?;
    let (name, rest) = rest.split_once('/')?;
    let parsed = match (kind, rest) {
        (_, "backup.bin") => (EntryType::Backup, None),
        (Kind::Key | Kind::Certificate, "policy.json") => (EntryType::Policy, None),
        (Kind::Secret, _) => {
            let version = rest.strip_prefix("versions/")?.strip_suffix(".json")?;
            (EntryType::SecretVersion, Some(version))
        }
        (Kind::Key, _) => {
            let version = rest.strip_prefix("public/")?.strip_suffix(".jwk.json")?;
            (EntryType::KeyPublicJwk, Some(version))
        }
        (Kind::Certificate, _) => {
            if let Some(version) = rest.strip_prefix("public/") {
                (
                    EntryType::CertificatePublic,
                    Some(version.strip_suffix(".cer")?),
                )
            } else {
                let file = rest.strip_prefix("export/")?;
                let version = file
                    .strip_suffix(".pfx")
                    .or_else(|| file.strip_suffix(".pem"))?;
                (EntryType::CertificateExport, Some(version))
            }
        }
    };
    if name.is_empty() || parsed.1.is_some_and(|v| v.is_empty() || v.contains('/')) {
        return None;
    }
    Some((parsed.0, kind, name, parsed.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(
            entry_path(
                EntryType::SecretVersion,
                Kind::Secret,
                "db",
                Some("v1"),
                None
            ),
            Ok("secrets/db/versions/v1.json".to_owned())
        );
        assert_eq!(
            entry_path(EntryType::Backup, Kind::Key, "k", None, None),
            Ok("keys/k/backup.bin".to_owned())
        );
        assert_eq!(
            entry_path(
                EntryType::CertificateExport,
                Kind::Certificate,
                "c",
                Some("v"),
                Some(PEM_CONTENT_TYPE)
            ),
            Ok("certificates/c/export/v.pem".to_owned())
        );
        assert!(entry_path(EntryType::Backup, Kind::Key, "../x", None, None).is_err());
        assert!(entry_path(EntryType::SecretVersion, Kind::Key, "k", Some("v"), None).is_err());
    }

    /// Every path [`entry_path`] makes parses back to what made it.
    #[test]
    fn entry_paths_parse_back() {
        let cases = [
            (EntryType::SecretVersion, Kind::Secret, Some("v1"), None),
            (EntryType::Backup, Kind::Secret, None, None),
            (EntryType::Backup, Kind::Key, None, None),
            (EntryType::Policy, Kind::Key, None, None),
            (EntryType::KeyPublicJwk, Kind::Key, Some("k1"), None),
            (
                EntryType::CertificatePublic,
                Kind::Certificate,
                Some("c1"),
                None,
            ),
            (EntryType::Policy, Kind::Certificate, None, None),
            (
                EntryType::CertificateExport,
                Kind::Certificate,
                Some("c1"),
                Some(PKCS12_CONTENT_TYPE),
            ),
            (
                EntryType::CertificateExport,
                Kind::Certificate,
                Some("c1"),
                Some(PEM_CONTENT_TYPE),
            ),
        ];
        for (entry_type, kind, version, content_type) in cases {
            let path = entry_path(entry_type, kind, "item-1", version, content_type).unwrap();
            assert_eq!(
                parse_entry_path(&path),
                Some((entry_type, kind, "item-1", version)),
                "{path}"
            );
        }
        for other in [
            MANIFEST_PATH,
            FORMAT_MARKER_PATH,
            "secrets/a/policy.json",
            "vaults/a/backup.bin",
            "secrets/a/versions/.json",
            "keys/a/public/x/y.jwk.json",
        ] {
            assert_eq!(parse_entry_path(other), None, "{other}");
        }
    }

    #[test]
    fn tar_paths() {
        assert_eq!(
            check_tar_path(b"./secrets/a/").ok(),
            Some("secrets/a".to_owned())
        );
        assert!(check_tar_path(b"/etc/passwd").is_err());
        assert!(check_tar_path(b"secrets/../../x").is_err());
        assert!(check_tar_path(b"secrets//x").is_err());
        assert!(check_tar_path(b"C:/x").is_err());
    }
}
