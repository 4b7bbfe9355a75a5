//! S3 and S3-compatible stores (MinIO, Ceph, R2, moto) as a destination: a bucket and a
//! prefix, spoken to over the S3 REST API with Signature Version 4. An archive is a multipart
//! upload completed last (`If-None-Match: *`, so an existing object is never replaced) and
//! aborted on failure; `--lock-days` asks Object Lock (COMPLIANCE mode) for a retain-until
//! date on the new object, where the bucket has Object Lock enabled.
//!
//! Configuration follows the AWS conventions: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, else the profile (`AWS_PROFILE`, `~/.aws/credentials` and
//! `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`), else a web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, exchanged with STS); the region from
//! `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile; an endpoint from `AWS_ENDPOINT_URL_S3`
//! or `AWS_ENDPOINT_URL` (then path-style addressing).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DestError, ObjectInfo, ObjectStore, RemoteOptions, UploadState, http, xml};

#[derive(Clone)]
struct Credentials {
    access_key: String,
    secret_key: Arc<String>,
    session_token: Option<Arc<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// A bucket (and prefix).
#[derive(Debug, Clone)]
pub struct S3Bucket {
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
    region: String,
    /// `https://s3.REGION.amazonaws.com` (virtual-hosted) or a custom endpoint (path style).
    endpoint: String,
    path_style: bool,
    credentials: Credentials,
    /// Set when the credentials come from STS for a web identity token (EKS, GitHub OIDC):
    /// `credentials` is then a placeholder and each request asks [`WebIdentity::current`].
    web_identity: Option<WebIdentity>,
    client: reqwest::Client,
}

/// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: temporary credentials from STS
/// (AssumeRoleWithWebIdentity), cached until five minutes before they expire.
#[derive(Debug, Clone)]
struct WebIdentity {
    token_file: std::path::PathBuf,
    role_arn: String,
    session: String,
    sts: String,
    cache: Arc<tokio::sync::Mutex<Option<(Credentials, OffsetDateTime)>>>,
}

impl WebIdentity {
    async fn current(&self, client: &reqwest::Client) -> Result<Credentials, DestError> {
        let mut cache = self.cache.lock().await;
        if let Some((credentials, expires)) = cache.as_ref()
            && *expires > OffsetDateTime::now_utc() + time::Duration::minutes(5)
        {
            return Ok(credentials.clone());
        }
        let what = format!(
            "cannot assume {} with the web identity token",
            self.role_arn
        );
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| DestError::io(format!("cannot read {}", self.token_file.display()), e))?;
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", self.session.as_str()),
            ("WebIdentityToken", token.trim()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", http::encode(v, false)))
        .collect::<Vec<_>>()
        .join("&");
        // The token goes in the body, never in a URL that an error message could show.
        let response = http::send(&what, || {
            Ok(client
                .post(&self.sts)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone()))
        })
        .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let body = response.text().await.map_err(|e| DestError::Network {
            what: what.clone(),
            message: http::one_line(&e),
        })?;
        let field = |name: &str| {
            xml::text(&body, name).ok_or_else(|| {
                DestError::Credentials(format!("{what}: STS answered without {name}"))
            })
        };
        let credentials = Credentials {
            access_key: field("AccessKeyId")?,
            secret_key: Arc::new(field("SecretAccessKey")?),
            session_token: Some(Arc::new(field("SessionToken")?)),
        };
        let expires = xml::text(&body, "Expiration")
            .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
            .unwrap_or_else(|| OffsetDateTime::now_utc() + time::Duration::minutes(15));
        *cache = Some((credentials.clone(), expires));
        Ok(credentials)
    }
}

/// `[section]` → key → value, from an AWS ini file.
fn read_ini(path: &std::path::Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    out
}

fn home_file(options: &RemoteOptions, var: &str, default: &str) -> Option<std::path::PathBuf> {
    options.var(var).map(std::path::PathBuf::from).or_else(|| {
        options
            .var("HOME")
            .map(|h| std::path::Path::new(&h).join(default))
    })
}

