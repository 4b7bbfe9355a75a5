//! Addresses of KV v2 mounts: `bao+https://HOST[:PORT]/MOUNT[/PATH]` or
//! `vault+https://…` (the same API; the scheme only names the product in messages).
//!
//! TLS is always verified. `bao+http://` (and `vault+http://`) is accepted for a loopback host
//! only, which is where a dev server listens, and refused elsewhere: a token sent in clear
//! over a network is a token given away. The first path segment is taken as the mount until
//! the server says otherwise (a mount may itself contain `/`: `team/kv`); the client resolves
//! it at connect time and calls [`KvAddress::with_mount`].

use std::fmt;
use std::net::IpAddr;

use url::Url;

/// Which product the address names; both speak the same API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// OpenBao (`bao+https://`).
    Bao,
    /// HashiCorp Vault (`vault+https://`).
    Vault,
}

impl Flavor {
    /// The product's name for messages.
    pub fn product(self) -> &'static str {
        match self {
            Flavor::Bao => "OpenBao",
            Flavor::Vault => "Vault",
        }
    }

    fn scheme_prefix(self) -> &'static str {
        match self {
            Flavor::Bao => "bao",
            Flavor::Vault => "vault",
        }
    }
}

/// Why an address was refused. Each message is one line and names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `bao+…` or `vault+…`.
    #[error("'{0}' is not a KV address: use bao+https://HOST:PORT/MOUNT[/PATH] or vault+https://…")]
    NotKv(String),
    /// Unparseable.
    #[error("'{input}' is not a valid KV address: {reason}")]
    Invalid { input: String, reason: String },
    /// Plain HTTP to something other than loopback.
    #[error(
        "'{0}' uses plain http to a host that is not loopback: KV addresses use https (TLS always verified; http only for a dev server on 127.0.0.1, ::1 or localhost)"
    )]
    PlainHttp(String),
    /// No mount in the path.
    #[error("'{0}' names no mount: add it after the host (bao+https://HOST:PORT/secret)")]
    NoMount(String),
    /// User information, a query or a fragment (tokens do not belong in URLs: argv is public;
    /// the input is not echoed, since that part may be a credential).
    #[error(
        "the KV address has user information, a query or a fragment (not repeated here): give the token in VAULT_TOKEN (or BAO_TOKEN), never in the address"
    )]
    Extra,
}

/// A parsed KV address. `Display` gives it back in its `bao+https://…` form.
#[derive(Clone, PartialEq, Eq)]
pub struct KvAddress {
    flavor: Flavor,
    /// `https://HOST:PORT/` (or `http://` on loopback): the server's base URL.
    server: Url,
    /// The mount path, without leading or trailing `/` (`secret`, `team/kv`).
    mount: String,
    /// The path under the mount this address covers, without leading or trailing `/`; empty
    /// for the whole mount.
    prefix: String,
}

impl KvAddress {
    /// Whether `input` is meant as a KV address (it starts with `bao+` or `vault+`), so a
    /// command can tell it from a Key Vault name or URL before parsing either.
    pub fn is_kv_address(input: &str) -> bool {
        let lower = input.trim().to_ascii_lowercase();
        lower.starts_with("bao+") || lower.starts_with("vault+")
    }

