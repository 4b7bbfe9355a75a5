//! The credential chain: which Azure identity coldvault signs in with.
//!
//! Azure users expect the order of the SDKs' default chain, and so does this one unless `--auth`
//! pins a method: a service principal from the environment (`AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, and `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` (a PEM file
//! with the certificate and its RSA key); `AZURE_AUTHORITY_HOST` honoured), workload identity
//! (`AZURE_FEDERATED_TOKEN_FILE`), managed identity, then the Azure CLI's login. Every method is
//! an `azure_identity` credential whose HTTP pipeline uses coldvault's transport, so a token
//! endpoint behind `--ca-cert` (the local emulator's issuer) is trusted like the vault. The
//! variables are read from an explicit [`EnvSnapshot`], never from the process environment
//! behind the caller's back — except the managed-identity endpoint variables (`IDENTITY_ENDPOINT`,
//! `IDENTITY_HEADER`, `MSI_ENDPOINT`), which `azure_identity` reads itself. The first method that
//! produces a token is kept for the rest of the run; [`CredentialChain::selected`] says which,
//! and when none works [`AuthError`] lists what each one tried and why it failed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    Executor, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

/// Entra ID's authority host in Azure's public cloud.
const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// How long a client assertion is valid.
const ASSERTION_LIFETIME_SECONDS: i64 = 600;

/// How long the chain waits for managed identity before moving on: off Azure, the instance
/// metadata endpoint may never answer.
const MANAGED_IDENTITY_PROBE: Duration = Duration::from_secs(5);
/// How long the chain waits for the Azure CLI.
const AZURE_CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variables a connection reads: the chain's, and the extra root.
const CREDENTIAL_VARIABLES: &[&str] = &[
    "COLDVAULT_CA_CERT",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// Variables whose values are secrets: never shown by `Debug`.
const SECRET_VARIABLES: &[&str] = &["AZURE_CLIENT_SECRET"];

/// A way to sign in, as `--auth` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthMethod {
    /// A service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`
    /// (or `AZURE_CLIENT_CERTIFICATE_PATH`, PEM).
    Env,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`, as on AKS).
    WorkloadIdentity,
    /// The managed identity of the Azure host (App Service, Functions, VMs).
    ManagedIdentity,
    /// The Azure CLI's login (`az login`).
    AzureCli,
}

impl AuthMethod {
    /// The chain's order.
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::Env,
        AuthMethod::WorkloadIdentity,
        AuthMethod::ManagedIdentity,
        AuthMethod::AzureCli,
    ];

    /// The `--auth` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Env => "env",
            AuthMethod::WorkloadIdentity => "workload-identity",
            AuthMethod::ManagedIdentity => "managed-identity",
            AuthMethod::AzureCli => "azure-cli",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `--auth` value that names no method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown authentication method '{0}': expected env, workload-identity, managed-identity or azure-cli"
)]
pub struct UnknownAuthMethod(pub String);

impl FromStr for AuthMethod {
    type Err = UnknownAuthMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuthMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownAuthMethod(s.to_owned()))
    }
}

/// The credential variables, captured once. Tests build one explicitly instead of changing the
/// process environment (which every thread shares). `Debug` hides secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvSnapshot {
    vars: BTreeMap<String, String>,
}

impl EnvSnapshot {
    /// The variables a connection reads (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH`, `AZURE_AUTHORITY_HOST`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, `COLDVAULT_CA_CERT`) from this process; empty ones count
    /// as unset.
    pub fn from_process() -> Self {
        Self::from_pairs(
            CREDENTIAL_VARIABLES
                .iter()
                .filter_map(|name| std::env::var(name).ok().map(|v| (*name, v))),
        )
    }

    /// A snapshot holding exactly these variables (empty values count as unset).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        }
    }

    /// A variable's value, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl fmt::Debug for EnvSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.vars {
            if SECRET_VARIABLES.contains(&name.as_str()) {
                map.entry(name, &"[redacted]");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

/// What one method tried and why it did not produce a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// The method.
    pub method: AuthMethod,
    /// Why it failed or was skipped, in one line: which variable is missing, or which
    /// credential answered what. Never a secret or a token.
    pub reason: String,
    /// What would fix it, when the attempt shows what (a variable to set, a secret the issuer
    /// refused); `None` for a method that simply is not configured.
    pub hint: Option<String>,
}

impl AuthAttempt {
    /// A method that was skipped or failed without pointing at a fix.
    pub fn new(method: AuthMethod, reason: impl Into<String>) -> Self {
        Self {
            method,
            reason: reason.into(),
            hint: None,
        }
    }
}

/// No method produced a token; each attempt says why, and [`AuthError::hint`] what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AuthError {
    /// The methods tried, in order.
    pub attempts: Vec<AuthAttempt>,
    /// What to do when no attempt points at a fix; never names a variable that is set.
    pub fallback_hint: String,
}

