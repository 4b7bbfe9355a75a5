"""Fixtures for the conformance suite: the official Azure SDK for Python against the local Key Vault.

One emulator process serves the whole session (`$COLDVAULT_BIN emulator --port 0 ...`); its one
JSON ready line gives the port, the CA, the vault URLs and the built-in issuer's credentials.
TLS is verified against that ca.pem, the SDKs' challenge-resource verification stays on, and
tokens come from the built-in issuer through ClientSecretCredential. `*.vault.localhost` is
resolved to 127.0.0.1 inside this process. After every test the admin endpoint's reset puts
settings, faults, permissions, the journal and the clock back.
"""

import json
import os
import socket
import subprocess
import uuid

import pytest
import requests

_real_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    # The vault hosts are NAME.vault.localhost; not every resolver maps *.localhost to loopback.
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_getaddrinfo

OTHER_SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"

# Vaults of the session: alpha and beta share a subscription, gamma is in another, pages is kept
# for the paging count, prem is premium (HSM key types), protected has purge protection.
VAULTS = [
    "alpha",
    "beta",
    f"gamma,subscription={OTHER_SUBSCRIPTION}",
    "pages",
    "prem,sku=premium",
    "protected,purge-protection,retention-days=7",
]


def start_emulator(extra_args=(), vaults=VAULTS):
    """Starts `coldvault emulator` and returns (process, ready line as a dict)."""
    binary = os.environ.get("COLDVAULT_BIN", "target/debug/coldvault")
    args = [binary, "emulator", "--port", "0"]
    for vault in vaults:
        args += ["--vault", vault]
    args += list(extra_args)
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(f"emulator exited before its ready line: {proc.wait()}")
    ready = json.loads(line)
    assert ready["ready"] is True
    return proc, ready


def stop_emulator(proc):
    proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Emulator:
    """The running emulator as the tests see it."""

    def __init__(self, ready):
        self.ready = ready
        self.ca = ready["ca_cert"]
        self.port = ready["port"]
        self.session = requests.Session()
        self.session.verify = self.ca

    def vault_url(self, name):
        return self.ready["vaults"][name]

    def url(self, vault, path):
        return self.vault_url(vault).rstrip("/") + path

    def admin(self, method, path, body=None):
        response = self.session.request(method, self.ready["admin"] + path, json=body, verify=self.ca)
        assert response.status_code < 400, response.text
        return response.json() if response.content else None

    def settings(self, **changes):
        return self.admin("PATCH", "/settings", changes)

    def clock(self, **change):
        return self.admin("POST", "/clock", change)

    def fault(self, **spec):
        return self.admin("POST", "/faults", spec)

    def journal(self, path=None, method=None):
        entries = self.admin("GET", "/journal")["entries"]
        return [
            e
            for e in entries
            if (path is None or e["path"].rstrip("/") == path.rstrip("/"))
            and (method is None or e["method"] == method)
        ]

    def token(self, **options):
        return self.admin("POST", "/tokens", options)["access_token"]

    def raw(self, method, vault, path, token=None, body=None, api_version="7.6", headers=None):
        """A request without the SDK; `token=None` sends no Authorization header."""
        sep = "&" if "?" in path else "?"
        url = self.url(vault, path)
        if api_version is not None:
            url += f"{sep}api-version={api_version}"
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        return self.session.request(method, url, json=body, headers=hdrs, verify=self.ca)


@pytest.fixture(scope="session")
def emulator():
    proc, ready = start_emulator()
    # The credential's token requests go through requests too; trust the emulator's CA there.
    os.environ["REQUESTS_CA_BUNDLE"] = ready["ca_cert"]
    try:
        yield Emulator(ready)
    finally:
        assert stop_emulator(proc) == 0


@pytest.fixture(autouse=True)
def _reset_emulator(request):
    yield
    if "emulator" in request.fixturenames:
        emu = request.getfixturevalue("emulator")
        emu.admin("POST", "/reset")


@pytest.fixture(scope="session")
def credential(emulator):
    from azure.identity import ClientSecretCredential

    ready = emulator.ready
    return ClientSecretCredential(
        ready["tenant_id"],
        ready["client_id"],
        ready["client_secret"],
        authority=ready["authority_host"],
        disable_instance_discovery=True,
        connection_verify=emulator.ca,
    )


def _client_kwargs(emulator):
    # Challenge-resource verification is left at its default (on).
    return {"connection_verify": emulator.ca, "retry_backoff_factor": 0.1}


@pytest.fixture(scope="session")
def make_secret_client(emulator, credential):
    from azure.keyvault.secrets import SecretClient

    def make(vault="alpha", **kwargs):
        return SecretClient(emulator.vault_url(vault), credential, **_client_kwargs(emulator), **kwargs)

    return make


@pytest.fixture(scope="session")
def make_key_client(emulator, credential):
    from azure.keyvault.keys import KeyClient

    def make(vault="alpha", **kwargs):
        return KeyClient(emulator.vault_url(vault), credential, **_client_kwargs(emulator), **kwargs)

    return make


@pytest.fixture(scope="session")
def make_certificate_client(emulator, credential):
    from azure.keyvault.certificates import CertificateClient

    def make(vault="alpha", **kwargs):
        return CertificateClient(
            emulator.vault_url(vault), credential, **_client_kwargs(emulator), **kwargs
        )

    return make


@pytest.fixture
def secret_client(make_secret_client):
    return make_secret_client("alpha")


@pytest.fixture
def key_client(make_key_client):
    return make_key_client("alpha")


@pytest.fixture
def certificate_client(make_certificate_client):
    return make_certificate_client("alpha")


@pytest.fixture
def name():
    """A fresh object name, so tests sharing the session's vaults never collide."""
    return "t-" + uuid.uuid4().hex[:12]


def error_code(err):
    """Azure's `error.code` of an HttpResponseError."""
    return err.error.code if err.error is not None else None


def inner_code(err):
    """Azure's `error.innererror.code` of an HttpResponseError, if any."""
    inner = getattr(err.error, "innererror", None) if err.error is not None else None
    return inner.get("code") if isinstance(inner, dict) else None
