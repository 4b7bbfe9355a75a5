//! Azure Blob Storage as a destination: a container (and a prefix in it), spoken to over the
//! Blob service REST API. An archive is uploaded as staged blocks (Put Block) and appears only
//! when its block list is committed (Put Block List with `If-None-Match: *`, so an existing
//! blob is never replaced); blocks of an abandoned upload are never committed and the service
//! discards them (after a week). `--lock-days` sets a version-level immutability policy on
//! the commit, where the container allows it.
//!
//! Credentials, first found wins (a SAS token in the URL is refused: a command line is
//! visible to every user of the machine): `AZURE_STORAGE_SAS_TOKEN`,
//! `AZURE_STORAGE_CONNECTION_STRING` (account key or SAS; `UseDevelopmentStorage=true` and
//! Azurite's well-known string work unchanged), `AZURE_STORAGE_ACCOUNT_KEY`, else a bearer
//! token from the vault credential chain — with its own identity under `--output-auth`
//! (`COLDVAULT_OUTPUT_*` read in place of `AZURE_*`).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::{DestError, ObjectInfo, ObjectStore, RemoteOptions, UploadState, http, xml};
use crate::vault::credentials::{AuthMethod, CredentialChain, EnvSnapshot};

/// The Blob service API version sent: the first with version-level immutability headers on
/// Put Block List, and one Azurite accepts.
const API_VERSION: &str = "2021-08-06";

/// The OAuth scope of Azure Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// Azurite's documented development account (public, in Microsoft's docs and Azurite's
/// README): `UseDevelopmentStorage=true` means this.
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How requests are signed.
#[derive(Clone)]
enum Auth {
    SharedKey(Arc<Vec<u8>>),
    /// A SAS query string, without the `?`.
    Sas(Arc<String>),
    Bearer(Arc<CredentialChain>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::SharedKey(_) => "SharedKey([redacted])",
            Auth::Sas(_) => "Sas([redacted])",
            Auth::Bearer(_) => "Bearer",
        })
    }
}

/// A container (and prefix) in a storage account.
#[derive(Debug, Clone)]
pub struct BlobContainer {
    /// `https://ACCOUNT.blob.core.windows.net`, or a path-style endpoint ending in the
    /// account (`http://127.0.0.1:10000/devstoreaccount1`).
    endpoint: String,
    account: String,
    container: String,
    /// Empty, or ending in `/`.
    prefix: String,
    auth: Auth,
    client: reqwest::Client,
}

/// What a connection string says.
#[derive(Debug, Default)]
struct ConnectionString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    endpoint: Option<String>,
}

fn parse_connection_string(text: &str) -> ConnectionString {
    let mut out = ConnectionString::default();
    let mut protocol = "https".to_owned();
    let mut suffix = None;
    for part in text.split(';') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim() {
            "UseDevelopmentStorage" if value.eq_ignore_ascii_case("true") => {
                out.account = Some(DEV_ACCOUNT.to_owned());
                out.key = Some(DEV_KEY.to_owned());
                out.endpoint = Some(DEV_ENDPOINT.to_owned());
            }
            "AccountName" => out.account = Some(value.to_owned()),
            "AccountKey" => out.key = Some(value.to_owned()),
            "SharedAccessSignature" => out.sas = Some(value.trim_start_matches('?').to_owned()),
            "BlobEndpoint" => out.endpoint = Some(value.trim_end_matches('/').to_owned()),
            "DefaultEndpointsProtocol" => protocol = value.to_owned(),
            "EndpointSuffix" => suffix = Some(value.to_owned()),
            _ => {}
        }
    }
    if out.endpoint.is_none()
        && let (Some(account), Some(suffix)) = (&out.account, suffix)
    {
        out.endpoint = Some(format!("{protocol}://{account}.blob.{suffix}"));
    }
    out
}

