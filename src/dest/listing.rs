//! What `list` and `forget` know of an archive without opening it: the vault and time from
//! its name (`VAULT-YYYYMMDDTHHMMSSZ[-N].tar.zst.age`), its size from the store, and item
//! counts from its sidecar `….tar.zst.age.json` — a small, unencrypted, non-secret summary
//! the backup writes beside a remote archive (vault, URL, time, size, counts). A signature
//! `….tar.zst.age.sig` may sit beside it too. Neither is needed to read the archive.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DestError, ObjectInfo, ObjectStore};
use crate::archive::{Counts, FILE_SUFFIX};

/// The sidecar's name suffix (after the archive's full name).
pub const SIDECAR_SUFFIX: &str = ".json";
/// The detached signature's name suffix (after the archive's full name).
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// The sidecar: what `list` shows, never anything secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Always `coldvault-archive-summary`.
    pub format: String,
    /// The vault's name.
    pub vault: String,
    /// The vault's URL.
    pub url: String,
    /// When the archive was made (its manifest's `created`).
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The archive's size in bytes.
    pub bytes: u64,
    /// What it holds.
    pub counts: Counts,
    /// Whether a signature was written beside it.
    #[serde(default)]
    pub signed: bool,
}

/// The `format` of every sidecar.
pub const SIDECAR_FORMAT: &str = "coldvault-archive-summary";

/// An archive found at a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveListing {
    /// Its object or file name.
    pub name: String,
    /// The vault, from the name.
    pub vault: String,
    /// When it was made, from the name (UTC, to the second).
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Its size in bytes.
    pub bytes: u64,
    /// Item counts, from the sidecar when there is one.
    pub counts: Option<Counts>,
    /// A signature sits beside it.
    pub signed: bool,
}

/// `2026-11-30T17:00:00Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The vault and time an archive name carries, or `None` for any other name.
pub fn parse_archive_name(name: &str) -> Option<(String, OffsetDateTime)> {
    let stem = name.strip_suffix(FILE_SUFFIX)?;
    // A numbered alternative (`-1` … `-99`) comes after the time.
    let stem = match stem.rsplit_once('-') {
        Some((head, n))
            if !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => stem,
    };
    let (vault, stamp) = stem.rsplit_once('-')?;
    if vault.is_empty() || stamp.len() != 16 {
        return None;
    }
    let b = stamp.as_bytes();
    if b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some((vault.to_owned(), date.with_time(at).assume_utc()))
}

/// Every archive at the destination, newest first within each vault, vaults by name.
pub async fn list_archives(store: &dyn ObjectStore) -> Result<Vec<ArchiveListing>, DestError> {
    let objects = store.list().await?;
    let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let mut out = Vec::new();
    for ObjectInfo { name, size, .. } in &objects {
        let Some((vault, created)) = parse_archive_name(name) else {
            continue;
        };
        let sidecar = format!("{name}{SIDECAR_SUFFIX}");
        let counts = if names.contains(sidecar.as_str()) {
            read_sidecar(store, &sidecar).await.map(|s| s.counts)
        } else {
            None
        };
        out.push(ArchiveListing {
            name: name.clone(),
            vault,
            created,
            bytes: *size,
            counts,
            signed: names.contains(format!("{name}{SIGNATURE_SUFFIX}").as_str()),
        });
    }
    out.sort_by(|a, b| {
        a.vault
            .cmp(&b.vault)
            .then(b.created.cmp(&a.created))
            .then(b.name.cmp(&a.name))
    });
    Ok(out)
}

/// A sidecar's content; `None` when it cannot be read or is not one (listing goes on).
async fn read_sidecar(store: &dyn ObjectStore, name: &str) -> Option<Sidecar> {
    let mut response = store.get_from(name, 0).await.ok()?;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 * 1024 {
            return None;
        }
    }
    serde_json::from_slice::<Sidecar>(&body)
        .ok()
        .filter(|s| s.format == SIDECAR_FORMAT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn archive_names_give_vault_and_time() {
        assert_eq!(
            parse_archive_name("prod-kv-20261130T170000Z.tar.zst.age"),
            Some(("prod-kv".to_owned(), datetime!(2026-11-30 17:00:00 UTC)))
        );
        assert_eq!(
            parse_archive_name("prod-kv-20261130T170000Z-2.tar.zst.age"),
            Some(("prod-kv".to_owned(), datetime!(2026-11-30 17:00:00 UTC)))
        );
        assert_eq!(
            parse_archive_name("prod-kv-20261130T170000Z.tar.zst.age.json"),
            None
        );
        assert_eq!(parse_archive_name("notes.tar.zst.age"), None);
        assert_eq!(parse_archive_name("kv-20261330T170000Z.tar.zst.age"), None);
        assert_eq!(parse_archive_name("-20261130T170000Z.tar.zst.age"), None);
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(
            format_time(datetime!(2026-01-02 03:04:05 UTC)),
            "2026-01-02T03:04:05Z"
        );
    }
}
