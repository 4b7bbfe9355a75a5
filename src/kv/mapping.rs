//! KV paths and Key Vault names, KV data and Key Vault values, `custom_metadata` and tags:
//! the two-way mapping between a KV v2 mount and a Key Vault, pure (no I/O).
//!
//! A KV secret at a path holds a map of keys to values, in numbered versions, with one
//! `custom_metadata` map per secret; a Key Vault secret holds one string per version, with a
//! content type and tags per version. The mapping has two granularities ([`Granularity`]): a
//! Key Vault secret per KV secret (the whole map as JSON) or per KV key. Names go through a
//! [`NameTemplate`] whose placeholders are encoded readably and reversibly
//! ([`encode_path`], [`encode_key`]): `[0-9A-Za-z]` as is, `/` as `--`, `-` as is where it
//! cannot be misread, every other byte of the UTF-8 text as `-` and two hex digits. Key Vault
//! names are case-insensitive, so names equal but for case collide ([`plan_names`] refuses
//! them before anything is written).
//!
//! Values map so that Key Vault → KV → Key Vault gives back the original: a value coldvault
//! wrote into KV from Key Vault is `{"value": <string>}` with its content type kept in
//! `custom_metadata["coldvault-content-type"]` ([`CONTENT_TYPE_KEY`]); a JSON object value
//! (content type `application/json`) becomes the KV data itself. Ownership of what coldvault
//! writes is the tag `coldvault-source` ([`MARKER_TAG`], [`marker_value`], [`is_owned`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use age::secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{KvData, KvSecret, KvVersion};
use crate::vault::{Attributes, Tags};

/// The tag (and `custom_metadata` key) that marks an item coldvault wrote, holding
/// [`marker_value`] of the store it was copied from.
pub const MARKER_TAG: &str = "coldvault-source";

/// The `custom_metadata` key that holds the Key Vault content type of a value coldvault
/// wrote into KV as `{"value": <string>}` ([`NO_CONTENT_TYPE`]: none).
pub const CONTENT_TYPE_KEY: &str = "coldvault-content-type";

/// The [`CONTENT_TYPE_KEY`] entry of a value without a content type. Vault and OpenBao refuse
/// an empty `custom_metadata` value ("must be 0 < len(value) <= 512"), and a media type always
/// holds a `/`, so this word is never a real content type. An empty entry (written by hand)
/// reads the same.
pub const NO_CONTENT_TYPE: &str = "none";

/// The content type of a whole KV data map written into Key Vault.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The longest Key Vault object name.
pub const MAX_NAME_LEN: usize = 127;

/// Key Vault's limits on tags: count, name length and value length (characters)
/// (<https://learn.microsoft.com/azure/key-vault/general/service-limits>).
pub const KEY_VAULT_MAX_TAGS: usize = 15;
/// See [`KEY_VAULT_MAX_TAGS`].
pub const KEY_VAULT_MAX_TAG_NAME: usize = 512;
/// See [`KEY_VAULT_MAX_TAGS`].
pub const KEY_VAULT_MAX_TAG_VALUE: usize = 256;

/// Vault's limits on `custom_metadata`: count, key length and value length (bytes)
/// (<https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#custom_metadata>).
pub const KV_MAX_METADATA: usize = 64;
/// See [`KV_MAX_METADATA`].
pub const KV_MAX_METADATA_KEY: usize = 128;
/// See [`KV_MAX_METADATA`].
pub const KV_MAX_METADATA_VALUE: usize = 512;

/// The longest marker value: a Key Vault tag value's limit.
const MARKER_MAX: usize = KEY_VAULT_MAX_TAG_VALUE;

/// How many hex digits of SHA-256 end a shortened marker value.
const MARKER_DIGEST_HEX: usize = 16;

/// One Key Vault secret per KV secret, or per key of a KV secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One Key Vault secret per KV secret: the whole key/value map as JSON.
    Secret,
    /// One Key Vault secret per key of a KV secret: that key's value.
    Key,
}

impl Granularity {
    /// The word used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Secret => "secret",
            Granularity::Key => "key",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a template or a name could not be made. Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The `--name-template` is not usable; `reason` says why.
    #[error("--name-template '{template}': {reason}")]
    Template {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path (and key) whose name is longer than Key Vault allows.
    #[error(
        "KV path '{path}'{} maps to a Key Vault name of {len} characters, more than the {MAX_NAME_LEN} Key Vault allows",
        key_suffix(key.as_deref())
    )]
    TooLong {
        /// The path, relative to the address.
        path: String,
        /// The key, for granularity key.
        key: Option<String>,
        /// The name's length.
        len: usize,
    },
    /// A path or key with a control character, which no Key Vault name reads back as.
    #[error(
        "KV path {path:?}{} holds a control character: no Key Vault name stands for it",
        key_suffix(key.as_deref())
    )]
    Unnameable {
        /// The path.
        path: String,
        /// The key, for granularity key.
        key: Option<String>,
    },
    /// A key given for granularity secret, or none for granularity key.
    #[error("KV path '{path}': the template is for granularity {granularity}, which {}", if *granularity == Granularity::Key { "needs a key" } else { "takes no key" })]
    Granularity {
        /// The path.
        path: String,
        /// The template's granularity.
        granularity: Granularity,
    },
}