impl BlobContainer {
    /// Resolves `az://ACCOUNT/CONTAINER[/PREFIX]`, `https://ACCOUNT.blob.SUFFIX/CONTAINER[/…]`
    /// or a path-style `http(s)://HOST[:PORT]/ACCOUNT/CONTAINER[/…]` (Azurite, Azure Stack)
    /// with credentials from the environment. Returns the store and the path after the
    /// container.
    pub fn from_url(text: &str, options: &RemoteOptions) -> Result<(Self, String), DestError> {
        let env = |name: &str| options.var(name);
        let shown = super::redact_url(text);
        let bad = |why: &str| {
            DestError::InvalidUrl(format!(
                "{shown}: {why} (expected az://ACCOUNT/CONTAINER[/PREFIX] or \
                 https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX])"
            ))
        };
        let conn = env("AZURE_STORAGE_CONNECTION_STRING")
            .map(|s| parse_connection_string(&s))
            .unwrap_or_default();
        let (without_query, url_sas) = match text.split_once('?') {
            Some((base, query)) => (base, Some(query.to_owned())),
            None => (text, None),
        };
        let (endpoint, account, rest) = if let Some(rest) = strip_scheme(without_query, "az://") {
            let (account, rest) = rest.split_once('/').unwrap_or((rest, ""));
            if account.is_empty() {
                return Err(bad("no account"));
            }
            let endpoint = match (&conn.account, &conn.endpoint) {
                (Some(a), Some(e)) if a == account => e.clone(),
                _ => format!("https://{account}.blob.core.windows.net"),
            };
            (endpoint, account.to_owned(), rest.to_owned())
        } else {
            let url = url::Url::parse(without_query).map_err(|e| bad(&e.to_string()))?;
            let host = url.host_str().ok_or_else(|| bad("no host"))?.to_owned();
            let origin = match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            };
            let path = url.path().trim_start_matches('/').to_owned();
            let path = percent_decode(&path);
            match host.split_once(".blob.") {
                Some((account, _)) => (origin, account.to_owned(), path),
                None => {
                    // Path style: the account is the first segment.
                    let (account, rest) = path.split_once('/').unwrap_or((&path, ""));
                    if account.is_empty() {
                        return Err(bad("no account in the path"));
                    }
                    (
                        format!("{origin}/{account}"),
                        account.to_owned(),
                        rest.to_owned(),
                    )
                }
            }
        };
        let (container, path) = rest.split_once('/').unwrap_or((&rest, ""));
        if container.is_empty() {
            return Err(bad("no container"));
        }
        if url_sas.as_deref().is_some_and(|q| q.contains("sig=")) {
            // Any user of the machine can read a command line: a SAS token is a credential.
            return Err(DestError::InvalidUrl(format!(
                "{shown}: the URL carries a SAS token, which the command line would show to \
                 every user of this machine; put it in AZURE_STORAGE_SAS_TOKEN instead"
            )));
        }
        let auth = if let Some(sas) = env("AZURE_STORAGE_SAS_TOKEN") {
            Auth::Sas(Arc::new(sas.trim_start_matches('?').to_owned()))
        } else if let (Some(key), true) = (&conn.key, conn.account.as_deref() == Some(&account)) {
            Auth::SharedKey(Arc::new(decode_key(key)?))
        } else if let (Some(sas), true) = (&conn.sas, conn.account.as_deref() == Some(&account)) {
            Auth::Sas(Arc::new(sas.clone()))
        } else if let Some(key) = env("AZURE_STORAGE_ACCOUNT_KEY") {
            Auth::SharedKey(Arc::new(decode_key(&key)?))
        } else {
            Auth::Bearer(Arc::new(chain(&endpoint, options)?))
        };
        let store = Self {
            endpoint,
            account,
            container: container.to_owned(),
            prefix: super::folder_prefix(path),
            auth,
            client: http::client()?,
        };
        Ok((store, path.to_owned()))
    }

    fn blob_url(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => format!(
                "{}/{}/{}",
                self.endpoint,
                self.container,
                http::encode(&format!("{}{name}", self.prefix), true)
            ),
            None => format!("{}/{}", self.endpoint, self.container),
        }
    }

    /// Builds a signed request. `query` pairs are sent (encoded) and signed; `headers` too.
    async fn request(
        &self,
        method: reqwest::Method,
        name: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Option<bytes::Bytes>,
    ) -> Result<reqwest::RequestBuilder, DestError> {
        let mut url = self.blob_url(name);
        let mut pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", http::encode(v, false)))
            .collect();
        if let Auth::Sas(sas) = &self.auth {
            pairs.push(sas.to_string());
        }
        if !pairs.is_empty() {
            url.push('?');
            url.push_str(&pairs.join("&"));
        }
        let date = httpdate(OffsetDateTime::now_utc());
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        all.push(("x-ms-date".to_owned(), date));
        all.push(("x-ms-version".to_owned(), API_VERSION.to_owned()));
        let length = body.as_ref().map_or(0, |b| b.len());
        let mut builder = self.client.request(method.clone(), &url);
        match &self.auth {
            Auth::SharedKey(key) => {
                let signature =
                    shared_key_signature(key, &self.account, method.as_str(), &url, &all, length)?;
                builder = builder.header(
                    "authorization",
                    format!("SharedKey {}:{signature}", self.account),
                );
            }
            Auth::Sas(_) => {}
            Auth::Bearer(chain) => {
                use azure_core::credentials::TokenCredential;
                let token = chain.get_token(&[STORAGE_SCOPE], None).await.map_err(|e| {
                    DestError::Credentials(format!(
                        "cannot sign in to Blob Storage: {}",
                        http::one_line(&e)
                    ))
                })?;
                builder =
                    builder.header("authorization", format!("Bearer {}", token.token.secret()));
            }
        }
        for (k, v) in &all {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(body) = body {
            builder = builder.body(body);
        } else if method == reqwest::Method::PUT {
            builder = builder.header("content-length", "0");
        }
        Ok(builder)
    }

    /// Sends with retries; the request is rebuilt (and re-signed) for every try.
    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        name: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Option<bytes::Bytes>,
    ) -> Result<reqwest::Response, DestError> {
        // Signing needs the token (async) before each send: fetch the builder per try.
        let mut last = None;
        for attempt in 0..http::ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(
                    200u64 << (attempt - 1).min(4),
                ))
                .await;
            }
            let builder = self
                .request(method.clone(), name, query, headers, body.clone())
                .await?;
            match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if (status == 408 || status == 429 || status >= 500)
                        && attempt + 1 < http::ATTEMPTS
                    {
                        last = Some(format!("HTTP {status}"));
                        continue;
                    }
                    return Ok(response);
                }
                Err(err) => last = Some(http::one_line(&err)),
            }
        }
        Err(DestError::Network {
            what: what.to_owned(),
            message: format!(
                "{} (after {} tries)",
                last.unwrap_or_default(),
                http::ATTEMPTS
            ),
        })
    }
}

fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    (text.len() >= scheme.len() && text[..scheme.len()].eq_ignore_ascii_case(scheme))
        .then(|| &text[scheme.len()..])
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_key(key: &str) -> Result<Vec<u8>, DestError> {
    B64.decode(key.trim()).map_err(|_| {
        DestError::Credentials(
            "the storage account key is not base64 (AZURE_STORAGE_ACCOUNT_KEY or AccountKey=)"
                .to_owned(),
        )
    })
}

/// The vault credential chain for Blob Storage. Under `--output-auth`, only that method,
/// with `COLDVAULT_OUTPUT_*` read in place of `AZURE_*` (the storage account's tenant).
fn chain(endpoint: &str, options: &RemoteOptions) -> Result<CredentialChain, DestError> {
    let host = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let (snapshot, pinned) = match &options.azure_auth {
        Some(method) => {
            let method: AuthMethod =
                method
                    .parse()
                    .map_err(|e: crate::vault::credentials::UnknownAuthMethod| {
                        DestError::Credentials(format!("--output-auth: {e}"))
                    })?;
            let names = [
                "TENANT_ID",
                "CLIENT_ID",
                "CLIENT_SECRET",
                "CLIENT_CERTIFICATE_PATH",
                "AUTHORITY_HOST",
                "FEDERATED_TOKEN_FILE",
            ];
            let pairs = names.iter().filter_map(|n| {
                options
                    .var(&format!("COLDVAULT_OUTPUT_{n}"))
                    .map(|v| (format!("AZURE_{n}"), v))
            });
            (EnvSnapshot::from_pairs(pairs), Some(method))
        }
        None => (EnvSnapshot::from_process(), None),
    };
    let client = http::client()?;
    let transport = crate::vault::transport::azure_transport(client);
    CredentialChain::new(&snapshot, pinned, &transport, &host).map_err(|e| {
        DestError::Credentials(format!(
            "no credential for Blob Storage: {e}; set AZURE_STORAGE_CONNECTION_STRING, \
             AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or sign in (--output-auth)"
        ))
    })
}

/// An RFC 1123 date as HTTP wants it (`Mon, 30 Nov 2026 17:00:00 GMT`).
pub fn httpdate(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&Rfc2822)
        .map(|s| s.replace("+0000", "GMT"))
        .unwrap_or_default()
}