impl AuthError {
    /// The hint of the first attempt that has one (a missing variable, a refused secret),
    /// otherwise the fallback.
    pub fn hint(&self) -> &str {
        self.attempts
            .iter()
            .find_map(|a| a.hint.as_deref())
            .unwrap_or(&self.fallback_hint)
    }
}

impl fmt::Display for AuthError {
    /// One line: `cannot sign in to Azure: env: …; azure-cli: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot sign in to Azure")?;
        for (i, attempt) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{}: {}", attempt.method, attempt.reason)?;
        }
        Ok(())
    }
}

/// Which method signed in, and with what (tenant and client id, or the endpoint used), for the
/// "signed in with …" line on stderr. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedCredential {
    /// The method.
    pub method: AuthMethod,
    /// A short description (`service principal <client id> in tenant <tenant>`).
    pub detail: String,
}

impl fmt::Display for SelectedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.method, self.detail)
    }
}

/// One method ready to be tried.
#[derive(Debug)]
struct Candidate {
    method: AuthMethod,
    detail: String,
    credential: Arc<dyn TokenCredential>,
    /// How long to wait for it before moving on (`None`: as long as it takes).
    timeout: Option<Duration>,
    /// Who was refused, for the reason when the issuer refuses (`service principal
    /// (AZURE_CLIENT_ID=…, AZURE_TENANT_ID=…): the issuer refused the client secret`).
    refused: String,
    /// What to check when the issuer refuses.
    hint_refused: String,
    /// Who answered, for any other refusal (`the issuer refused the sign-in`, `the identity
    /// endpoint answered`).
    answered: String,
}

/// Runs the Azure CLI on tokio's process support instead of blocking a runtime thread.
#[derive(Debug)]
struct TokioExecutor;

#[async_trait::async_trait]
impl Executor for TokioExecutor {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<Output> {
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
    }
}

/// Signs client assertions with a service principal's certificate (`AZURE_CLIENT_CERTIFICATE_PATH`,
/// a PEM file holding the certificate and its RSA private key), as Entra ID's certificate
/// credentials expect: an RS256 JWT naming the certificate by its SHA-1 and SHA-256 thumbprints
/// (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>).
struct CertificateAssertion {
    client_id: String,
    audience: String,
    x5t: String,
    x5t_s256: String,
    signing_key: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    fn from_pem_file(path: &Path, client_id: &str, audience: String) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read AZURE_CLIENT_CERTIFICATE_PATH '{}': {e}",
                path.display()
            )
        })?;
        Self::from_pem(&pem, client_id, audience).map_err(|e| format!("'{}': {e}", path.display()))
    }

    fn from_pem(pem: &[u8], client_id: &str, audience: String) -> Result<Self, String> {
        use base64::Engine as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        use sha1::Digest as _;

        let certificate = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .ok_or("no CERTIFICATE block (a PEM file with the certificate and its private key is needed; PFX is not supported)")?
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let key = rustls_pemfile::private_key(&mut &pem[..])
            .map_err(|e| format!("unreadable private key: {e}"))?
            .ok_or("no PRIVATE KEY block")?;
        let key = match &key {
            rustls::pki_types::PrivateKeyDer::Pkcs8(der) => {
                rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
            }
            rustls::pki_types::PrivateKeyDer::Pkcs1(der) => {
                rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
                    .map_err(rsa::pkcs8::Error::from)
            }
            _ => return Err("the private key is not an RSA key".to_owned()),
        }
        .map_err(|_| "the private key is not an RSA key".to_owned())?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Ok(Self {
            client_id: client_id.to_owned(),
            audience,
            x5t: b64.encode(sha1::Sha1::digest(certificate.as_ref())),
            x5t_s256: b64.encode(sha2::Sha256::digest(certificate.as_ref())),
            signing_key: rsa::pkcs1v15::SigningKey::new(key),
        })
    }

    fn sign(&self, now: i64) -> String {
        use base64::Engine as _;
        use rsa::signature::{SignatureEncoding as _, Signer as _};

        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = self.signing_key.sign(signing_input.as_bytes()).to_bytes();
        format!("{signing_input}.{}", b64.encode(signature))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(
        &self,
        _options: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        Ok(self.sign(time::OffsetDateTime::now_utc().unix_timestamp()))
    }
}

/// The chain as one `TokenCredential`: tries the methods in order on the first token request,
/// keeps the first that works. Shared by every client of one vault.
#[derive(Debug)]
pub struct CredentialChain {
    candidates: Vec<Candidate>,
    /// Methods skipped at construction (variables missing), reported with the failures.
    skipped: Vec<AuthAttempt>,
    /// The hint when no attempt points at a fix (see [`AuthError::hint`]).
    fallback_hint: String,
    /// Index of the chosen candidate once one produced a token.
    selected: Mutex<Option<usize>>,
    /// Serialises the first sign-in, so concurrent first requests do not all probe the chain.
    first_sign_in: tokio::sync::Mutex<()>,
    /// What the last failed sign-in tried.
    last_failure: Mutex<Option<AuthError>>,
}