fn key_suffix(key: Option<&str>) -> String {
    key.map(|k| format!(" (key '{k}')")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Names

/// Encodes a KV path for a Key Vault name: `[0-9A-Za-z]` as is, `/` as `--`, `-` as is where
/// it cannot be read as the start of an escape (not last, not before another `-` or before
/// what reads as an escape), otherwise `-x2d`; any other character as `-x` and two lower-case
/// hex digits per byte of its UTF-8 form (`_` → `-x5f`, ` ` → `-x20`, `é` → `-xc3-xa9`).
///
/// Keeping `-` as is makes the names people give Key Vault secrets (`db-password`,
/// `cert-2024`, `app-01`) the encodings of the same KV paths, so a copy from Key Vault into KV
/// and back keeps the names, and a rerun finds them. Only a name holding `-x` and two hex
/// digits of a printable non-alphanumeric ASCII character (or of a UTF-8 character beyond
/// ASCII) reads as that character: the Key Vault name `a-x2eb` is the KV path `a.b`.
pub fn encode_path(path: &str) -> String {
    encode(path, true)
}

/// Encodes a KV key for a Key Vault name like [`encode_path`], except that `/` becomes `-x2f`
/// and a `-` before another `-` is always `-x2d`: an encoded key never holds `--`, so in
/// `{path}--{key}` the path ends at a `--` after which no `--` follows.
pub fn encode_key(key: &str) -> String {
    encode(key, false)
}

/// The length of one byte's escape: `-x` and two hex digits.
const ESCAPE_LEN: usize = 4;

/// The longest escape: four bytes of UTF-8.
const LONGEST_ESCAPE: usize = 4 * ESCAPE_LEN;

/// The character an escape at the start of `rest` (which starts with `-`) stands for, and the
/// escape's length: `-xhh` of a printable ASCII character that is neither a letter nor a
/// digit, or `-xhh` sequences of one UTF-8 character beyond ASCII. Anything else starts no
/// escape. The `x` keeps names people write (`cert-2024`, `app-01`) from reading as escapes.
fn escape_at(rest: &[u8]) -> Option<(char, usize)> {
    let byte_at = |k: usize| -> Option<u8> {
        let start = ESCAPE_LEN * k;
        if rest.get(start) != Some(&b'-') || !rest.get(start + 1)?.eq_ignore_ascii_case(&b'x') {
            return None;
        }
        let hex = rest.get(start + 2..start + 4)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let first = byte_at(0)?;
    let len = match first {
        0x20..=0x7e if !first.is_ascii_alphanumeric() => {
            return Some((char::from(first), ESCAPE_LEN));
        }
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let mut bytes = vec![first];
    for k in 1..len {
        bytes.push(byte_at(k)?);
    }
    let character = std::str::from_utf8(&bytes).ok()?.chars().next()?;
    Some((character, ESCAPE_LEN * len))
}

fn encode(text: &str, slash_as_dashes: bool) -> String {
    // Right to left, so that each `-` knows what follows it in the name.
    let mut tokens: Vec<String> = Vec::new();
    let mut following = String::new();
    for character in text.chars().rev() {
        let token = if character.is_ascii_alphanumeric() {
            character.to_string()
        } else if character == '/' && slash_as_dashes {
            "--".to_owned()
        } else if character == '-'
            && !following.is_empty()
            && !following.starts_with('-')
            && escape_at(format!("-{following}").as_bytes()).is_none()
        {
            "-".to_owned()
        } else {
            let mut buffer = [0u8; 4];
            character
                .encode_utf8(&mut buffer)
                .bytes()
                .map(|b| format!("-x{b:02x}"))
                .collect()
        };
        following = format!("{token}{following}");
        following.truncate(LONGEST_ESCAPE);
        tokens.push(token);
    }
    tokens.reverse();
    tokens.concat()
}

/// Decodes what [`encode_path`] made; `None` for text it cannot have made (a name whose
/// re-encoding differs, such as `a-x2db` for the path `a-b` whose name is `a-b`; text outside
/// `[0-9A-Za-z-]`; a path with an empty segment, which KV does not have).
pub fn decode_path(encoded: &str) -> Option<String> {
    let path = decode(encoded, true)?;
    let well_formed =
        !path.is_empty() && !path.starts_with('/') && !path.ends_with('/') && !path.contains("//");
    well_formed.then_some(path)
}

/// Decodes what [`encode_key`] made; `None` for text it cannot have made.
pub fn decode_key(encoded: &str) -> Option<String> {
    decode(encoded, false)
}

fn decode(encoded: &str, path: bool) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
            i += 1;
        } else if byte != b'-' {
            return None;
        } else if path && bytes.get(i + 1) == Some(&b'-') {
            out.push('/');
            i += 2;
        } else if let Some((character, len)) = escape_at(&bytes[i..]) {
            out.push(character);
            i += len;
        } else {
            out.push('-');
            i += 1;
        }
    }
    // Only the one encoding of each text is accepted (up to the case of hex digits: Key Vault
    // ignores case), so a name stands for one path and a path has one name.
    encode(&out, path)
        .eq_ignore_ascii_case(encoded)
        .then_some(out)
}

/// A path relative to an address's prefix (`KvAddress::prefix()`): `team/db` under prefix
/// `team` is `db`; `None` for a path outside the prefix. An empty prefix is the whole mount.
/// A prefix that names a secret itself (`bao+…/secret/team/db`) covers that secret, named
/// by its last segment (`db`).
pub fn relative_path<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(path);
    }
    if path == prefix {
        return path.rsplit('/').next();
    }
    path.strip_prefix(prefix)?
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty())
}

/// The path under the mount of `relative` under `prefix`: the inverse of [`relative_path`].
pub fn full_path(prefix: &str, relative: &str) -> String {
    if prefix.is_empty() {
        relative.to_owned()
    } else {
        format!("{prefix}/{relative}")
    }
}

/// One piece of a name template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal characters (`[0-9A-Za-z-]`).
    Literal(String),
    /// `{path}`.
    Path,
    /// `{key}`.
    Key,
}