impl S3Bucket {
    /// Resolves `s3://BUCKET[/PREFIX]` with the AWS configuration of the environment. Returns
    /// the store and the path after the bucket.
    pub fn from_url(text: &str, options: &RemoteOptions) -> Result<(Self, String), DestError> {
        let env = |name: &str| options.var(name);
        let rest = &text[5..];
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(DestError::InvalidUrl(format!(
                "{text}: no bucket (expected s3://BUCKET[/PREFIX])"
            )));
        }
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let config = home_file(options, "AWS_CONFIG_FILE", ".aws/config").map(|p| read_ini(&p));
        let config_section = config.as_ref().and_then(|c| {
            c.get(&format!("profile {profile}"))
                .or_else(|| c.get(&profile))
                .cloned()
        });
        let from_config = |key: &str| config_section.as_ref().and_then(|s| s.get(key).cloned());
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| from_config("region"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let custom = env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| from_config("endpoint_url"));
        let (endpoint, path_style) = match custom {
            Some(url) => (url.trim_end_matches('/').to_owned(), true),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                bucket.contains('.'),
            ),
        };
        let mut web_identity = None;
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret)) => Credentials {
                access_key,
                secret_key: Arc::new(secret),
                session_token: env("AWS_SESSION_TOKEN").map(Arc::new),
            },
            _ => {
                let file = home_file(options, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")
                    .map(|p| read_ini(&p))
                    .unwrap_or_default();
                let section = file
                    .get(&profile)
                    .cloned()
                    .or_else(|| config_section.clone());
                let get = |k: &str| section.as_ref().and_then(|s| s.get(k).cloned());
                match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                    (Some(access_key), Some(secret)) => Credentials {
                        access_key,
                        secret_key: Arc::new(secret),
                        session_token: get("aws_session_token").map(Arc::new),
                    },
                    _ => match (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
                        (Some(token_file), Some(role_arn)) => {
                            web_identity = Some(WebIdentity {
                                token_file: token_file.into(),
                                role_arn,
                                session: env("AWS_ROLE_SESSION_NAME")
                                    .unwrap_or_else(|| "coldvault".to_owned()),
                                sts: env("AWS_ENDPOINT_URL_STS")
                                    .or_else(|| env("AWS_ENDPOINT_URL"))
                                    .unwrap_or_else(|| {
                                        format!("https://sts.{region}.amazonaws.com")
                                    }),
                                cache: Arc::default(),
                            });
                            Credentials {
                                access_key: String::new(),
                                secret_key: Arc::default(),
                                session_token: None,
                            }
                        }
                        _ => {
                            return Err(DestError::Credentials(format!(
                                "no AWS credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID and \
                                 AWS_SECRET_ACCESS_KEY, AWS_PROFILE naming a profile with keys \
                                 (profile '{profile}' has none), or AWS_WEB_IDENTITY_TOKEN_FILE \
                                 and AWS_ROLE_ARN"
                            )));
                        }
                    },
                }
            }
        };
        let store = Self {
            bucket: bucket.to_owned(),
            prefix: super::folder_prefix(path),
            region,
            endpoint,
            path_style,
            credentials,
            web_identity,
            client: http::client()?,
        };
        Ok((store, path.to_owned()))
    }

    fn url(&self, name: Option<&str>) -> String {
        let key = name
            .map(|n| http::encode(&format!("{}{n}", self.prefix), true))
            .unwrap_or_default();
        if self.path_style {
            format!("{}/{}/{key}", self.endpoint, self.bucket)
        } else {
            let (scheme, host) = self.endpoint.split_once("://").unwrap_or(("https", ""));
            format!("{scheme}://{}.{host}/{key}", self.bucket)
        }
    }

    /// Builds a request signed with Signature Version 4 (the payload's SHA-256 signed too).
    fn request(
        &self,
        method: reqwest::Method,
        name: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &bytes::Bytes,
        credentials: &Credentials,
    ) -> Result<reqwest::RequestBuilder, DestError> {
        let base = self.url(name);
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (http::encode(k, false), http::encode(v, false)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let url = if canonical_query.is_empty() {
            base
        } else {
            format!("{base}?{canonical_query}")
        };
        let parsed = url::Url::parse(&url)
            .map_err(|e| DestError::InvalidUrl(format!("bad S3 request URL: {e}")))?;
        let host = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        };
        let now = OffsetDateTime::now_utc();
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let day = &amz_date[..8];
        let payload = hex::encode(Sha256::digest(body));
        let mut signed: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        signed.insert("host".to_owned(), host);
        signed.insert("x-amz-content-sha256".to_owned(), payload.clone());
        signed.insert("x-amz-date".to_owned(), amz_date.clone());
        if let Some(token) = &credentials.session_token {
            signed.insert("x-amz-security-token".to_owned(), token.to_string());
        }
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_names = signed.keys().cloned().collect::<Vec<_>>().join(";");
        let canonical_request = format!(
            "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_names}\n{payload}",
            method.as_str(),
            parsed.path()
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let key = signing_key(&credentials.secret_key, day, &self.region);
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        let mut builder = self.client.request(method, &url).header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
                credentials.access_key
            ),
        );
        for (k, v) in &signed {
            if k != "host" {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        Ok(builder.body(body.clone()))
    }

    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        name: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: bytes::Bytes,
    ) -> Result<reqwest::Response, DestError> {
        let credentials = match &self.web_identity {
            Some(identity) => identity.current(&self.client).await?,
            None => self.credentials.clone(),
        };
        http::send(what, || {
            self.request(method.clone(), name, query, headers, &body, &credentials)
        })
        .await
    }

    async fn body_text(what: &str, response: reqwest::Response) -> Result<String, DestError> {
        response.text().await.map_err(|e| DestError::Network {
            what: what.to_owned(),
            message: http::one_line(&e),
        })
    }
}