/// The Shared Key signature of a request (Blob service, version 2015-02-21 and later).
fn shared_key_signature(
    key: &[u8],
    account: &str,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    content_length: usize,
) -> Result<String, DestError> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut ms: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ms.sort();
    let canonical_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let parsed =
        url::Url::parse(url).map_err(|e| DestError::InvalidUrl(format!("bad request URL: {e}")))?;
    let mut resource = format!("/{account}{}", parsed.path());
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in parsed.query_pairs() {
        params
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in params {
        values.sort();
        resource.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    let to_sign = [
        method,
        get("content-encoding"),
        get("content-language"),
        &length,
        get("content-md5"),
        get("content-type"),
        "",
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
    ]
    .join("\n")
        + "\n"
        + &canonical_headers
        + &resource;
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| DestError::Credentials("the storage account key is empty".to_owned()))?;
    mac.update(to_sign.as_bytes());
    Ok(B64.encode(mac.finalize().into_bytes()))
}

/// The block id of part `index`: every id of a blob must have the same length.
fn block_id(index: usize) -> String {
    B64.encode(format!("coldvault-{index:08}"))
}

/// The body of Put Block List.
pub fn block_list_xml(ids: &[String]) -> String {
    let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for id in ids {
        body.push_str("<Latest>");
        body.push_str(id);
        body.push_str("</Latest>");
    }
    body.push_str("</BlockList>");
    body
}

/// The headers of a version-level immutability policy until `until` (mode `Locked`: it can
/// be extended, never shortened or removed).
pub fn immutability_headers(until: OffsetDateTime) -> Vec<(&'static str, String)> {
    vec![
        ("x-ms-immutability-policy-until-date", httpdate(until)),
        ("x-ms-immutability-policy-mode", "Locked".to_owned()),
    ]
}

fn parse_httpdate(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(&text.replace("GMT", "+0000"), &Rfc2822).ok()
}

#[async_trait::async_trait]
impl ObjectStore for BlobContainer {
    fn display(&self) -> String {
        format!(
            "az://{}/{}/{}",
            self.account,
            self.container,
            self.prefix.trim_end_matches('/')
        )
        .trim_end_matches('/')
        .to_owned()
    }

    fn fork(&self) -> Arc<dyn ObjectStore> {
        let mut copy = self.clone();
        if let Ok(client) = http::client() {
            copy.client = client;
        }
        Arc::new(copy)
    }