/// The authority host for a vault: `AZURE_AUTHORITY_HOST` if set, else the sovereign cloud the
/// vault's host belongs to, else Azure public (`None`).
fn authority_host(env: &EnvSnapshot, vault_host: &str) -> Option<String> {
    if let Some(host) = env.get("AZURE_AUTHORITY_HOST") {
        return Some(host.to_owned());
    }
    let host = vault_host.to_ascii_lowercase();
    if host.ends_with(".vault.azure.cn") {
        Some("https://login.chinacloudapi.cn".to_owned())
    } else if host.ends_with(".vault.usgovcloudapi.net") {
        Some("https://login.microsoftonline.us".to_owned())
    } else {
        None
    }
}

fn client_options(
    transport: &Transport,
    authority: Option<&str>,
    max_retries: u32,
) -> ClientOptions {
    let cloud = authority.map(|host| {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.to_owned();
        Arc::new(CloudConfiguration::from(custom))
    });
    ClientOptions {
        transport: Some(transport.clone()),
        cloud,
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            max_retries,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn missing(env: &EnvSnapshot, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| env.get(n).is_none())
        .map(|n| (*n).to_owned())
        .collect()
}

/// `A`, `A and B`, `A, B and C`.
fn and_list<S: AsRef<str>>(names: &[S]) -> String {
    match names {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        [init @ .., last] => format!(
            "{} and {}",
            init.iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

/// `AZURE_TENANT_ID is set but AZURE_CLIENT_ID is not`: a method configured halfway.
fn incomplete(method: AuthMethod, set: &[&str], unset: &[String]) -> AuthAttempt {
    let verb = |n: usize| if n == 1 { "is" } else { "are" };
    AuthAttempt {
        method,
        reason: format!(
            "{} {} set but {} {} not",
            and_list(set),
            verb(set.len()),
            and_list(unset),
            verb(unset.len())
        ),
        hint: Some(format!("set {} too", and_list(unset))),
    }
}

/// What to do when no attempt points at a fix: the variables of the pinned method (or of a
/// service principal) that are not set, or `az login`. Never names a variable that is set.
fn fallback_hint(env: &EnvSnapshot, pinned: Option<AuthMethod>) -> String {
    let service_principal = || {
        let unset = missing(
            env,
            &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"],
        );
        (!unset.is_empty()).then(|| format!("set {}", and_list(&unset)))
    };
    match pinned {
        Some(AuthMethod::Env) => service_principal()
            .unwrap_or_else(|| "check the service principal's variables".to_owned()),
        Some(AuthMethod::WorkloadIdentity) => {
            let unset = missing(
                env,
                &[
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "AZURE_TENANT_ID",
                    "AZURE_CLIENT_ID",
                ],
            );
            if unset.is_empty() {
                "check the federated credential of AZURE_CLIENT_ID and its token file".to_owned()
            } else {
                format!("set {}", and_list(&unset))
            }
        }
        Some(AuthMethod::ManagedIdentity) => {
            "managed identity works on Azure hosts with an identity assigned (App Service, \
             Functions, VMs, AKS): pick another --auth elsewhere"
                .to_owned()
        }
        Some(AuthMethod::AzureCli) => "run `az login` (the Azure CLI must be on PATH)".to_owned(),
        None => match service_principal() {
            Some(set) => format!("{set} (or run `az login`), or pin one method with --auth"),
            None => "pin the method you mean with --auth to see only its failure".to_owned(),
        },
    }
}

/// What a credential's failure says: which issuer refused what (parsed from the OAuth error
/// response azure_identity keeps), or which host did not answer, or the SDK's text.
fn describe_failure(err: &azure_core::Error, candidate: &Candidate) -> (String, Option<String>) {
    let (refused, hint_refused) = (&candidate.refused, &candidate.hint_refused);
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(failure) = super::transport::find_network_failure(e) {
            return (
                format!("the token endpoint did not answer: {failure}"),
                Some(
                    "check the network path to the identity endpoint (proxy, firewall) and \
                     AZURE_AUTHORITY_HOST if set"
                        .to_owned(),
                ),
            );
        }
        if let Some(inner) = e.downcast_ref::<azure_core::Error>()
            && let ErrorKind::HttpResponse {
                status,
                raw_response: Some(raw),
                ..
            } = inner.kind()
        {
            let body: serde_json::Value = serde_json::from_slice(raw.body()).unwrap_or_default();
            let code = body["error"].as_str().unwrap_or("");
            // Entra's descriptions continue with trace and correlation ids on later lines.
            let description = body["error_description"]
                .as_str()
                .and_then(|d| d.lines().next())
                .unwrap_or("")
                .trim();
            let answer = match (code, description) {
                ("", "") => format!("HTTP {}", u16::from(*status)),
                (code, "") => code.to_owned(),
                ("", d) => d.to_owned(),
                (code, d) => format!("{code} ({d})"),
            };
            let hint = match code {
                "invalid_client" => Some(hint_refused.to_owned()),
                "unauthorized_client" => Some(
                    "check AZURE_CLIENT_ID: the tenant knows no application with this id"
                        .to_owned(),
                ),
                _ => Some("check AZURE_TENANT_ID and AZURE_CLIENT_ID".to_owned()),
            };
            let what = if code == "invalid_client" {
                refused.to_owned()
            } else {
                candidate.answered.clone()
            };
            return (format!("{what}: {answer}"), hint);
        }
        current = e.source();
    }
    (one_line(&err.to_string()), None)
}

impl CredentialChain {
    /// Builds the chain for a vault (its host picks the sovereign cloud when
    /// `AZURE_AUTHORITY_HOST` is not set). With `pinned`, only that method is tried, without
    /// time limits; a pinned method whose variables are missing fails here.
    pub fn new(
        env: &EnvSnapshot,
        pinned: Option<AuthMethod>,
        transport: &Transport,
        vault_host: &str,
    ) -> Result<Self, AuthError> {
        let authority = authority_host(env, vault_host);
        let methods: Vec<AuthMethod> = match pinned {
            Some(method) => vec![method],
            None => AuthMethod::ALL.to_vec(),
        };
        let mut candidates = Vec::new();
        let mut skipped = Vec::new();
        for method in methods {
            match Self::candidate(
                method,
                env,
                pinned.is_some(),
                transport,
                authority.as_deref(),
            ) {
                Ok(candidate) => candidates.push(candidate),
                Err(attempt) => skipped.push(attempt),
            }
        }
        let fallback_hint = fallback_hint(env, pinned);
        if candidates.is_empty() {
            return Err(AuthError {
                attempts: skipped,
                fallback_hint,
            });
        }
        Ok(Self {
            candidates,
            skipped,
            fallback_hint,
            selected: Mutex::new(None),
            first_sign_in: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
        })
    }

    fn candidate(
        method: AuthMethod,
        env: &EnvSnapshot,
        pinned: bool,
        transport: &Transport,
        authority: Option<&str>,
    ) -> Result<Candidate, AuthAttempt> {
        let tenant = env.get("AZURE_TENANT_ID");
        let client = env.get("AZURE_CLIENT_ID");
        let setup_failed =
            |e: azure_core::Error| AuthAttempt::new(method, one_line(&e.to_string()));
        match method {
            AuthMethod::Env => {
                let secret = env.get("AZURE_CLIENT_SECRET");
                let certificate = env.get("AZURE_CLIENT_CERTIFICATE_PATH");
                let federated = env.get("AZURE_FEDERATED_TOKEN_FILE").is_some();
                let credential_set = secret.is_some() || certificate.is_some();
                // AZURE_CLIENT_ID alone names a user-assigned managed identity, and with
                // AZURE_FEDERATED_TOKEN_FILE a workload identity: not a service principal
                // half configured.
                if !credential_set && (tenant.is_none() || federated) {
                    return Err(AuthAttempt::new(
                        method,
                        format!(
                            "not configured: {} not set",
                            and_list(&missing(
                                env,
                                &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]
                            ))
                        ),
                    ));
                }
                let mut set = Vec::new();
                let mut unset = Vec::new();
                for (name, value) in [("AZURE_TENANT_ID", tenant), ("AZURE_CLIENT_ID", client)] {
                    if value.is_some() {
                        set.push(name);
                    } else {
                        unset.push(name.to_owned());
                    }
                }
                match (secret, certificate) {
                    (Some(_), _) => set.push("AZURE_CLIENT_SECRET"),
                    (None, Some(_)) => set.push("AZURE_CLIENT_CERTIFICATE_PATH"),
                    (None, None) => unset
                        .push("AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH)".to_owned()),
                }
                let (Some(tenant), Some(client)) = (tenant, client) else {
                    return Err(incomplete(method, &set, &unset));
                };
                let Some(secret) = secret else {
                    let Some(path) = certificate else {
                        return Err(incomplete(method, &set, &unset));
                    };
                    let audience = format!(
                        "{}/{tenant}/oauth2/v2.0/token",
                        authority
                            .unwrap_or(PUBLIC_AUTHORITY_HOST)
                            .trim_end_matches('/')
                    );
                    let assertion =
                        CertificateAssertion::from_pem_file(Path::new(path), client, audience)
                            .map_err(|reason| AuthAttempt {
                                method,
                                reason,
                                hint: Some(
                                    "AZURE_CLIENT_CERTIFICATE_PATH must name a PEM file with \
                                     the certificate and its RSA private key"
                                        .to_owned(),
                                ),
                            })?;
                    let credential = ClientAssertionCredential::new(
                        tenant.to_owned(),
                        client.to_owned(),
                        assertion,
                        Some(ClientAssertionCredentialOptions {
                            client_options: client_options(transport, authority, 3),
                        }),
                    )
                    .map_err(setup_failed)?;
                    return Ok(Candidate {
                        method,
                        detail: format!(
                            "service principal {client} in tenant {tenant}, certificate {path}"
                        ),
                        credential,
                        timeout: None,
                        refused: format!(
                            "service principal (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant}): \
                             the issuer refused the client certificate"
                        ),
                        hint_refused: "check AZURE_CLIENT_CERTIFICATE_PATH: the issuer did not \
                                       accept this certificate for AZURE_CLIENT_ID (uploaded to \
                                       the app registration? expired?)"
                            .to_owned(),
                        answered: format!(
                            "service principal (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant}): \
                             the issuer refused the sign-in"
                        ),
                    });
                };
                let credential = ClientSecretCredential::new(
                    tenant,
                    client.to_owned(),
                    Secret::new(secret.to_owned()),
                    Some(ClientSecretCredentialOptions {
                        client_options: client_options(transport, authority, 3),
                    }),
                )
                .map_err(setup_failed)?;
                Ok(Candidate {
                    method,
                    detail: format!("service principal {client} in tenant {tenant}"),
                    credential,
                    timeout: None,
                    refused: format!(
                        "service principal (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant}): \
                         the issuer refused the client secret"
                    ),
                    hint_refused: "check AZURE_CLIENT_SECRET: the issuer did not accept it for \
                                   AZURE_CLIENT_ID (the secret's value, not its id; expired and \
                                   rotated secrets are refused)"
                        .to_owned(),
                    answered: format!(
                        "service principal (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant}): \
                         the issuer refused the sign-in"
                    ),
                })
            }
            AuthMethod::WorkloadIdentity => {
                let Some(file) = env.get("AZURE_FEDERATED_TOKEN_FILE") else {
                    return Err(AuthAttempt::new(
                        method,
                        "not configured: AZURE_FEDERATED_TOKEN_FILE not set",
                    ));
                };
                let (Some(tenant), Some(client)) = (tenant, client) else {
                    let mut set = vec!["AZURE_FEDERATED_TOKEN_FILE"];
                    set.extend(
                        [("AZURE_TENANT_ID", tenant), ("AZURE_CLIENT_ID", client)]
                            .into_iter()
                            .filter_map(|(name, value)| value.map(|_| name)),
                    );
                    let unset = missing(env, &["AZURE_TENANT_ID", "AZURE_CLIENT_ID"]);
                    return Err(incomplete(method, &set, &unset));
                };
                let credential =
                    WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                        credential_options: ClientAssertionCredentialOptions {
                            client_options: client_options(transport, authority, 3),
                        },
                        client_id: Some(client.to_owned()),
                        tenant_id: Some(tenant.to_owned()),
                        token_file_path: Some(PathBuf::from(file)),
                    }))
                    .map_err(|e| AuthAttempt {
                        method,
                        reason: one_line(&e.to_string()),
                        hint: Some(
                            "AZURE_FEDERATED_TOKEN_FILE must name a readable token file".to_owned(),
                        ),
                    })?;
                Ok(Candidate {
                    method,
                    detail: format!("workload identity {client} in tenant {tenant}"),
                    credential,
                    timeout: None,
                    refused: format!(
                        "workload identity (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant}): \
                         the issuer refused the federated token"
                    ),
                    hint_refused: "check the federated credential of AZURE_CLIENT_ID: its issuer \
                                   and subject must match the token in AZURE_FEDERATED_TOKEN_FILE"
                        .to_owned(),
                    answered: format!(
                        "workload identity (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant}): \
                         the issuer refused the sign-in"
                    ),
                })
            }
            AuthMethod::ManagedIdentity => {
                // As in the SDKs' default chain, AZURE_CLIENT_ID names a user-assigned identity.
                let user_assigned_id = client.map(|id| UserAssignedId::ClientId(id.to_owned()));
                let detail = match client {
                    Some(id) => format!("user-assigned identity {id}"),
                    None => "system-assigned identity".to_owned(),
                };
                let credential =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        user_assigned_id,
                        client_options: client_options(transport, None, if pinned { 5 } else { 0 }),
                    }))
                    .map_err(setup_failed)?;
                Ok(Candidate {
                    method,
                    refused: format!("{detail}: the identity endpoint refused the request"),
                    hint_refused: "check that the identity is assigned to this host".to_owned(),
                    answered: format!("{detail}: the identity endpoint answered"),
                    detail,
                    credential,
                    timeout: (!pinned).then_some(MANAGED_IDENTITY_PROBE),
                })
            }
            AuthMethod::AzureCli => {
                let credential = AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    executor: Some(Arc::new(TokioExecutor)),
                    ..Default::default()
                }))
                .map_err(setup_failed)?;
                Ok(Candidate {
                    method,
                    detail: "the Azure CLI's signed-in account".to_owned(),
                    credential,
                    timeout: Some(AZURE_CLI_TIMEOUT),
                    refused: "the Azure CLI's account was refused".to_owned(),
                    hint_refused: "run `az login` again".to_owned(),
                    answered: "the Azure CLI's account was refused".to_owned(),
                })
            }
        }
    }

    /// The method that produced the first token, once one has.
    pub fn selected(&self) -> Option<SelectedCredential> {
        let index = (*self
            .selected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))?;
        let candidate = self.candidates.get(index)?;
        Some(SelectedCredential {
            method: candidate.method,
            detail: candidate.detail.clone(),
        })
    }

    /// What the last failed sign-in tried, if the last sign-in failed.
    pub fn last_failure(&self) -> Option<AuthError> {
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn selected_index(&self) -> Option<usize> {
        *self
            .selected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn try_candidate(
        candidate: &Candidate,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> Result<AccessToken, AuthAttempt> {
        let attempt = candidate.credential.get_token(scopes, options);
        let result = match candidate.timeout {
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(AuthAttempt::new(
                        candidate.method,
                        format!("no answer within {} s", limit.as_secs()),
                    ));
                }
            },
            None => attempt.await,
        };
        result.map_err(|e| {
            let (reason, hint) = describe_failure(&e, candidate);
            // Managed identity and the Azure CLI fail wherever they are not set up: their
            // failure is no pointer to a fix unless the fallback says so.
            let configured = matches!(
                candidate.method,
                AuthMethod::Env | AuthMethod::WorkloadIdentity
            );
            AuthAttempt {
                method: candidate.method,
                reason,
                hint: hint.filter(|_| configured),
            }
        })
    }
}

