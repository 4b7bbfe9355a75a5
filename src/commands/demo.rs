//! `coldvault demo`: the whole story on the embedded local Key Vault, told with the real
//! commands a user would type.
//!
//! It starts the local Key Vault in this process with three vaults (`prod`, `prod-dr` in the
//! same subscription, `elsewhere` in another), seeds `prod` with a realistic mix over the REST
//! API, then runs this very binary for each step — keygen, backup, inspect, verify, an
//! accidental deletion, diff, restore (recover plus native), native restore into a second
//! vault, plain restore into another subscription — printing each command and its output.
//! Everything it keeps lives in one folder it names: the identity, the archive and the local
//! vault's state (so the closing state can be examined afterwards with
//! `coldvault emulator --state-dir FOLDER/local-vault`). The server stops when the demo ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::cli::demo::DemoArgs;
use crate::emulator::{self, EmulatorConfig, Ready, RunningEmulator, VaultSpec};
use crate::error::{CliError, ExitCode};

/// Prints one line of the story on stdout. A reader that closed the pipe early (`| head`)
/// drops the rest without a panic (`output::stdout`); the story is narration, so any other
/// write error does not stop the steps either.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(crate::output::stdout::report(), $($arg)*);
    }};
}

/// The local vault's api-version for seeding requests.
const API_VERSION: &str = "7.5";

/// Runs `coldvault demo`.
pub async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let dir = prepare_dir(args.dir)?;
    let running = emulator::start(EmulatorConfig {
        vaults: vec![
            vault("prod", "sub-contoso-prod"),
            vault("prod-dr", "sub-contoso-prod"),
            vault("elsewhere", "sub-fabrikam"),
        ],
        state_dir: Some(dir.join("local-vault")),
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| CliError::failed(format!("cannot start the local Key Vault: {e}")))?;
    let outcome = story(&dir, &running).await;
    running.shutdown().await;
    outcome?;
    say!();
    say!("Done. Everything is in {}", dir.display());
    say!(
        "Look again with: coldvault emulator --state-dir {} --vault prod --vault prod-dr \
         --vault elsewhere,subscription=sub-fabrikam",
        dir.join("local-vault").display()
    );
    Ok(ExitCode::Ok)
}

fn vault(name: &str, subscription: &str) -> VaultSpec {
    let mut spec = VaultSpec::new(name);
    spec.subscription = subscription.to_owned();
    spec.geo = "westeurope".to_owned();
    spec
}

fn prepare_dir(dir: Option<PathBuf>) -> Result<PathBuf, CliError> {
    match dir {
        Some(dir) => {
            std::fs::create_dir(&dir).map_err(|e| {
                CliError::failed(format!("cannot create {}: {e}", dir.display()))
                    .with_hint("give --dir a folder that does not exist yet")
            })?;
            Ok(dir)
        }
        None => tempfile::Builder::new()
            .prefix("coldvault-demo-")
            .tempdir()
            .map(tempfile::TempDir::keep)
            .map_err(|e| CliError::failed(format!("cannot create a folder for the demo: {e}"))),
    }
}

/// Talks to the local vault's REST API directly, as any client would.
struct Seeder {
    http: reqwest::Client,
    token: String,
    ready: Ready,
}