impl S3Bucket {
    async fn create_bucket(&self, object_lock: bool) -> Result<(), DestError> {
        let what = format!("cannot create bucket {}", self.bucket);
        let mut headers = Vec::new();
        if object_lock {
            headers.push(("x-amz-bucket-object-lock-enabled", "true".to_owned()));
        }
        let body = if self.region == "us-east-1" {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        let response = self
            .send(&what, reqwest::Method::PUT, None, &[], &headers, body)
            .await?;
        match response.status().as_u16() {
            200 | 409 => Ok(()),
            _ => Err(http::error(&what, response).await),
        }
    }
}

impl S3Bucket {
    /// Makes sure a just-completed object carries its retention: AWS applies the lock
    /// headers of CreateMultipartUpload, but some S3-compatible stores ignore them on
    /// multipart uploads; those get PutObjectRetention (which may only lengthen a lock).
    async fn ensure_retention(&self, name: &str, until: OffsetDateTime) -> Result<(), DestError> {
        if self.locked_until(name).await?.is_some() {
            return Ok(());
        }
        let what = format!("cannot lock {}", self.display_name(name));
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            super::listing::format_time(until)
        );
        let headers = [
            ("x-amz-checksum-crc32", crc32_base64(body.as_bytes())),
            ("x-amz-sdk-checksum-algorithm", "CRC32".to_owned()),
        ];
        let query = [("retention", String::new())];
        let response = self
            .send(
                &what,
                reqwest::Method::PUT,
                Some(name),
                &query,
                &headers,
                body.into(),
            )
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        if self.locked_until(name).await?.is_none() {
            return Err(DestError::Unsupported(format!(
                "{}: the store accepted the upload but keeps no retention on it",
                self.display_name(name)
            )));
        }
        Ok(())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, day: &str, region: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"s3");
    hmac(&k_service, b"aws4_request")
}