/// Keeps the first line of an error chain's text, without the SDK's troubleshooting links.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("To troubleshoot"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait::async_trait]
impl TokenCredential for CredentialChain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(index) = self.selected_index()
            && let Some(candidate) = self.candidates.get(index)
        {
            return candidate.credential.get_token(scopes, options).await;
        }
        let _first = self.first_sign_in.lock().await;
        // Another task may have signed in while this one waited.
        if let Some(index) = self.selected_index()
            && let Some(candidate) = self.candidates.get(index)
        {
            return candidate.credential.get_token(scopes, options).await;
        }
        let mut attempts = self.skipped.clone();
        for (index, candidate) in self.candidates.iter().enumerate() {
            match Self::try_candidate(candidate, scopes, options.clone()).await {
                Ok(token) => {
                    *self
                        .selected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(index);
                    *self
                        .last_failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                    return Ok(token);
                }
                Err(attempt) => attempts.push(attempt),
            }
        }
        attempts.sort_by_key(|a| a.method);
        let error = AuthError {
            attempts,
            fallback_hint: self.fallback_hint.clone(),
        };
        let message = error.to_string();
        *self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            message,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh RSA-2048 key for rcgen (its ring backend signs with RSA keys but cannot make them).
    fn rsa_key_pair() -> rcgen::KeyPair {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &der.as_bytes().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap()
    }

    fn transport() -> Transport {
        super::super::transport::install_crypto_provider();
        super::super::transport::azure_transport(reqwest::Client::new())
    }

    #[test]
    fn auth_methods_parse() {
        for method in AuthMethod::ALL {
            assert_eq!(method.as_str().parse::<AuthMethod>(), Ok(method));
        }
        assert!("password".parse::<AuthMethod>().is_err());
    }

    #[test]
    fn snapshot_debug_hides_the_client_secret() {
        let env = EnvSnapshot::from_pairs([
            ("AZURE_CLIENT_ID", "client-1"),
            ("AZURE_CLIENT_SECRET", "canary-secret-77"),
            ("AZURE_TENANT_ID", ""),
        ]);
        let text = format!("{env:?}");
        assert!(!text.contains("canary-secret-77"));
        assert!(text.contains("client-1"));
        assert_eq!(env.get("AZURE_TENANT_ID"), None);
    }

    #[test]
    fn a_pinned_method_without_its_variables_fails_with_the_reason() {
        let env = EnvSnapshot::from_pairs([("AZURE_CLIENT_ID", "c")]);
        let err = CredentialChain::new(
            &env,
            Some(AuthMethod::Env),
            &transport(),
            "kv.vault.azure.net",
        )
        .unwrap_err();
        assert_eq!(err.attempts.len(), 1);
        assert_eq!(err.attempts[0].method, AuthMethod::Env);
        assert!(err.attempts[0].reason.contains("AZURE_TENANT_ID"));
        let err = CredentialChain::new(
            &env,
            Some(AuthMethod::WorkloadIdentity),
            &transport(),
            "kv.vault.azure.net",
        )
        .unwrap_err();
        assert!(err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"));
    }

    #[test]
    fn the_chain_keeps_every_method_in_order() {
        let env = EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]);
        let chain = CredentialChain::new(&env, None, &transport(), "kv.vault.azure.net").unwrap();
        let methods: Vec<AuthMethod> = chain.candidates.iter().map(|c| c.method).collect();
        assert_eq!(
            methods,
            vec![
                AuthMethod::Env,
                AuthMethod::ManagedIdentity,
                AuthMethod::AzureCli
            ]
        );
        assert_eq!(chain.skipped[0].method, AuthMethod::WorkloadIdentity);
        assert!(chain.selected().is_none());
    }

    #[test]
    fn sovereign_clouds_pick_their_authority() {
        let env = EnvSnapshot::default();
        assert_eq!(
            authority_host(&env, "kv.vault.azure.cn").as_deref(),
            Some("https://login.chinacloudapi.cn")
        );
        assert_eq!(
            authority_host(&env, "kv.vault.usgovcloudapi.net").as_deref(),
            Some("https://login.microsoftonline.us")
        );
        assert_eq!(authority_host(&env, "kv.vault.azure.net"), None);
        let env = EnvSnapshot::from_pairs([("AZURE_AUTHORITY_HOST", "https://login.localhost:9")]);
        assert_eq!(
            authority_host(&env, "kv.vault.azure.cn").as_deref(),
            Some("https://login.localhost:9")
        );
    }

    #[test]
    fn certificate_assertions_are_signed_rs256_jwts_naming_the_certificate() {
        use base64::Engine as _;
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::signature::Verifier as _;

        let key = rsa_key_pair();
        let params = rcgen::CertificateParams::new(vec!["coldvault-sp".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let assertion = CertificateAssertion::from_pem(
            pem.as_bytes(),
            "client-1",
            "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token".to_owned(),
        )
        .unwrap();
        let jwt = assertion.sign(1_700_000_000);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"].as_str().map(str::len), Some(27));
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(
            claims["aud"],
            "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
        );
        assert_eq!(claims["exp"], 1_700_000_000 + ASSERTION_LIFETIME_SECONDS);
        let public = rsa::RsaPublicKey::from_public_key_der(&key.public_key_der()).unwrap();
        let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
        let signature =
            rsa::pkcs1v15::Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
        verifier
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        assert!(!format!("{assertion:?}").contains("PRIVATE"));
    }

    #[test]
    fn certificate_files_without_a_key_are_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err =
            CertificateAssertion::from_pem(cert.pem().as_bytes(), "c", "a".to_owned()).unwrap_err();
        assert!(err.contains("PRIVATE KEY"), "{err}");
        let err = CertificateAssertion::from_pem(b"junk", "c", "a".to_owned()).unwrap_err();
        assert!(err.contains("CERTIFICATE"), "{err}");
        // An EC key is not usable for Entra ID certificate credentials.
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let err = CertificateAssertion::from_pem(pem.as_bytes(), "c", "a".to_owned()).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
    }

    #[test]
    fn the_certificate_path_makes_an_env_candidate() {
        let key = rsa_key_pair();
        let cert = rcgen::CertificateParams::new(vec!["sp".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sp.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let env = EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_CERTIFICATE_PATH", path.to_str().unwrap()),
        ]);
        let chain = CredentialChain::new(
            &env,
            Some(AuthMethod::Env),
            &transport(),
            "kv.vault.azure.net",
        )
        .unwrap();
        assert!(chain.candidates[0].detail.contains("certificate"));
    }

    /// A credential that always answers the same way.
    #[derive(Debug)]
    struct Fixed(Result<&'static str, &'static str>);

    #[async_trait::async_trait]
    impl TokenCredential for Fixed {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            match self.0 {
                Ok(token) => Ok(AccessToken::new(
                    token.to_owned(),
                    time::OffsetDateTime::now_utc() + time::Duration::hours(1),
                )),
                Err(reason) => Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    reason,
                )),
            }
        }
    }

    fn chain_of(candidates: Vec<(AuthMethod, Fixed)>) -> CredentialChain {
        CredentialChain {
            candidates: candidates
                .into_iter()
                .map(|(method, credential)| Candidate {
                    method,
                    detail: method.to_string(),
                    credential: Arc::new(credential),
                    timeout: Some(Duration::from_secs(1)),
                    refused: format!("{method}: refused"),
                    hint_refused: "check it".into(),
                    answered: format!("{method}: answered"),
                })
                .collect(),
            skipped: vec![AuthAttempt::new(
                AuthMethod::WorkloadIdentity,
                "not configured",
            )],
            fallback_hint: "run `az login`".into(),
            selected: Mutex::new(None),
            first_sign_in: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
        }
    }

    #[tokio::test]
    async fn the_first_method_that_works_is_kept() {
        let chain = chain_of(vec![
            (
                AuthMethod::Env,
                Fixed(Err("AADSTS7000215: invalid client secret")),
            ),
            (AuthMethod::ManagedIdentity, Fixed(Ok("token-mi"))),
            (AuthMethod::AzureCli, Fixed(Ok("token-cli"))),
        ]);
        let token = chain
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap();
        assert_eq!(token.token.secret(), "token-mi");
        assert_eq!(
            chain.selected().unwrap().method,
            AuthMethod::ManagedIdentity
        );
        let again = chain
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap();
        assert_eq!(again.token.secret(), "token-mi");
        assert!(chain.last_failure().is_none());
    }

    #[tokio::test]
    async fn when_nothing_works_every_attempt_is_reported_in_chain_order() {
        let chain = chain_of(vec![
            (
                AuthMethod::Env,
                Fixed(Err("AADSTS7000215: invalid client secret")),
            ),
            (AuthMethod::AzureCli, Fixed(Err("az: command not found"))),
        ]);
        let err = chain
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            azure_core::error::ErrorKind::Credential
        ));
        let failure = chain.last_failure().unwrap();
        let methods: Vec<AuthMethod> = failure.attempts.iter().map(|a| a.method).collect();
        assert_eq!(
            methods,
            vec![
                AuthMethod::Env,
                AuthMethod::WorkloadIdentity,
                AuthMethod::AzureCli
            ]
        );
        assert!(failure.attempts[0].reason.contains("AADSTS7000215"));
        assert!(failure.attempts[2].reason.contains("command not found"));
        assert!(chain.selected().is_none());
    }

    #[test]
    fn workload_identity_reads_its_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "federated-token").unwrap();
        let env = EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ]);
        let chain = CredentialChain::new(
            &env,
            Some(AuthMethod::WorkloadIdentity),
            &transport(),
            "kv.vault.azure.net",
        )
        .unwrap();
        assert_eq!(chain.candidates[0].method, AuthMethod::WorkloadIdentity);
        let env = EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/coldvault/token"),
        ]);
        let err = CredentialChain::new(
            &env,
            Some(AuthMethod::WorkloadIdentity),
            &transport(),
            "kv.vault.azure.net",
        )
        .unwrap_err();
        assert_eq!(err.attempts[0].method, AuthMethod::WorkloadIdentity);
    }

    #[test]
    fn auth_errors_list_every_attempt() {
        let err = AuthError {
            attempts: vec![
                AuthAttempt::new(AuthMethod::Env, "not configured"),
                AuthAttempt::new(AuthMethod::AzureCli, "az not found"),
            ],
            fallback_hint: "run `az login`".into(),
        };
        let text = err.to_string();
        assert!(text.contains("env: not configured"));
        assert!(text.contains("azure-cli: az not found"));
    }

    #[test]
    fn a_half_configured_service_principal_names_the_missing_variable() {
        let env = EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_SECRET", "canary-secret-91"),
        ]);
        let err = CredentialChain::new(
            &env,
            Some(AuthMethod::Env),
            &transport(),
            "kv.vault.azure.net",
        )
        .unwrap_err();
        assert_eq!(
            err.attempts[0].reason,
            "AZURE_TENANT_ID and AZURE_CLIENT_SECRET are set but AZURE_CLIENT_ID is not"
        );
        assert_eq!(err.hint(), "set AZURE_CLIENT_ID too");
        assert!(!format!("{err} {err:?}").contains("canary-secret-91"));
        // AZURE_CLIENT_ID alone is a user-assigned managed identity, not half a principal.
        let env = EnvSnapshot::from_pairs([("AZURE_CLIENT_ID", "mi-client")]);
        let chain = CredentialChain::new(&env, None, &transport(), "kv.vault.azure.net").unwrap();
        assert!(chain.skipped[0].reason.starts_with("not configured"));
        assert!(chain.skipped[0].hint.is_none());
    }

    #[test]
    fn fallback_hints_never_name_a_variable_that_is_set() {
        let env = EnvSnapshot::from_pairs([("AZURE_TENANT_ID", "t")]);
        let hint = fallback_hint(&env, None);
        assert!(
            hint.contains("AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"),
            "{hint}"
        );
        assert!(!hint.contains("AZURE_TENANT_ID"), "{hint}");
        let env = EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]);
        assert!(!fallback_hint(&env, None).contains("set AZURE"));
        assert!(!fallback_hint(&env, Some(AuthMethod::Env)).contains("set AZURE"));
    }

    #[test]
    fn the_first_pointed_hint_wins() {
        let err = AuthError {
            attempts: vec![
                AuthAttempt::new(AuthMethod::Env, "not configured"),
                AuthAttempt {
                    method: AuthMethod::WorkloadIdentity,
                    reason: "AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID is not".into(),
                    hint: Some("set AZURE_CLIENT_ID too".into()),
                },
            ],
            fallback_hint: "run `az login`".into(),
        };
        assert_eq!(err.hint(), "set AZURE_CLIENT_ID too");
        assert_eq!(
            err.to_string(),
            "cannot sign in to Azure: env: not configured; workload-identity: \
             AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID is not"
        );
    }
}