/// How KV paths (and keys) become Key Vault names: literal characters and the placeholders
/// `{path}` and, for granularity key, `{key}`, whose values are encoded ([`encode_path`],
/// [`encode_key`]). Defaults: `{path}` and `{path}--{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    text: String,
    granularity: Granularity,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// The default template of a granularity: `{path}` or `{path}--{key}`.
    pub fn default_for(granularity: Granularity) -> Self {
        let text = match granularity {
            Granularity::Secret => "{path}",
            Granularity::Key => "{path}--{key}",
        };
        Self::parse(text, granularity).expect("the default templates are valid")
    }

    /// Parses a `--name-template`: `{path}` once, `{key}` once for granularity key and never
    /// for granularity secret, a literal between two placeholders, and otherwise only the
    /// characters Key Vault names allow (`[0-9A-Za-z-]`). A one-line [`MapError::Template`]
    /// says what is wrong.
    pub fn parse(text: &str, granularity: Granularity) -> Result<Self, MapError> {
        let fail = |reason: String| MapError::Template {
            template: text.to_owned(),
            reason,
        };
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(end) = after.find('}') else {
                    return Err(fail("a '{' without its '}'".to_owned()));
                };
                let part = match &after[..end] {
                    "path" => Part::Path,
                    "key" if granularity == Granularity::Key => Part::Key,
                    "key" => {
                        return Err(fail(
                            "{key} is for --granularity key; one secret per KV secret names it \
                             by {path} only"
                                .to_owned(),
                        ));
                    }
                    other => {
                        return Err(fail(format!(
                            "unknown placeholder {{{other}}}: use {{path}}{}",
                            if granularity == Granularity::Key {
                                " and {key}"
                            } else {
                                ""
                            }
                        )));
                    }
                };
                if parts.contains(&part) {
                    return Err(fail(format!(
                        "{} appears twice",
                        if part == Part::Path {
                            "{path}"
                        } else {
                            "{key}"
                        }
                    )));
                }
                if matches!(parts.last(), Some(Part::Path | Part::Key)) {
                    return Err(fail(
                        "two placeholders side by side cannot be told apart: put characters \
                         between them, as in {path}--{key}"
                            .to_owned(),
                    ));
                }
                parts.push(part);
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if let Some(bad) = literal
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
                {
                    return Err(fail(format!(
                        "'{bad}' cannot be in a Key Vault name: besides the placeholders, use \
                         only letters, digits and '-'"
                    )));
                }
                parts.push(Part::Literal(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        if !parts.contains(&Part::Path) {
            return Err(fail("{path} is missing".to_owned()));
        }
        if granularity == Granularity::Key && !parts.contains(&Part::Key) {
            return Err(fail(
                "{key} is missing: --granularity key makes one secret per key, so the name \
                 needs it (the default is {path}--{key})"
                    .to_owned(),
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            granularity,
            parts,
        })
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The granularity the template was parsed for.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The Key Vault name of `path` (relative to the address) and, for granularity key, `key`.
    /// Longer than [`MAX_NAME_LEN`]: [`MapError::TooLong`] naming the path.
    pub fn render(&self, path: &str, key: Option<&str>) -> Result<String, MapError> {
        if key.is_some() != (self.granularity == Granularity::Key) {
            return Err(MapError::Granularity {
                path: path.to_owned(),
                granularity: self.granularity,
            });
        }
        if path
            .chars()
            .chain(key.unwrap_or_default().chars())
            .any(char::is_control)
        {
            return Err(MapError::Unnameable {
                path: path.to_owned(),
                key: key.map(str::to_owned),
            });
        }
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Path => name.push_str(&encode_path(path)),
                Part::Key => name.push_str(&encode_key(key.unwrap_or_default())),
            }
        }
        if name.len() > MAX_NAME_LEN {
            return Err(MapError::TooLong {
                path: path.to_owned(),
                key: key.map(str::to_owned),
                len: name.len(),
            });
        }
        Ok(name)
    }

    /// The path (and key) a Key Vault name stands for: the inverse of [`NameTemplate::render`].
    /// Literals match ignoring case (Key Vault names do); `None` when the name does not fit
    /// the template, which means the item is not one of coldvault's. Where several splits
    /// decode, the longest path wins (for `{path}--{key}`: the last `--` ends the path).
    pub fn parse_name(&self, name: &str) -> Option<(String, Option<String>)> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        let (path, key) = match_parts(&self.parts, name, None, None)?;
        Some((path?, key))
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

type Matched = (Option<String>, Option<String>);

/// Matches `name` against `parts`, placeholders taking as much as they can first.
fn match_parts(
    parts: &[Part],
    name: &str,
    path: Option<String>,
    key: Option<String>,
) -> Option<Matched> {
    let Some((first, rest)) = parts.split_first() else {
        return name.is_empty().then_some((path, key));
    };
    match first {
        Part::Literal(text) => {
            let head = name.get(..text.len())?;
            if !head.eq_ignore_ascii_case(text) {
                return None;
            }
            match_parts(rest, &name[text.len()..], path, key)
        }
        Part::Path | Part::Key => {
            // The names are ASCII (anything else fails to decode), so every index is a
            // character boundary.
            if !name.is_ascii() {
                return None;
            }
            for end in (0..=name.len()).rev() {
                // Only where what follows can match: the next literal, or the end of the name
                // (templates never hold two placeholders side by side).
                let fits = match rest.first() {
                    None => end == name.len(),
                    Some(Part::Literal(text)) => name[end..]
                        .get(..text.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(text)),
                    Some(_) => true,
                };
                if !fits {
                    continue;
                }
                let piece = &name[..end];
                let decoded = if *first == Part::Path {
                    decode_path(piece)
                } else {
                    decode_key(piece)
                };
                let Some(decoded) = decoded else {
                    continue;
                };
                let (p, k) = if *first == Part::Path {
                    (Some(decoded), key.clone())
                } else {
                    (path.clone(), Some(decoded))
                };
                if let Some(found) = match_parts(rest, &name[end..], p, k) {
                    return Some(found);
                }
            }
            None
        }
    }
}

/// One item's Key Vault name, from [`plan_names`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedName {
    /// The Key Vault name.
    pub name: String,
    /// The KV path, relative to the address.
    pub path: String,
    /// The key, for granularity key.
    pub key: Option<String>,
}

/// Names two or more items would share (Key Vault names ignore case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The name (as the first item renders it).
    pub name: String,
    /// The items that render to it: `path`, or `path` and the key, in input order.
    pub items: Vec<(String, Option<String>)>,
}

/// Why names could not be planned: collisions, names that do not fit, and templates that do
/// not map a name back to its item. `Display` is one line naming the first few.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Collisions {
    /// Names shared by several items.
    pub collisions: Vec<Collision>,
    /// Items whose name cannot be made (too long).
    pub unmappable: Vec<MapError>,
    /// Names the template does not read back as the item they were made from (a template
    /// whose literals look like encoded text): such a name could not be told apart later.
    pub ambiguous: Vec<String>,
}

/// How many collisions (and items per collision) a message names.
const SHOWN: usize = 3;