    async fn head(&self, name: &str) -> Result<Option<u64>, DestError> {
        let what = format!("cannot look up {}", self.display_name(name));
        let response = self
            .send(&what, reqwest::Method::HEAD, Some(name), &[], &[], None)
            .await?;
        http::object_size(&what, response).await
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, DestError> {
        let what = format!("cannot list {}", self.display());
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("comp", "list".to_owned()),
                ("delimiter", "/".to_owned()),
                ("restype", "container".to_owned()),
            ];
            if !self.prefix.is_empty() {
                query.push(("prefix", self.prefix.clone()));
            }
            if !marker.is_empty() {
                query.push(("marker", marker.clone()));
            }
            let response = self
                .send(&what, reqwest::Method::GET, None, &query, &[], None)
                .await?;
            if !response.status().is_success() {
                return Err(http::error(&what, response).await);
            }
            let body = response.text().await.map_err(|e| DestError::Network {
                what: what.clone(),
                message: http::one_line(&e),
            })?;
            for blob in xml::elements(&body, "Blob") {
                let Some(full) = xml::text(blob, "Name") else {
                    continue;
                };
                let Some(name) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_owned(),
                    size: xml::text(blob, "Content-Length")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    modified: xml::text(blob, "Last-Modified").and_then(|s| parse_httpdate(&s)),
                });
            }
            marker = xml::text(&body, "NextMarker").unwrap_or_default();
            if marker.is_empty() {
                return Ok(out);
            }
        }
    }

    async fn get_from(&self, name: &str, offset: u64) -> Result<reqwest::Response, DestError> {
        let what = format!("cannot read {}", self.display_name(name));
        let headers = if offset > 0 {
            vec![("x-ms-range", format!("bytes={offset}-"))]
        } else {
            Vec::new()
        };
        let response = self
            .send(&what, reqwest::Method::GET, Some(name), &[], &headers, None)
            .await?;
        match response.status().as_u16() {
            200 | 206 => Ok(response),
            404 => Err(DestError::NotFound(self.display_name(name))),
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<(), DestError> {
        let what = format!("cannot write {}", self.display_name(name));
        let headers = [
            ("x-ms-blob-type", "BlockBlob".to_owned()),
            ("if-none-match", "*".to_owned()),
        ];
        let response = self
            .send(
                &what,
                reqwest::Method::PUT,
                Some(name),
                &[],
                &headers,
                Some(bytes.into()),
            )
            .await?;
        match response.status().as_u16() {
            201 => Ok(()),
            409 | 412 => Err(DestError::Exists(self.display_name(name))),
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn start_upload(
        &self,
        name: &str,
        _lock_until: Option<OffsetDateTime>,
    ) -> Result<UploadState, DestError> {
        if self.head(name).await?.is_some() {
            return Err(DestError::Exists(self.display_name(name)));
        }
        Ok(UploadState::default())
    }

    async fn put_part(
        &self,
        name: &str,
        _state: &UploadState,
        index: usize,
        bytes: bytes::Bytes,
    ) -> Result<String, DestError> {
        let what = format!("cannot upload block {index} of {}", self.display_name(name));
        let id = block_id(index);
        let query = [("comp", "block".to_owned()), ("blockid", id.clone())];
        let response = self
            .send(
                &what,
                reqwest::Method::PUT,
                Some(name),
                &query,
                &[],
                Some(bytes),
            )
            .await?;
        if response.status().as_u16() == 201 {
            Ok(id)
        } else {
            Err(http::error(&what, response).await)
        }
    }

    async fn commit_upload(
        &self,
        name: &str,
        state: &UploadState,
        size: u64,
        lock_until: Option<OffsetDateTime>,
    ) -> Result<(), DestError> {
        let what = format!("cannot commit {}", self.display_name(name));
        let mut headers = vec![
            ("if-none-match", "*".to_owned()),
            ("content-type", "application/xml".to_owned()),
        ];
        if let Some(until) = lock_until {
            headers.extend(immutability_headers(until));
        }
        let body = bytes::Bytes::from(block_list_xml(&state.parts));
        let query = [("comp", "blocklist".to_owned())];
        let response = self
            .send(
                &what,
                reqwest::Method::PUT,
                Some(name),
                &query,
                &headers,
                Some(body),
            )
            .await?;
        match response.status().as_u16() {
            201 => Ok(()),
            409 | 412 => {
                // Taken: by another writer, or by this very commit whose answer was lost and
                // whose retry then met the blob it had made. Only the latter leaves our size
                // and no uncommitted blocks to commit.
                if self.head(name).await? == Some(size) && self.uncommitted_blocks(name).await? == 0
                {
                    Ok(())
                } else {
                    Err(DestError::Exists(self.display_name(name)))
                }
            }
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn abort_upload(&self, _name: &str, _state: &UploadState) -> Result<(), DestError> {
        // Blob Storage has no call to drop staged blocks: never committed, they are invisible
        // and the service discards them after seven days.
        Ok(())
    }

    async fn locked_until(&self, name: &str) -> Result<Option<String>, DestError> {
        let what = format!("cannot look up {}", self.display_name(name));
        let response = self
            .send(&what, reqwest::Method::HEAD, Some(name), &[], &[], None)
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let headers = response.headers();
        if headers
            .get("x-ms-legal-hold")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(Some("a legal hold is removed".to_owned()));
        }
        let until = headers
            .get("x-ms-immutability-policy-until-date")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_httpdate);
        Ok(until
            .filter(|u| *u > OffsetDateTime::now_utc())
            .map(super::listing::format_time))
    }

    async fn delete(&self, name: &str) -> Result<(), DestError> {
        let what = format!("cannot delete {}", self.display_name(name));
        let response = self
            .send(&what, reqwest::Method::DELETE, Some(name), &[], &[], None)
            .await?;
        match response.status().as_u16() {
            202 | 200 | 404 => Ok(()),
            409 | 403 => {
                let err = http::error(&what, response).await;
                match &err {
                    DestError::Http {
                        code: Some(code), ..
                    } if code.contains("Immutable") => Err(DestError::Locked {
                        what: self.display_name(name),
                        until: None,
                    }),
                    _ => Err(err),
                }
            }
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn create(&self, lockable: bool) -> Result<(), DestError> {
        if lockable {
            // Version-level immutability is set on the account or container by Azure
            // Resource Manager, not by the Blob service.
            return Err(DestError::Unsupported(
                "a container with version-level immutability is created through Azure \
                 Resource Manager (portal, az storage container-rm create)"
                    .to_owned(),
            ));
        }
        self.create_container().await
    }

    async fn check_lock_support(&self) -> Result<(), DestError> {
        let what = format!("cannot read the properties of {}", self.display());
        let query = [("restype", "container".to_owned())];
        let response = self
            .send(&what, reqwest::Method::GET, None, &query, &[], None)
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let enabled = response
            .headers()
            .get("x-ms-immutable-storage-with-versioning-enabled")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if enabled {
            Ok(())
        } else {
            Err(DestError::Unsupported(format!(
                "--lock-days: container {} does not have version-level immutability \
                 (the service did not report x-ms-immutable-storage-with-versioning-enabled)",
                self.container
            )))
        }
    }
}

impl BlobContainer {
    async fn create_container(&self) -> Result<(), DestError> {
        let what = format!("cannot create container {}", self.container);
        let query = [("restype", "container".to_owned())];
        let response = self
            .send(&what, reqwest::Method::PUT, None, &query, &[], None)
            .await?;
        match response.status().as_u16() {
            201 | 409 => Ok(()),
            _ => Err(http::error(&what, response).await),
        }
    }

    /// How many uncommitted blocks the blob has (0 once its list was committed).
    async fn uncommitted_blocks(&self, name: &str) -> Result<usize, DestError> {
        let what = format!("cannot read the block list of {}", self.display_name(name));
        let query = [
            ("blocklisttype", "uncommitted".to_owned()),
            ("comp", "blocklist".to_owned()),
        ];
        let response = self
            .send(&what, reqwest::Method::GET, Some(name), &query, &[], None)
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let body = response.text().await.unwrap_or_default();
        let uncommitted = xml::elements(&body, "UncommittedBlocks")
            .first()
            .map_or(0, |part| xml::elements(part, "Block").len());
        Ok(uncommitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_name_account_key_and_endpoint() {
        let dev = parse_connection_string("UseDevelopmentStorage=true");
        assert_eq!(dev.account.as_deref(), Some(DEV_ACCOUNT));
        assert_eq!(dev.endpoint.as_deref(), Some(DEV_ENDPOINT));
        let azurite = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        );
        assert_eq!(azurite.key.as_deref(), Some("a2V5"));
        assert_eq!(
            azurite.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        let cloud = parse_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn",
        );
        assert_eq!(
            cloud.endpoint.as_deref(),
            Some("https://acct.blob.core.chinacloudapi.cn")
        );
    }

    #[test]
    fn shared_key_signs_the_documented_string() {
        // The string to sign for a GET with only x-ms-date and x-ms-version, computed by hand
        // from the Shared Key rules; the key is Azurite's public development key.
        let key = B64.decode(DEV_KEY).expect("key");
        let headers = vec![
            (
                "x-ms-date".to_owned(),
                "Mon, 30 Nov 2026 17:00:00 GMT".to_owned(),
            ),
            ("x-ms-version".to_owned(), API_VERSION.to_owned()),
        ];
        let signature = shared_key_signature(
            &key,
            DEV_ACCOUNT,
            "GET",
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container&comp=list",
            &headers,
            0,
        )
        .expect("sign");
        let expected_string = "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 30 Nov 2026 17:00:00 GMT\n\
             x-ms-version:2021-08-06\n/devstoreaccount1/devstoreaccount1/c\ncomp:list\nrestype:container";
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("mac");
        mac.update(expected_string.as_bytes());
        assert_eq!(signature, B64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn lock_headers_and_block_list_have_the_documented_shape() {
        let until = time::macros::datetime!(2027-01-02 03:04:05 UTC);
        let headers = immutability_headers(until);
        assert_eq!(
            headers,
            vec![
                (
                    "x-ms-immutability-policy-until-date",
                    "Sat, 02 Jan 2027 03:04:05 GMT".to_owned()
                ),
                ("x-ms-immutability-policy-mode", "Locked".to_owned()),
            ]
        );
        assert_eq!(
            block_list_xml(&[block_id(0), block_id(1)]),
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>{}</Latest><Latest>{}</Latest></BlockList>"#,
                block_id(0),
                block_id(1)
            )
        );
        assert_eq!(block_id(0).len(), block_id(12345).len());
    }

    #[test]
    fn a_sas_token_on_the_command_line_is_refused_without_being_shown() {
        let err = BlobContainer::from_url(
            "https://acct.blob.core.windows.net/c/p?sv=2022-11-02&sig=SECRETSIG",
            &RemoteOptions::default(),
        )
        .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("AZURE_STORAGE_SAS_TOKEN"), "{text}");
        assert!(!text.contains("SECRETSIG"), "{text}");
    }

    #[test]
    fn percent_escapes_decode_and_stray_percents_stay() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn dates_round_trip() {
        let t = time::macros::datetime!(2026-11-30 17:00:00 UTC);
        assert_eq!(parse_httpdate(&httpdate(t)), Some(t));
    }
}