impl Seeder {
    async fn new(running: &RunningEmulator) -> Result<Self, CliError> {
        let ready = running.ready().clone();
        let http = crate::vault::transport::build_http_client(Some(Path::new(&ready.ca_cert)))
            .map_err(|e| CliError::failed(format!("demo HTTP client: {e}")))?;
        let token: Value = http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                ready.authority_host, ready.tenant_id
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", &ready.client_id)
                    .append_pair("client_secret", &ready.client_secret)
                    .append_pair("scope", "https://vault.azure.net/.default")
                    .finish(),
            )
            .send()
            .await
            .map_err(failed("token request"))?
            .json()
            .await
            .map_err(failed("token response"))?;
        let token = token["access_token"]
            .as_str()
            .ok_or_else(|| CliError::failed("the local issuer gave no token"))?
            .to_owned();
        Ok(Self { http, token, ready })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        vault: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let base = self
            .ready
            .vaults
            .get(vault)
            .ok_or_else(|| CliError::failed(format!("no vault {vault}")))?;
        let url = format!(
            "{}{}?api-version={API_VERSION}",
            base.trim_end_matches('/'),
            path
        );
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(failed("request"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(CliError::failed(format!(
                "{method} {path} on {vault}: HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn seed_prod(&self) -> Result<(), CliError> {
        use reqwest::Method;
        let secrets = [
            (
                "db-password",
                "text/plain",
                json!({"env": "prod", "owner": "payments"}),
            ),
            ("api-key", "text/plain", json!({"env": "prod"})),
            (
                "service-config",
                "application/json",
                json!({"format": "json"}),
            ),
            ("legacy-token", "text/plain", json!({"deprecated": "true"})),
            ("storage-conn", "text/plain", json!({"env": "prod"})),
        ];
        for (name, content_type, tags) in secrets {
            self.call(
                Method::PUT,
                "prod",
                &format!("/secrets/{name}"),
                Some(json!({
                    "value": demo_value(name, 1),
                    "contentType": content_type,
                    "tags": tags,
                })),
            )
            .await?;
        }
        // A rotated secret: three versions.
        for n in 2..=3 {
            self.call(
                Method::PUT,
                "prod",
                "/secrets/db-password",
                Some(
                    json!({"value": demo_value("db-password", n), "contentType": "text/plain",
                            "tags": {"env": "prod", "owner": "payments"}}),
                ),
            )
            .await?;
        }
        // A disabled secret: its value cannot be read, its blob can.
        self.call(
            Method::PATCH,
            "prod",
            "/secrets/legacy-token/",
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await?;
        self.call(
            Method::POST,
            "prod",
            "/keys/signing-key/create",
            Some(json!({"kty": "RSA", "key_size": 2048, "tags": {"use": "jwt"}})),
        )
        .await?;
        self.call(
            Method::POST,
            "prod",
            "/keys/ec-key/create",
            Some(json!({"kty": "EC", "crv": "P-256"})),
        )
        .await?;
        for (name, exportable) in [("web-tls", true), ("internal-mtls", false)] {
            self.call(
                Method::POST,
                "prod",
                &format!("/certificates/{name}/create"),
                Some(json!({"policy": {
                    "key_props": {"exportable": exportable, "kty": "RSA", "key_size": 2048, "reuse_key": false},
                    "secret_props": {"contentType": "application/x-pkcs12"},
                    "x509_props": {"subject": format!("CN={name}.contoso.example"), "validity_months": 12},
                    "issuer": {"name": "Self"}
                }})),
            )
            .await?;
            self.wait_certificate(name).await?;
        }
        Ok(())
    }

    async fn wait_certificate(&self, name: &str) -> Result<(), CliError> {
        for _ in 0..100 {
            let pending = self
                .call(
                    reqwest::Method::GET,
                    "prod",
                    &format!("/certificates/{name}/pending"),
                    None,
                )
                .await?;
            if pending["status"] == "completed" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(CliError::failed(format!(
            "certificate {name} was not issued in time"
        )))
    }
}

/// A demo value: recognisable, never a real credential.
fn demo_value(name: &str, version: u32) -> String {
    format!("demo-{name}-v{version}-{:08x}", rand::random::<u32>())
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> CliError {
    move |e| CliError::failed(format!("demo {what}: {e}"))
}

/// Runs one real command, printing it as a user would type it, then its output.
struct Narrator {
    exe: PathBuf,
    ready: Ready,
}

impl Narrator {
    fn chapter(&self, title: &str) {
        say!();
        say!("== {title}");
    }

    async fn run(&self, args: &[&str], expect: &[i32]) -> Result<i32, CliError> {
        say!("$ coldvault {}", args.join(" "));
        let output = tokio::process::Command::new(&self.exe)
            .args(args)
            .env("AZURE_TENANT_ID", &self.ready.tenant_id)
            .env("AZURE_CLIENT_ID", &self.ready.client_id)
            .env("AZURE_CLIENT_SECRET", &self.ready.client_secret)
            .env("AZURE_AUTHORITY_HOST", &self.ready.authority_host)
            .env("COLDVAULT_CA_CERT", &self.ready.ca_cert)
            .env_remove("COLDVAULT_PASSPHRASE")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| CliError::failed(format!("cannot run coldvault: {e}")))?;
        for line in String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
        {
            say!("  {line}");
        }
        let code = output.status.code().unwrap_or(-1);
        if expect.contains(&code) {
            say!("  (exit {code})");
            Ok(code)
        } else {
            Err(CliError::failed(format!(
                "demo step `coldvault {}` exited {code}, expected {expect:?}",
                args.first().copied().unwrap_or_default()
            )))
        }
    }
}

async fn story(dir: &Path, running: &RunningEmulator) -> Result<(), CliError> {
    let ready = running.ready().clone();
    let narrator = Narrator {
        exe: std::env::current_exe()
            .map_err(|e| CliError::failed(format!("cannot find this program: {e}")))?,
        ready: ready.clone(),
    };
    let url = |name: &str| ready.vaults.get(name).cloned().unwrap_or_default();
    say!("coldvault demo: the whole story on a local Key Vault");
    say!("Folder: {}", dir.display());
    say!(
        "Local Key Vault on port {}: prod and prod-dr (subscription sub-contoso-prod), \
         elsewhere (subscription sub-fabrikam).",
        ready.port
    );
    say!(
        "Commands below sign in as a real job would: AZURE_TENANT_ID, AZURE_CLIENT_ID, \
         AZURE_CLIENT_SECRET and AZURE_AUTHORITY_HOST name the local issuer's service \
         principal; COLDVAULT_CA_CERT={} trusts its certificate.",
        ready.ca_cert
    );

    narrator.chapter("1. A vault worth keeping");
    let seeder = Seeder::new(running).await?;
    seeder.seed_prod().await?;
    say!(
        "  prod holds 5 secrets (db-password with 3 versions, legacy-token disabled), \
         2 keys (RSA, EC), 2 certificates (web-tls exportable, internal-mtls not)."
    );

    narrator.chapter("2. An identity that opens the archives");
    let identity = dir.join("demo-identity.txt");
    let identity_s = identity.display().to_string();
    narrator.run(&["keygen", "-o", &identity_s], &[0]).await?;
    let recipient = std::fs::read_to_string(&identity)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        })
        .ok_or_else(|| CliError::failed("the demo identity names no public key"))?;

    narrator.chapter("3. Back up the whole vault");
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", archives.display())))?;
    let archives_s = archives.display().to_string();
    narrator
        .run(
            &[
                "backup",
                "--vault",
                &url("prod"),
                "-r",
                &recipient,
                "-o",
                &archives_s,
                "--all-versions",
            ],
            &[0],
        )
        .await?;
    let archive = std::fs::read_dir(&archives)
        .ok()
        .and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
        })
        .ok_or_else(|| CliError::failed("the backup left no archive"))?;
    let archive_s = archive.display().to_string();

    narrator.chapter("4. What is inside (never values), and is it intact?");
    narrator
        .run(&["inspect", &archive_s, "-i", &identity_s], &[0])
        .await?;
    narrator
        .run(&["verify", &archive_s, "-i", &identity_s], &[0])
        .await?;

    narrator.chapter("5. A bad day: someone deletes a secret, a key and a certificate");
    for (kind, name) in [
        ("secrets", "db-password"),
        ("keys", "signing-key"),
        ("certificates", "web-tls"),
    ] {
        say!(
            "$ az keyvault {} delete --vault-name prod --name {name}",
            &kind[..kind.len() - 1]
        );
        seeder
            .call(
                reqwest::Method::DELETE,
                "prod",
                &format!("/{kind}/{name}"),
                None,
            )
            .await?;
    }

    narrator.chapter("6. What is missing?");
    narrator
        .run(
            &[
                "diff",
                &archive_s,
                "--vault",
                &url("prod"),
                "-i",
                &identity_s,
            ],
            &[1],
        )
        .await?;

    narrator.chapter("7. Bring it back: recover what is soft-deleted, restore the rest");
    narrator
        .run(
            &[
                "restore",
                &archive_s,
                "--vault",
                &url("prod"),
                "-i",
                &identity_s,
                "--recover-deleted",
            ],
            &[0],
        )
        .await?;
    narrator
        .run(
            &[
                "diff",
                &archive_s,
                "--vault",
                &url("prod"),
                "-i",
                &identity_s,
            ],
            &[0],
        )
        .await?;

    narrator
        .chapter("8. A second vault in the same subscription: native restore, same version ids");
    narrator
        .run(
            &[
                "restore",
                &archive_s,
                "--vault",
                &url("prod-dr"),
                "-i",
                &identity_s,
                "--mode",
                "native",
            ],
            &[0],
        )
        .await?;

    narrator.chapter("9. Another subscription: plain values, exportable certificates");
    narrator
        .run(
            &[
                "restore",
                &archive_s,
                "--vault",
                &url("elsewhere"),
                "-i",
                &identity_s,
                "--dry-run",
            ],
            // The dry run exits as the real run will: 3, naming the items at stake.
            &[3],
        )
        .await?;
    narrator
        .run(
            &[
                "restore",
                &archive_s,
                "--vault",
                &url("elsewhere"),
                "-i",
                &identity_s,
            ],
            &[3],
        )
        .await?;
    say!(
        "  Exit 3 is the honest answer here: keys, a disabled secret's value and a certificate \
         whose key was never exportable come back only natively, in prod's subscription."
    );
    Ok(())
}