impl fmt::Display for Collisions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.collisions.is_empty() {
            let shown: Vec<String> = self
                .collisions
                .iter()
                .take(SHOWN)
                .map(|c| {
                    let items: Vec<String> = c
                        .items
                        .iter()
                        .take(SHOWN)
                        .map(|(path, key)| format!("'{path}'{}", key_suffix(key.as_deref())))
                        .collect();
                    let more = c.items.len().saturating_sub(SHOWN);
                    format!(
                        "'{}' ← {}{}",
                        c.name,
                        items.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            let more = self.collisions.len().saturating_sub(SHOWN);
            parts.push(format!(
                "{} Key Vault name{} shared by several KV items (names ignore case): {}{}",
                self.collisions.len(),
                if self.collisions.len() == 1 { "" } else { "s" },
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if let Some(first) = self.unmappable.first() {
            let more = self.unmappable.len() - 1;
            parts.push(if more > 0 {
                format!("{first} (and {more} more)")
            } else {
                first.to_string()
            });
        }
        if !self.ambiguous.is_empty() {
            let shown: Vec<&str> = self
                .ambiguous
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect();
            parts.push(format!(
                "the name template does not read {} back as the KV item it was made from",
                shown.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for Collisions {}

impl Collisions {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        "nothing was written: rename the KV paths, copy a narrower path, or choose another \
         --name-template (the default {path} encodes every character reversibly)"
    }
}

/// Names every item (`path` relative to the address, and `key` for granularity key) with
/// `template`, checking them all before anything is written: names equal ignoring case are
/// [`Collisions`], as are names too long and names the template would not read back.
pub fn plan_names<'a>(
    template: &NameTemplate,
    items: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Vec<PlannedName>, Collisions> {
    let mut problems = Collisions::default();
    let mut planned: Vec<PlannedName> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut shared: BTreeMap<usize, Collision> = BTreeMap::new();
    for (path, key) in items {
        let name = match template.render(path, key) {
            Ok(name) => name,
            Err(err) => {
                problems.unmappable.push(err);
                continue;
            }
        };
        let back = template.parse_name(&name);
        if back.as_ref().map(|(p, k)| (p.as_str(), k.as_deref())) != Some((path, key)) {
            problems.ambiguous.push(name.clone());
        }
        let lower = name.to_ascii_lowercase();
        if let Some(&first) = by_name.get(&lower) {
            let collision = shared.entry(first).or_insert_with(|| Collision {
                name: planned[first].name.clone(),
                items: vec![(planned[first].path.clone(), planned[first].key.clone())],
            });
            collision
                .items
                .push((path.to_owned(), key.map(str::to_owned)));
            continue;
        }
        by_name.insert(lower, planned.len());
        planned.push(PlannedName {
            name,
            path: path.to_owned(),
            key: key.map(str::to_owned),
        });
    }
    problems.collisions = shared.into_values().collect();
    if problems == Collisions::default() {
        Ok(planned)
    } else {
        Err(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// A value as Key Vault holds it. `Debug` never shows the value.
#[derive(Debug, Clone)]
pub struct KeyVaultValue {
    /// The secret's value.
    pub value: SecretString,
    /// Its content type.
    pub content_type: Option<String>,
}

/// The string of data that is exactly `{"value": <string>}`: the form coldvault writes a Key
/// Vault value in.
pub fn wrapped_value(data: &KvData) -> Option<&str> {
    if data.0.len() != 1 {
        return None;
    }
    data.0.get("value")?.as_str()
}

/// A KV version's data as one Key Vault secret (granularity secret): the whole map as
/// [`KvData::canonical_json`] with content type `application/json`, except a value coldvault
/// wrote from Key Vault (data exactly `{"value": <string>}` and `custom_metadata` holding
/// [`CONTENT_TYPE_KEY`]), which is that string with that content type ([`NO_CONTENT_TYPE`] or
/// empty: none).
pub fn secret_value(data: &KvData, custom_metadata: &BTreeMap<String, String>) -> KeyVaultValue {
    if let (Some(value), Some(content_type)) =
        (wrapped_value(data), custom_metadata.get(CONTENT_TYPE_KEY))
    {
        return KeyVaultValue {
            value: SecretString::from(value.to_owned()),
            content_type: (!content_type.is_empty() && content_type != NO_CONTENT_TYPE)
                .then(|| content_type.clone()),
        };
    }
    KeyVaultValue {
        value: SecretString::from(data.canonical_json()),
        content_type: Some(JSON_CONTENT_TYPE.to_owned()),
    }
}

/// One key's value as a Key Vault secret (granularity key): a string as is, any other JSON
/// value as compact JSON; no content type.
pub fn key_value(value: &serde_json::Value) -> SecretString {
    match value {
        serde_json::Value::String(text) => SecretString::from(text.clone()),
        other => SecretString::from(other.to_string()),
    }
}

/// One Key Vault version of a KV key (granularity key). `Debug` never shows the value.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    /// The KV version that first held this value (of a run of equal ones).
    pub version: u64,
    /// When that version was written.
    pub created: Option<OffsetDateTime>,
    /// The key's value.
    pub value: SecretString,
}

/// The Key Vault versions of `key` of a KV secret, oldest first: live versions that hold the
/// key, consecutive ones with the same value as one version (the first of the run), versions
/// without the key skipped. Soft-deleted and destroyed versions hold no data and are left out.
pub fn key_versions(secret: &KvSecret, key: &str) -> Vec<KeyVersion> {
    let mut out: Vec<KeyVersion> = Vec::new();
    let mut previous: Option<&serde_json::Value> = None;
    for version in secret.versions.iter().filter(|v| v.is_live()) {
        let Some(value) = version.data.as_ref().and_then(|d| d.0.get(key)) else {
            continue;
        };
        if previous == Some(value) {
            continue;
        }
        previous = Some(value);
        out.push(KeyVersion {
            version: version.version,
            created: version.created,
            value: key_value(value),
        });
    }
    out
}

/// The keys a KV secret holds today (its current version's, when live): the items of
/// granularity key.
pub fn current_keys(secret: &KvSecret) -> BTreeSet<String> {
    secret
        .current()
        .and_then(|v| v.data.as_ref())
        .map(|d| d.0.keys().cloned().collect())
        .unwrap_or_default()
}

/// A Key Vault value as KV data (granularity secret), with the [`CONTENT_TYPE_KEY`] entry it
/// needs (`None`: no entry). `Debug` never shows the data.
#[derive(Debug, Clone, PartialEq)]
pub struct KvValue {
    /// The data to write.
    pub data: KvData,
    /// The content type to keep in `custom_metadata` ([`NO_CONTENT_TYPE`]: none), for a
    /// wrapped value.
    pub content_type_entry: Option<String>,
}

/// A Key Vault value as KV data: content type `application/json` and a value that is a JSON
/// object whose canonical JSON is exactly the value, and that is not exactly
/// `{"value": <string>}` (the wrapped form), becomes that object; anything else becomes
/// `{"value": <value>}` with the content type (or [`NO_CONTENT_TYPE`]) kept in
/// `custom_metadata`. The inverse of [`secret_value`].
pub fn data_from_value(value: &str, content_type: Option<&str>) -> KvValue {
    if content_type == Some(JSON_CONTENT_TYPE)
        && let Ok(map) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(value)
    {
        let data = KvData(map);
        if data.canonical_json() == value && wrapped_value(&data).is_none() {
            return KvValue {
                data,
                content_type_entry: None,
            };
        }
    }
    let mut map = BTreeMap::new();
    map.insert(
        "value".to_owned(),
        serde_json::Value::String(value.to_owned()),
    );
    KvValue {
        data: KvData(map),
        content_type_entry: Some(content_type.unwrap_or(NO_CONTENT_TYPE).to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Tags and custom_metadata

/// Tags or `custom_metadata` as projected, and the names of the entries left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Projected {
    /// What is kept.
    pub kept: BTreeMap<String, String>,
    /// Names of the entries left out (over a count or length limit), sorted.
    pub dropped: Vec<String>,
}

impl Projected {
    /// The report line for the entries left out, `None` when none were. `into_key_vault`:
    /// `custom_metadata` entries that did not become tags; otherwise tags that did not become
    /// `custom_metadata` entries.
    pub fn dropped_note(&self, into_key_vault: bool) -> Option<String> {
        let count = self.dropped.len();
        if count == 0 {
            return None;
        }
        let entries = if count == 1 { "entry" } else { "entries" };
        Some(if into_key_vault {
            format!(
                "{count} custom_metadata {entries} not copied: Key Vault allows \
                 {KEY_VAULT_MAX_TAGS} tags (names up to {KEY_VAULT_MAX_TAG_NAME} characters, \
                 values up to {KEY_VAULT_MAX_TAG_VALUE}): {}",
                self.dropped.join(", ")
            )
        } else {
            let tags = if count == 1 { "tag" } else { "tags" };
            format!(
                "{count} {tags} not copied: KV allows {KV_MAX_METADATA} custom_metadata \
                 entries (keys up to {KV_MAX_METADATA_KEY} bytes, values up to \
                 {KV_MAX_METADATA_VALUE}): {}",
                self.dropped.join(", ")
            )
        })
    }
}

/// Keeps the `reserved` entries (if they fit), then the others by name, up to `limit` entries
/// in all, a place being kept for every reserved entry even when it is absent (a copy adds
/// its marker afterwards); entries that do not `fit` a length limit are dropped too.
fn keep_within(
    entries: BTreeMap<String, String>,
    reserved: &[&str],
    limit: usize,
    fits: impl Fn(&str, &str) -> bool,
) -> Projected {
    let mut out = Projected::default();
    let others_limit = limit.saturating_sub(reserved.len());
    let mut others = 0;
    for (name, value) in entries {
        let is_reserved = reserved.contains(&name.as_str());
        let room = is_reserved || others < others_limit;
        if room && fits(&name, &value) {
            if !is_reserved {
                others += 1;
            }
            out.kept.insert(name, value);
        } else {
            out.dropped.push(name);
        }
    }
    out
}

/// `custom_metadata` as Key Vault tags: without [`CONTENT_TYPE_KEY`] (it is the content type);
/// with `marker` as [`MARKER_TAG`] when given (the marker of this copy replaces any other),
/// otherwise with the marker the secret already carries (it records who wrote it there).
/// Key Vault allows [`KEY_VAULT_MAX_TAGS`] tags: the marker's place is kept (a copy sets it),
/// then entries by name fill the other 14; entries over the count or a length limit are
/// dropped and named.
pub fn tags_from_metadata(
    custom_metadata: &BTreeMap<String, String>,
    marker: Option<&str>,
) -> Projected {
    let mut entries: BTreeMap<String, String> = custom_metadata
        .iter()
        .filter(|(k, _)| k.as_str() != CONTENT_TYPE_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(marker) = marker {
        entries.insert(MARKER_TAG.to_owned(), marker.to_owned());
    }
    keep_within(entries, &[MARKER_TAG], KEY_VAULT_MAX_TAGS, |k, v| {
        k.chars().count() <= KEY_VAULT_MAX_TAG_NAME && v.chars().count() <= KEY_VAULT_MAX_TAG_VALUE
    })
}

/// Key Vault tags as `custom_metadata`, with `content_type_entry` as [`CONTENT_TYPE_KEY`]
/// when given (a tag of that name is replaced by it). KV allows [`KV_MAX_METADATA`] entries:
/// places are kept for the content type entry and the marker, then tags by name fill the
/// other 62; entries over the count or a length limit, and tags with an empty value (KV
/// refuses them), are dropped and named.
pub fn metadata_from_tags(tags: &Tags, content_type_entry: Option<&str>) -> Projected {
    let mut entries = tags.clone();
    entries.remove(CONTENT_TYPE_KEY);
    if let Some(content_type) = content_type_entry {
        entries.insert(CONTENT_TYPE_KEY.to_owned(), content_type.to_owned());
    }
    keep_within(
        entries,
        &[CONTENT_TYPE_KEY, MARKER_TAG],
        KV_MAX_METADATA,
        // KV refuses empty keys and values as well as long ones.
        |k, v| {
            (1..=KV_MAX_METADATA_KEY).contains(&k.len())
                && (1..=KV_MAX_METADATA_VALUE).contains(&v.len())
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Ownership and attributes

/// The marker value of a copy from `source` (its KV address or Key Vault URL): lower-cased;
/// longer than a tag value may be (256 characters), a prefix and the first 16 hex digits of
/// its SHA-256, so distinct sources keep distinct markers.
pub fn marker_value(source: &str) -> String {
    let lower = source.trim().to_lowercase();
    if lower.chars().count() <= MARKER_MAX {
        return lower;
    }
    let digest = hex::encode(Sha256::digest(lower.as_bytes()));
    let keep = MARKER_MAX - MARKER_DIGEST_HEX - 1;
    let prefix: String = lower.chars().take(keep).collect();
    format!("{prefix}-{}", &digest[..MARKER_DIGEST_HEX])
}

/// Whether an item's tags carry the marker of `marker_value` (see [`marker_value`]): the item
/// was written by a copy from that source, so a sync may overwrite or delete it.
pub fn is_owned(tags: &Tags, marker_value: &str) -> bool {
    tags.get(MARKER_TAG)
        .is_some_and(|v| v.eq_ignore_ascii_case(marker_value))
}

/// A KV version's attributes in Key Vault terms: its `created` as `created` and `updated`,
/// enabled, no `nbf` or `exp` (KV has neither).
pub fn version_attributes(version: &KvVersion) -> Attributes {
    attributes_at(version.created)
}

/// The attributes of a Key Vault version made from a KV version written at `created`.
pub fn attributes_at(created: Option<OffsetDateTime>) -> Attributes {
    Attributes {
        enabled: Some(true),
        created,
        updated: created,
        ..Attributes::default()
    }
}

/// A KV version number as a Key Vault version id: 32 lower-case hex digits.
pub fn version_id(version: u64) -> String {
    format!("{version:032x}")
}

/// The KV version number of a version id made by [`version_id`].
pub fn version_number(id: &str) -> Option<u64> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(id, 16)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use age::secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn data(value: serde_json::Value) -> KvData {
        KvData(serde_json::from_value(value).unwrap())
    }

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_are_readable_and_decode_back() {
        for (path, name) in [
            ("db", "db"),
            ("app/db", "app--db"),
            ("a_b", "a-x5fb"),
            ("a.b", "a-x2eb"),
            ("team/db password", "team--db-x20password"),
            ("ünï/ß", "-xc3-xbcn-xc3-xaf---xc3-x9f"),
            ("Prod/DB", "Prod--DB"),
            // A `-` stays as is where it cannot be misread: people's names are paths too.
            ("db-password", "db-password"),
            ("my-db", "my-db"),
            ("server-01", "server-01"),
            ("a/-b", "a---b"),
            ("a--b", "a-x2d-b"),
            ("a-", "a-x2d"),
            ("x-/y", "x-x2d--y"),
            ("a-x20", "a-x2dx20"),
            ("a-x2d", "a-x2dx2d"),
            ("cert 24", "cert-x2024"),
        ] {
            assert_eq!(encode_path(path), name, "{path}");
            assert_eq!(decode_path(name).as_deref(), Some(path), "{name}");
            assert!(crate::vault::is_valid_item_name(name), "{name}");
        }
        assert_eq!(encode_key("a/b"), "a-x2fb");
        assert_eq!(decode_key("a-x2fb").as_deref(), Some("a/b"));
        assert_eq!(encode_key("-x"), "-x");
        assert_eq!(encode_key("a--b"), "a-x2d-b");
        for key in ["x/-/y", "--", "a-", "-", "a--/--b"] {
            let encoded = encode_key(key);
            assert!(!encoded.contains("--"), "{key}: {encoded}");
            assert_eq!(decode_key(&encoded).as_deref(), Some(key), "{encoded}");
        }
        // Key Vault ignores case: upper-case hex digits read the same.
        assert_eq!(decode_path("a-X5Fb").as_deref(), Some("a_b"));
    }

    #[test]
    fn names_coldvault_cannot_have_made_do_not_decode() {
        // Another spelling of a path that has its own name, a trailing `-`, an empty segment,
        // a character no name holds.
        for name in [
            "a-x2db",
            "a-",
            "a-x2f",
            "--a",
            "a--",
            "a----b",
            "a_b",
            "",
            "a b",
            "made-x2dby",
        ] {
            assert_eq!(decode_path(name), None, "{name}");
        }
        assert_eq!(decode_key("a--b"), None);
        assert_eq!(decode_key("a-"), None);
        assert_eq!(decode_key("").as_deref(), Some(""));
        // What is no escape is a `-` followed by the rest.
        for name in [
            "a-2",
            "a-zz",
            "a-x61",
            "a-ff",
            "a-xc3",
            "key-01",
            "cert-2024",
            "a-20b",
            "a-2db",
        ] {
            assert_eq!(decode_path(name).as_deref(), Some(name), "{name}");
        }
    }

    #[test]
    fn templates_render_and_parse_back() {
        let key = NameTemplate::default_for(Granularity::Key);
        assert_eq!(key.as_str(), "{path}--{key}");
        for (path, k) in [
            ("app/db", "password"),
            ("a-", "-x"),
            ("a", "-b"),
            ("x/y", "a/b"),
            ("z", ""),
            ("日本/語", "ключ"),
        ] {
            let name = key.render(path, Some(k)).unwrap();
            assert_eq!(
                key.parse_name(&name),
                Some((path.to_owned(), Some(k.to_owned()))),
                "{name}"
            );
        }
        assert_eq!(key.render("app/db", Some("pw")).unwrap(), "app--db--pw");

        let custom = NameTemplate::parse("kv-{path}-prod", Granularity::Secret).unwrap();
        let name = custom.render("team/a-prod", None).unwrap();
        assert_eq!(name, "kv-team--a-prod-prod");
        assert_eq!(
            custom.parse_name(&name),
            Some(("team/a-prod".to_owned(), None))
        );
        // Literals match ignoring case, as Key Vault names do.
        assert_eq!(
            custom.parse_name("KV-db-PROD"),
            Some(("db".to_owned(), None))
        );
        // Names that do not fit are not coldvault's.
        assert_eq!(custom.parse_name("db"), None);
        assert_eq!(custom.parse_name("kv-db"), None);
        assert_eq!(custom.parse_name("kv-a_b-prod"), None);
        // A name somebody gave a Key Vault secret is the KV path it spells.
        let secret = NameTemplate::default_for(Granularity::Secret);
        assert_eq!(
            secret.parse_name("made-by-hand"),
            Some(("made-by-hand".to_owned(), None))
        );
        assert_eq!(secret.parse_name("made-x2dby-x2dhand"), None);
    }

    #[test]
    fn names_over_127_characters_are_refused_naming_the_path() {
        let template = NameTemplate::default_for(Granularity::Secret);
        let path = format!("team/{}", "x".repeat(130));
        let err = template.render(&path, None).unwrap_err();
        assert!(matches!(err, MapError::TooLong { len: 136, .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path) && text.contains("127"), "{text}");
        assert!(template.render(&"y".repeat(127), None).is_ok());
        // Every byte of a long character counts three times.
        assert!(template.render(&"é".repeat(22), None).is_err());
        // No name reads back as a control character.
        let err = template.render("a\u{1}b", None).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        // A key where none belongs, or none where one must be, is refused too.
        assert!(matches!(
            template.render("db", Some("k")),
            Err(MapError::Granularity { .. })
        ));
    }

    #[test]
    fn bad_templates_say_what_is_wrong_in_one_line() {
        for (text, granularity, want) in [
            (
                "{path}--{key}",
                Granularity::Secret,
                "{key} is for --granularity key",
            ),
            ("{path}", Granularity::Key, "{key} is missing"),
            ("kv-{key}", Granularity::Key, "{path} is missing"),
            ("", Granularity::Secret, "{path} is missing"),
            (
                "{path}_x",
                Granularity::Secret,
                "'_' cannot be in a Key Vault name",
            ),
            ("{path}.x", Granularity::Secret, "'.' cannot be"),
            ("{path", Granularity::Secret, "without its '}'"),
            ("{name}", Granularity::Secret, "unknown placeholder {name}"),
            ("{path}{key}", Granularity::Key, "side by side"),
            ("{path}-{path}", Granularity::Secret, "appears twice"),
        ] {
            let err = NameTemplate::parse(text, granularity)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with("--name-template"), "{err}");
            assert!(!err.contains('\n'));
        }
        assert!(NameTemplate::parse("Kv-{path}--x-{key}", Granularity::Key).is_ok());
    }

    #[test]
    fn names_equal_but_for_case_collide_and_are_listed() {
        let template = NameTemplate::default_for(Granularity::Secret);
        let err = plan_names(
            &template,
            [
                ("db", None),
                ("DB", None),
                ("app/x", None),
                ("Db", None),
                ("App/X", None),
                ("ok", None),
            ],
        )
        .unwrap_err();
        assert_eq!(err.collisions.len(), 2);
        assert_eq!(err.collisions[0].name, "db");
        let paths: Vec<&str> = err.collisions[0]
            .items
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(paths, ["db", "DB", "Db"]);
        let text = err.to_string();
        assert!(text.contains("2 Key Vault names"), "{text}");
        assert!(text.contains("'db' ← 'db', 'DB', 'Db'"), "{text}");
        assert!(text.contains("'app--x' ← 'app/x', 'App/X'"), "{text}");
        assert!(!text.contains('\n'));
        assert!(err.hint().contains("nothing was written"));

        // Keys collide the same way, and names too long are reported with them.
        let key = NameTemplate::default_for(Granularity::Key);
        let long = "p".repeat(140);
        let err = plan_names(
            &key,
            [
                ("app", Some("Pw")),
                ("app", Some("pw")),
                (long.as_str(), Some("k")),
            ],
        )
        .unwrap_err();
        assert_eq!(err.collisions.len(), 1);
        assert_eq!(err.unmappable.len(), 1);
        let text = err.to_string();
        assert!(
            text.contains("(key 'pw')") && text.contains(&long),
            "{text}"
        );

        let fine = plan_names(&key, [("app", Some("a")), ("app", Some("b"))]).unwrap();
        let names: Vec<&str> = fine.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["app--a", "app--b"]);
    }

    #[test]
    fn a_template_that_cannot_read_its_names_back_is_refused() {
        // With a letter between the placeholders, ("a", "xb") and ("ax", "b") both make
        // "axxb": plan_names checks that every name reads back as the item it was made from.
        let template = NameTemplate::parse("{path}x{key}", Granularity::Key).unwrap();
        let err = plan_names(&template, [("a", Some("xb"))]).unwrap_err();
        assert_eq!(err.ambiguous, ["axxb"]);
        assert!(err.to_string().contains("does not read axxb back"), "{err}");
    }

    #[test]
    fn long_names_and_thousands_of_items_plan_and_read_back() {
        // A name is split only where the next literal matches: one `--` here, so one try.
        let key = NameTemplate::default_for(Granularity::Key);
        let path = "a".repeat(60);
        let k = "b".repeat(60);
        let name = key.render(&path, Some(&k)).unwrap();
        assert_eq!(name.len(), 122);
        assert_eq!(name.matches("--").count(), 1);
        assert_eq!(key.parse_name(&name), Some((path.clone(), Some(k.clone()))));
        let items: Vec<(String, String)> = (0..5000)
            .map(|i| (format!("app/s{i}"), "pw".to_owned()))
            .collect();
        let planned = plan_names(
            &key,
            items.iter().map(|(p, k)| (p.as_str(), Some(k.as_str()))),
        )
        .unwrap();
        assert_eq!(planned.len(), 5000);
    }

    #[test]
    fn paths_are_relative_to_the_address_prefix() {
        assert_eq!(relative_path("team", "team/db"), Some("db"));
        assert_eq!(relative_path("team", "team/a/b"), Some("a/b"));
        assert_eq!(relative_path("team", "teamx/db"), None);
        assert_eq!(relative_path("team/db", "team/db"), Some("db"));
        assert_eq!(relative_path("team/db", "team/db/x"), Some("x"));
        assert_eq!(relative_path("", "team/db"), Some("team/db"));
        assert_eq!(full_path("team", "db"), "team/db");
        assert_eq!(full_path("", "db"), "db");
    }

    #[test]
    fn a_whole_map_becomes_json_and_a_wrapped_value_its_string() {
        let plain = secret_value(&data(json!({"user": "app", "port": 5432})), &meta(&[]));
        assert_eq!(plain.value.expose_secret(), r#"{"port":5432,"user":"app"}"#);
        assert_eq!(plain.content_type.as_deref(), Some(JSON_CONTENT_TYPE));

        let wrapped = data(json!({"value": "s3cret"}));
        let with_type = secret_value(&wrapped, &meta(&[(CONTENT_TYPE_KEY, "text/plain")]));
        assert_eq!(with_type.value.expose_secret(), "s3cret");
        assert_eq!(with_type.content_type.as_deref(), Some("text/plain"));
        let without = secret_value(&wrapped, &meta(&[(CONTENT_TYPE_KEY, NO_CONTENT_TYPE)]));
        assert_eq!(without.value.expose_secret(), "s3cret");
        assert_eq!(without.content_type, None);
        let without = secret_value(&wrapped, &meta(&[(CONTENT_TYPE_KEY, "")]));
        assert_eq!(without.value.expose_secret(), "s3cret");
        assert_eq!(without.content_type, None);
        // Without the entry it is somebody's data that happens to have one key "value".
        let theirs = secret_value(&wrapped, &meta(&[]));
        assert_eq!(theirs.value.expose_secret(), r#"{"value":"s3cret"}"#);
        assert_eq!(theirs.content_type.as_deref(), Some(JSON_CONTENT_TYPE));
        // A non-string "value" is never wrapped.
        let number = secret_value(
            &data(json!({"value": 7})),
            &meta(&[(CONTENT_TYPE_KEY, "x")]),
        );
        assert_eq!(number.value.expose_secret(), r#"{"value":7}"#);
    }

    #[test]
    fn key_vault_values_survive_kv_and_back() {
        for (value, content_type) in [
            ("plain", None),
            ("", None),
            ("text", Some("text/plain")),
            (r#"{"a":"1","b":[1,2]}"#, Some(JSON_CONTENT_TYPE)),
            (r#"{"b":1,"a":2}"#, Some(JSON_CONTENT_TYPE)),
            (r#"{ "a": 1 }"#, Some(JSON_CONTENT_TYPE)),
            (r#"{"value":"x"}"#, Some(JSON_CONTENT_TYPE)),
            (r#"{"value":"x"}"#, None),
            (r#"{"a":1}"#, None),
            ("[1,2]", Some(JSON_CONTENT_TYPE)),
            (
                "-----BEGIN CERTIFICATE-----\n",
                Some("application/x-pem-file"),
            ),
        ] {
            let kv = data_from_value(value, content_type);
            let metadata: BTreeMap<String, String> = kv
                .content_type_entry
                .iter()
                .map(|ct| (CONTENT_TYPE_KEY.to_owned(), ct.clone()))
                .collect();
            let back = secret_value(&kv.data, &metadata);
            assert_eq!(back.value.expose_secret(), value, "{value}");
            assert_eq!(back.content_type.as_deref(), content_type, "{value}");
        }
        // Canonical JSON objects become the data itself, with no entry.
        let object = data_from_value(r#"{"a":"1"}"#, Some(JSON_CONTENT_TYPE));
        assert_eq!(object.data, data(json!({"a": "1"})));
        assert_eq!(object.content_type_entry, None);
        let text = data_from_value("hello", None);
        assert_eq!(text.data, data(json!({"value": "hello"})));
        assert_eq!(text.content_type_entry.as_deref(), Some(NO_CONTENT_TYPE));
        // An empty entry, which a server refuses but a person may have meant, reads as none.
        let by_hand = secret_value(&text.data, &meta(&[(CONTENT_TYPE_KEY, "")]));
        assert_eq!(by_hand.content_type, None);
    }

    #[test]
    fn kv_data_survives_key_vault_and_back() {
        for map in [
            json!({"user": "app", "password": "pw"}),
            json!({"n": 1, "nested": {"x": [true, null]}}),
            json!({}),
        ] {
            let original = data(map);
            let kv = secret_value(&original, &meta(&[]));
            let back = data_from_value(kv.value.expose_secret(), kv.content_type.as_deref());
            assert_eq!(back.data, original);
            assert_eq!(back.content_type_entry, None);
        }
    }

    fn version(n: u64, value: Option<serde_json::Value>, deleted: bool) -> KvVersion {
        KvVersion {
            version: n,
            created: OffsetDateTime::from_unix_timestamp(1_700_000_000 + n as i64).ok(),
            deleted: deleted.then(|| OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()),
            destroyed: false,
            data: if deleted { None } else { value.map(data) },
        }
    }

    fn secret(versions: Vec<KvVersion>) -> KvSecret {
        KvSecret {
            path: "app".into(),
            custom_metadata: BTreeMap::new(),
            current_version: versions.last().map_or(0, |v| v.version),
            oldest_version: 1,
            max_versions: 0,
            cas_required: false,
            delete_version_after: "0s".into(),
            created: None,
            updated: None,
            versions,
        }
    }

    #[test]
    fn key_versions_merge_runs_and_skip_what_is_not_there() {
        let s = secret(vec![
            version(1, Some(json!({"pw": "a", "user": "u"})), false),
            version(2, Some(json!({"pw": "a", "user": "v"})), false),
            version(3, Some(json!({"user": "v"})), false),
            version(4, Some(json!({"pw": "b"})), true),
            version(5, Some(json!({"pw": "b", "port": 5432})), false),
            version(6, Some(json!({"pw": "b", "port": 5433})), false),
        ]);
        let pw: Vec<(u64, String)> = key_versions(&s, "pw")
            .iter()
            .map(|v| (v.version, v.value.expose_secret().to_owned()))
            .collect();
        assert_eq!(pw, [(1, "a".to_owned()), (5, "b".to_owned())]);
        let port: Vec<(u64, String)> = key_versions(&s, "port")
            .iter()
            .map(|v| (v.version, v.value.expose_secret().to_owned()))
            .collect();
        assert_eq!(port, [(5, "5432".to_owned()), (6, "5433".to_owned())]);
        assert_eq!(
            key_versions(&s, "pw")[1].created,
            OffsetDateTime::from_unix_timestamp(1_700_000_005).ok()
        );
        let keys: Vec<String> = current_keys(&s).into_iter().collect();
        assert_eq!(keys, ["port", "pw"]);
        // A deleted current version holds no keys today.
        let gone = secret(vec![
            version(1, Some(json!({"pw": "a"})), false),
            version(2, None, true),
        ]);
        assert!(current_keys(&gone).is_empty());
        assert_eq!(
            key_value(&json!({"a": [1]})).expose_secret(),
            r#"{"a":[1]}"#
        );
        assert_eq!(key_value(&json!(null)).expose_secret(), "null");
    }

    #[test]
    fn custom_metadata_becomes_at_most_15_tags_marker_first() {
        let mut metadata: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("k{i:02}"), format!("v{i}")))
            .collect();
        metadata.insert(CONTENT_TYPE_KEY.into(), "text/plain".into());
        metadata.insert(MARKER_TAG.into(), "bao+https://old/secret".into());
        let projected = tags_from_metadata(&metadata, Some("bao+https://new/secret"));
        assert_eq!(projected.kept.len(), KEY_VAULT_MAX_TAGS);
        assert_eq!(
            projected.kept.get(MARKER_TAG).map(String::as_str),
            Some("bao+https://new/secret")
        );
        assert!(!projected.kept.contains_key(CONTENT_TYPE_KEY));
        assert!(projected.kept.contains_key("k00") && projected.kept.contains_key("k13"));
        assert_eq!(
            projected.dropped,
            ["k14", "k15", "k16", "k17", "k18", "k19"]
        );
        let note = projected.dropped_note(true).unwrap();
        assert!(
            note.starts_with("6 custom_metadata entries not copied: Key Vault allows 15 tags"),
            "{note}"
        );
        // Without a marker of its own, the one the secret carries stays.
        let kept = tags_from_metadata(&meta(&[(MARKER_TAG, "x"), ("a", "1")]), None);
        assert_eq!(kept.kept, meta(&[(MARKER_TAG, "x"), ("a", "1")]));
        assert_eq!(kept.dropped_note(true), None);
        // Without any marker, its place is still kept: a copy adds it to at most 14 others.
        metadata.remove(MARKER_TAG);
        let unmarked = tags_from_metadata(&metadata, None);
        assert_eq!(unmarked.kept.len(), KEY_VAULT_MAX_TAGS - 1);
        assert_eq!(unmarked.dropped.len(), 6);
        // Entries over Key Vault's length limits are dropped even below the count.
        let long = tags_from_metadata(
            &meta(&[("a", &"v".repeat(257)), ("b", &"w".repeat(256))]),
            None,
        );
        assert_eq!(long.dropped, ["a"]);
    }

    #[test]
    fn tags_become_custom_metadata_within_kv_limits() {
        let mut tags: Tags = (0..70).map(|i| (format!("t{i:02}"), "v".into())).collect();
        tags.insert(MARKER_TAG.into(), "https://kv.vault.azure.net/".into());
        tags.insert(CONTENT_TYPE_KEY.into(), "forged".into());
        tags.insert("long".into(), "x".repeat(513));
        let projected = metadata_from_tags(&tags, Some("text/plain"));
        assert_eq!(projected.kept.len(), KV_MAX_METADATA);
        assert_eq!(
            projected.kept.get(CONTENT_TYPE_KEY).map(String::as_str),
            Some("text/plain")
        );
        assert!(projected.kept.contains_key(MARKER_TAG));
        assert!(projected.dropped.contains(&"long".to_owned()));
        assert!(projected.dropped.contains(&"t69".to_owned()));
        // `long`, and t62…t69 past the 64 entries (content type, marker, t00…t61).
        assert_eq!(projected.dropped.len(), 9);
        let note = projected.dropped_note(false).unwrap();
        assert!(
            note.contains("KV allows 64 custom_metadata entries"),
            "{note}"
        );
        // No entry asked for: a tag of that name does not smuggle one in.
        let plain = metadata_from_tags(&meta(&[(CONTENT_TYPE_KEY, "x"), ("a", "1")]), None);
        assert_eq!(plain.kept, meta(&[("a", "1")]));
        // KV takes no empty value: such a tag is named as not copied.
        let empty = metadata_from_tags(&meta(&[("a", ""), ("b", "1")]), None);
        assert_eq!(
            (empty.kept, empty.dropped),
            (meta(&[("b", "1")]), vec!["a".to_owned()])
        );
    }

    #[test]
    fn ownership_is_the_marker_of_this_source() {
        let marker = marker_value("BAO+https://Vault.Example.com:8200/secret/Team");
        assert_eq!(marker, "bao+https://vault.example.com:8200/secret/team");
        let tags = meta(&[(MARKER_TAG, &marker)]);
        assert!(is_owned(&tags, &marker));
        assert!(!is_owned(
            &tags,
            &marker_value("bao+https://other:8200/secret")
        ));
        assert!(!is_owned(&meta(&[("owner", "me")]), &marker));

        let long_a = format!("bao+https://h/secret/{}", "a".repeat(300));
        let long_b = format!("{long_a}b");
        let (a, b) = (marker_value(&long_a), marker_value(&long_b));
        assert_eq!(a.chars().count(), 256);
        assert_eq!(b.chars().count(), 256);
        assert_ne!(a, b);
        assert!(a.starts_with("bao+https://h/secret/aaa"));
        assert_eq!(a, marker_value(&long_a.to_uppercase()));
    }

    #[test]
    fn versions_and_attributes_come_from_kv_versions() {
        assert_eq!(version_id(3), "00000000000000000000000000000003");
        assert_eq!(version_number(&version_id(u64::MAX)), Some(u64::MAX));
        assert_eq!(version_number("3"), None);
        assert_eq!(version_number("ffffffffffffffffffffffffffffffff"), None);
        assert_eq!(version_number("0000000000000000000000000000000g"), None);
        let v = version(2, Some(json!({"a": "b"})), false);
        let attributes = version_attributes(&v);
        assert_eq!(attributes.enabled, Some(true));
        assert_eq!(attributes.created, v.created);
        assert_eq!(attributes.updated, v.created);
        assert_eq!((attributes.not_before, attributes.expires), (None, None));
    }

    #[test]
    fn debug_never_shows_values() {
        let kv = data_from_value("canary-4b1e", None);
        assert!(!format!("{kv:?}").contains("canary-4b1e"));
        let value = secret_value(&kv.data, &meta(&[(CONTENT_TYPE_KEY, "")]));
        assert!(!format!("{value:?}").contains("canary-4b1e"));
        let s = secret(vec![version(1, Some(json!({"k": "canary-4b1e"})), false)]);
        assert!(!format!("{:?}", key_versions(&s, "k")).contains("canary-4b1e"));
    }
}