/// The Object Lock headers of a new object retained until `until` (COMPLIANCE mode: no one,
/// root included, can shorten or remove it).
pub fn object_lock_headers(until: OffsetDateTime) -> Vec<(&'static str, String)> {
    vec![
        ("x-amz-object-lock-mode", "COMPLIANCE".to_owned()),
        (
            "x-amz-object-lock-retain-until-date",
            super::listing::format_time(until),
        ),
        // An Object Lock upload needs a checksum on every part.
        ("x-amz-checksum-algorithm", "CRC32".to_owned()),
    ]
}

/// The body of CompleteMultipartUpload.
pub fn complete_xml(etags: &[String], checksums: Option<&[String]>) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (i, etag) in etags.iter().enumerate() {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
            i + 1,
            xml::escape(etag)
        ));
        if let Some(sum) = checksums.and_then(|c| c.get(i)) {
            body.push_str(&format!("<ChecksumCRC32>{sum}</ChecksumCRC32>"));
        }
        body.push_str("</Part>");
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

fn crc32_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(bytes).to_be_bytes())
}

#[async_trait::async_trait]
impl ObjectStore for S3Bucket {
    fn display(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
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
            .send(
                &what,
                reqwest::Method::HEAD,
                Some(name),
                &[],
                &[],
                Default::default(),
            )
            .await?;
        http::object_size(&what, response).await
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, DestError> {
        let what = format!("cannot list {}", self.display());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("delimiter", "/".to_owned()),
                ("list-type", "2".to_owned()),
                ("prefix", self.prefix.clone()),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token", token.clone()));
            }
            let response = self
                .send(
                    &what,
                    reqwest::Method::GET,
                    None,
                    &query,
                    &[],
                    Default::default(),
                )
                .await?;
            if !response.status().is_success() {
                return Err(http::error(&what, response).await);
            }
            let body = Self::body_text(&what, response).await?;
            for item in xml::elements(&body, "Contents") {
                let Some(key) = xml::text(item, "Key") else {
                    continue;
                };
                let Some(name) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_owned(),
                    size: xml::text(item, "Size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    modified: xml::text(item, "LastModified")
                        .and_then(|s| OffsetDateTime::parse(&s, &Rfc3339).ok()),
                });
            }
            let truncated = xml::text(&body, "IsTruncated").as_deref() == Some("true");
            token = xml::text(&body, "NextContinuationToken").filter(|t| !t.is_empty());
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn get_from(&self, name: &str, offset: u64) -> Result<reqwest::Response, DestError> {
        let what = format!("cannot read {}", self.display_name(name));
        let headers = if offset > 0 {
            vec![("range", format!("bytes={offset}-"))]
        } else {
            Vec::new()
        };
        let response = self
            .send(
                &what,
                reqwest::Method::GET,
                Some(name),
                &[],
                &headers,
                Default::default(),
            )
            .await?;
        match response.status().as_u16() {
            200 | 206 => Ok(response),
            404 => Err(DestError::NotFound(self.display_name(name))),
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<(), DestError> {
        if self.head(name).await?.is_some() {
            return Err(DestError::Exists(self.display_name(name)));
        }
        let what = format!("cannot write {}", self.display_name(name));
        let headers = [("if-none-match", "*".to_owned())];
        let response = self
            .send(
                &what,
                reqwest::Method::PUT,
                Some(name),
                &[],
                &headers,
                bytes.into(),
            )
            .await?;
        match response.status().as_u16() {
            200 => Ok(()),
            409 | 412 => Err(DestError::Exists(self.display_name(name))),
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn start_upload(
        &self,
        name: &str,
        lock_until: Option<OffsetDateTime>,
    ) -> Result<UploadState, DestError> {
        if self.head(name).await?.is_some() {
            return Err(DestError::Exists(self.display_name(name)));
        }
        let what = format!("cannot start the upload of {}", self.display_name(name));
        let headers = lock_until.map(object_lock_headers).unwrap_or_default();
        let query = [("uploads", String::new())];
        let response = self
            .send(
                &what,
                reqwest::Method::POST,
                Some(name),
                &query,
                &headers,
                Default::default(),
            )
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let body = Self::body_text(&what, response).await?;
        let upload_id = xml::text(&body, "UploadId").ok_or_else(|| DestError::Http {
            what: what.clone(),
            status: 200,
            code: Some("no UploadId in the answer".to_owned()),
        })?;
        Ok(UploadState {
            upload_id: Some(upload_id),
            parts: Vec::new(),
            checksums: lock_until.is_some(),
        })
    }

    async fn put_part(
        &self,
        name: &str,
        state: &UploadState,
        index: usize,
        bytes: bytes::Bytes,
    ) -> Result<String, DestError> {
        let what = format!(
            "cannot upload part {} of {}",
            index + 1,
            self.display_name(name)
        );
        let query = [
            ("partNumber", (index + 1).to_string()),
            ("uploadId", state.upload_id.clone().unwrap_or_default()),
        ];
        let checksum = crc32_base64(&bytes);
        let headers = if state.checksums {
            vec![("x-amz-checksum-crc32", checksum.clone())]
        } else {
            Vec::new()
        };
        let response = self
            .send(
                &what,
                reqwest::Method::PUT,
                Some(name),
                &query,
                &headers,
                bytes,
            )
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| DestError::Http {
                what,
                status: 200,
                code: Some("no ETag in the answer".to_owned()),
            })?;
        // Kept with the ETag: the checksum goes into the completion of a locked upload.
        Ok(format!("{etag}\n{checksum}"))
    }

    async fn commit_upload(
        &self,
        name: &str,
        state: &UploadState,
        size: u64,
        lock_until: Option<OffsetDateTime>,
    ) -> Result<(), DestError> {
        let what = format!("cannot complete the upload of {}", self.display_name(name));
        let (etags, sums): (Vec<String>, Vec<String>) = state
            .parts
            .iter()
            .map(|p| {
                let (etag, sum) = p.split_once('\n').unwrap_or((p, ""));
                (etag.to_owned(), sum.to_owned())
            })
            .unzip();
        let body = complete_xml(&etags, lock_until.map(|_| sums.as_slice()));
        let query = [("uploadId", state.upload_id.clone().unwrap_or_default())];
        let headers = [("if-none-match", "*".to_owned())];
        let response = self
            .send(
                &what,
                reqwest::Method::POST,
                Some(name),
                &query,
                &headers,
                body.into(),
            )
            .await?;
        let status = response.status().as_u16();
        let text = Self::body_text(&what, response).await.unwrap_or_default();
        // CompleteMultipartUpload can answer 200 and carry an error in its body.
        let code = xml::text(&text, "Code");
        match (status, code.as_deref()) {
            (200, None) => match lock_until {
                Some(until) => self.ensure_retention(name, until).await,
                None => Ok(()),
            },
            (412, _) | (_, Some("PreconditionFailed")) => {
                Err(DestError::Exists(self.display_name(name)))
            }
            // A retry after a lost answer finds the upload gone: ours, if the object has
            // our size.
            (404, _) | (_, Some("NoSuchUpload")) if self.head(name).await? == Some(size) => Ok(()),
            _ => Err(DestError::Http { what, status, code }),
        }
    }

    async fn abort_upload(&self, name: &str, state: &UploadState) -> Result<(), DestError> {
        let what = format!("cannot abort the upload of {}", self.display_name(name));
        let query = [("uploadId", state.upload_id.clone().unwrap_or_default())];
        let response = self
            .send(
                &what,
                reqwest::Method::DELETE,
                Some(name),
                &query,
                &[],
                Default::default(),
            )
            .await?;
        match response.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn locked_until(&self, name: &str) -> Result<Option<String>, DestError> {
        // HEAD carries the retention (with s3:GetObjectRetention) and the legal hold.
        let what = format!("cannot look up {}", self.display_name(name));
        let response = self
            .send(
                &what,
                reqwest::Method::HEAD,
                Some(name),
                &[],
                &[],
                Default::default(),
            )
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let header = |n: &str| {
            response
                .headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if header("x-amz-object-lock-legal-hold").as_deref() == Some("ON") {
            return Ok(Some("the legal hold is removed".to_owned()));
        }
        let until = header("x-amz-object-lock-retain-until-date")
            .and_then(|s| OffsetDateTime::parse(&s, &Rfc3339).ok());
        Ok(until
            .filter(|u| *u > OffsetDateTime::now_utc())
            .map(super::listing::format_time))
    }

    async fn delete(&self, name: &str) -> Result<(), DestError> {
        let what = format!("cannot delete {}", self.display_name(name));
        let response = self
            .send(
                &what,
                reqwest::Method::DELETE,
                Some(name),
                &[],
                &[],
                Default::default(),
            )
            .await?;
        match response.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            403 => Err(DestError::Locked {
                what: self.display_name(name),
                until: None,
            }),
            _ => Err(http::error(&what, response).await),
        }
    }

    async fn create(&self, lockable: bool) -> Result<(), DestError> {
        self.create_bucket(lockable).await
    }

    async fn unfinished_uploads(&self) -> Result<Vec<String>, DestError> {
        let what = format!("cannot list the uploads of {}", self.display());
        let query = [("prefix", self.prefix.clone()), ("uploads", String::new())];
        let response = self
            .send(
                &what,
                reqwest::Method::GET,
                None,
                &query,
                &[],
                Default::default(),
            )
            .await?;
        if !response.status().is_success() {
            return Err(http::error(&what, response).await);
        }
        let body = Self::body_text(&what, response).await?;
        Ok(xml::elements(&body, "Upload")
            .into_iter()
            .filter_map(|u| xml::text(u, "Key"))
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned))
            .collect())
    }

    async fn check_lock_support(&self) -> Result<(), DestError> {
        let what = format!(
            "cannot read the Object Lock settings of s3://{}",
            self.bucket
        );
        let query = [("object-lock", String::new())];
        let response = self
            .send(
                &what,
                reqwest::Method::GET,
                None,
                &query,
                &[],
                Default::default(),
            )
            .await?;
        let status = response.status().as_u16();
        let text = Self::body_text(&what, response).await.unwrap_or_default();
        if status == 200 && xml::text(&text, "ObjectLockEnabled").as_deref() == Some("Enabled") {
            Ok(())
        } else if status == 200 || status == 404 {
            Err(DestError::Unsupported(format!(
                "--lock-days: bucket {} does not have Object Lock enabled",
                self.bucket
            )))
        } else {
            Err(DestError::Http {
                what,
                status,
                code: xml::text(&text, "Code"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // From the AWS Signature Version 4 documentation ("Examples of how to derive a
        // signing key"): secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215,
        // us-east-1, service iam. Our helper fixes the service to s3, so the chain is
        // recomputed here with iam.
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), b"20120215");
        let k_region = hmac(&k_date, b"us-east-1");
        let k_service = hmac(&k_region, b"iam");
        let k_signing = hmac(&k_service, b"aws4_request");
        assert_eq!(
            hex::encode(k_signing),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn lock_headers_and_completion_have_the_documented_shape() {
        let until = time::macros::datetime!(2027-01-02 03:04:05 UTC);
        let headers = object_lock_headers(until);
        assert_eq!(
            headers[0],
            ("x-amz-object-lock-mode", "COMPLIANCE".to_owned())
        );
        assert_eq!(
            headers[1],
            (
                "x-amz-object-lock-retain-until-date",
                "2027-01-02T03:04:05Z".to_owned()
            )
        );
        let body = complete_xml(&["\"e1\"".to_owned()], Some(&["AAAA".to_owned()]));
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag>\
             <ChecksumCRC32>AAAA</ChecksumCRC32></Part></CompleteMultipartUpload>"
        );
    }
}