    /// Parses `bao+https://HOST[:PORT]/MOUNT[/PATH]` or `vault+…`.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        let lower = input.to_ascii_lowercase();
        let (flavor, rest) = if lower.starts_with("bao+") {
            (Flavor::Bao, &input[4..])
        } else if lower.starts_with("vault+") {
            (Flavor::Vault, &input[6..])
        } else {
            return Err(AddressError::NotKv(input.to_owned()));
        };
        let url = Url::parse(rest).map_err(|e| AddressError::Invalid {
            input: input.to_owned(),
            reason: e.to_string(),
        })?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(AddressError::Extra);
        }
        let Some(host) = url.host_str() else {
            return Err(AddressError::Invalid {
                input: input.to_owned(),
                reason: "no host".to_owned(),
            });
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            "http" => return Err(AddressError::PlainHttp(input.to_owned())),
            other => {
                return Err(AddressError::Invalid {
                    input: input.to_owned(),
                    reason: format!("scheme {other} (use https)"),
                });
            }
        }
        let path = url.path().trim_matches('/');
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some((mount, prefix)) = segments.split_first() else {
            return Err(AddressError::NoMount(input.to_owned()));
        };
        let mut server = url.clone();
        server.set_path("/");
        Ok(Self {
            flavor,
            server,
            mount: (*mount).to_owned(),
            prefix: prefix.join("/"),
        })
    }

    /// The same address with `mount` as the mount (as the server resolved it): the rest of
    /// the original path becomes the prefix. `mount` must be a leading part of the path.
    pub fn with_mount(&self, mount: &str) -> Self {
        let mount = mount.trim_matches('/');
        let full = self.full_path();
        let prefix = full
            .strip_prefix(mount)
            .map(|rest| rest.trim_matches('/').to_owned())
            .unwrap_or_default();
        Self {
            mount: mount.to_owned(),
            prefix,
            ..self.clone()
        }
    }

    /// Which product the address names.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The server's base URL (`https://HOST:PORT/`).
    pub fn server(&self) -> &Url {
        &self.server
    }

    /// The mount, without slashes at either end.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The path under the mount this address covers; empty for the whole mount.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Mount and prefix joined (`secret/app`).
    pub fn full_path(&self) -> String {
        if self.prefix.is_empty() {
            self.mount.clone()
        } else {
            format!("{}/{}", self.mount, self.prefix)
        }
    }

    /// Whether the server is on loopback (plain http is allowed there).
    pub fn is_loopback(&self) -> bool {
        self.server.host_str().is_some_and(is_loopback_host)
    }
}

impl fmt::Display for KvAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = self.server.as_str().trim_end_matches('/');
        write!(
            f,
            "{}+{}/{}",
            self.flavor.scheme_prefix(),
            server,
            self.full_path()
        )
    }
}

impl fmt::Debug for KvAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvAddress({self})")
    }
}

/// `127.0.0.0/8`, `::1`, `localhost` and `*.localhost` (RFC 6761: always loopback).
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    crate::vault::transport::is_localhost_name(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_into_server_mount_and_prefix() {
        let a = KvAddress::parse("bao+https://vault.example.com:8200/secret/app/db").unwrap();
        assert_eq!(a.flavor(), Flavor::Bao);
        assert_eq!(a.server().as_str(), "https://vault.example.com:8200/");
        assert_eq!(a.mount(), "secret");
        assert_eq!(a.prefix(), "app/db");
        assert_eq!(
            a.to_string(),
            "bao+https://vault.example.com:8200/secret/app/db"
        );
        let v = KvAddress::parse("vault+https://v.example.com/kv/").unwrap();
        assert_eq!(
            (v.flavor(), v.mount(), v.prefix()),
            (Flavor::Vault, "kv", "")
        );
        let nested = a.with_mount("secret/app");
        assert_eq!((nested.mount(), nested.prefix()), ("secret/app", "db"));
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for ok in [
            "bao+http://127.0.0.1:8200/secret",
            "bao+http://[::1]:8200/secret",
            "vault+http://localhost:8200/secret",
            "bao+http://dev.localhost:8200/secret",
        ] {
            assert!(KvAddress::parse(ok).is_ok(), "{ok}");
        }
        let err = KvAddress::parse("bao+http://10.0.0.5:8200/secret").unwrap_err();
        assert!(matches!(err, AddressError::PlainHttp(_)), "{err}");
        assert!(KvAddress::parse("bao+http://vault.example.com/secret").is_err());
    }

    #[test]
    fn bad_addresses_are_refused_in_one_line() {
        for (input, want) in [
            ("https://v.example.com/secret", "not a KV address"),
            ("bao+https://v.example.com", "names no mount"),
            ("bao+https://v.example.com/", "names no mount"),
            (
                "bao+https://v.example.com/secret?token=x",
                "never in the address",
            ),
            (
                "bao+https://user:pw@v.example.com/secret",
                "never in the address",
            ),
            ("bao+https://v.example.com/secret#frag", "not repeated"),
            ("bao+ftp://v.example.com/secret", "scheme ftp"),
        ] {
            let err = KvAddress::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(!err.contains('\n'));
            assert!(!err.contains("token=x") && !err.contains("pw@"), "{err}");
        }
        assert!(KvAddress::is_kv_address("BAO+https://x/y"));
        assert!(!KvAddress::is_kv_address("myvault"));
    }
}
