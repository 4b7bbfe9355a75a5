"""The Azure CLI (`pip install azure-cli`, newest, unpinned) against the local Key Vault.

`az cloud register --endpoint-resource-manager https://localhost:PORT/` names a cloud whose
Entra ID and Azure Resource Manager are the emulator's issuer and ARM and whose Key Vault DNS
suffix is `.vault.localhost:PORT` (read from the emulator's cloud metadata endpoint); `az login --service-principal` signs in against the local issuer and
lists the tenant's subscriptions over ARM; then the `az keyvault` commands people run today, at
the CLI's own default api-versions (no pinning: a version the emulator refuses fails the test).
Last, the `backup.bin` blobs of a coldvault archive, opened with `age -d | zstd -d | tar x` alone,
go back with `az keyvault … restore --file` into another vault of the same subscription.

TLS is verified (`REQUESTS_CA_BUNDLE` is the emulator's CA) and challenge verification stays on.
`NAME.vault.localhost` resolves through the test-only sitecustomize in `resolve_localhost/`
(glibc does not map `*.localhost` to loopback; people add the `/etc/hosts` lines that
`coldvault emulator --print-env` prints). `.ci/test` installs the CLI into its own virtualenv
under the target directory and names it in `COLDVAULT_AZ`; these tests skip only when it could
not be installed.
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import start_emulator, stop_emulator

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESOLVE = pathlib.Path(__file__).resolve().parent / "resolve_localhost"
BINARY = os.environ.get("COLDVAULT_BIN", str(ROOT / "target" / "debug" / "coldvault"))

# `.ci/test` sets COLDVAULT_AZ (empty when `pip install azure-cli` failed); a developer's `az`
# on PATH serves too.
AZ = os.environ.get("COLDVAULT_AZ") or shutil.which("az")
AZ_SKIP_REASON = (
    "the Azure CLI could not be installed: .ci/test installs it with pip into "
    "$CARGO_TARGET_DIR/az-venv and names it in COLDVAULT_AZ"
)
pytestmark = pytest.mark.skipif(AZ is None, reason=AZ_SKIP_REASON)

SUB = "5ca1ab1e-0000-4000-8000-000000000001"
OTHER_SUB = "5ca1ab1e-0000-4000-8000-000000000002"
TENANT_B = "tenant-b.example"
VAULTS = [
    f"alpha,subscription={SUB},resource-group=rg-cli",
    f"beta,subscription={SUB}",
    f"delta,subscription={SUB}",
    f"gamma,subscription={OTHER_SUB}",
    f"far,tenant={TENANT_B}",
]


class Az:
    """`az` in a profile of its own, signed in to the emulator's cloud."""

    def __init__(self, ready, home):
        self.ready = ready
        self.home = home
        self.env = dict(os.environ)
        self.env.update(
            {
                "AZURE_CONFIG_DIR": str(home / "az-config"),
                # MSAL must not ask login.microsoftonline.com about the local authority.
                "AZURE_CORE_INSTANCE_DISCOVERY": "false",
                "AZURE_CORE_COLLECT_TELEMETRY": "false",
                "AZURE_CORE_NO_COLOR": "true",
                "AZURE_CORE_SURVEY_MESSAGE": "false",
                "REQUESTS_CA_BUNDLE": ready["ca_cert"],
                "PYTHONPATH": str(RESOLVE),
            }
        )

    def run(self, *args, check=True):
        """Runs `az ARGS --output json`; answers the parsed output (None when empty)."""
        out = subprocess.run(
            [AZ, *args, "--output", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert out.returncode == 0, f"az {' '.join(args)}: {out.stderr}"
        else:
            return out
        return json.loads(out.stdout) if out.stdout.strip() else None

    def file(self, name, content=b""):
        path = self.home / name
        path.write_bytes(content)
        return str(path)


@pytest.fixture(scope="module")
def az(tmp_path_factory):
    home = tmp_path_factory.mktemp("az")
    proc, ready = start_emulator(vaults=VAULTS)
    cli = Az(ready, home)
    port = ready["port"]
    try:
        # The rest of the cloud (login endpoint, ARM audience, Key Vault DNS suffix) comes from
        # the emulator's cloud metadata endpoint, as for Azure's own clouds.
        cli.run("cloud", "register", "--name", "coldvault-local",
                "--endpoint-resource-manager", ready["arm_endpoint"])
        cli.run("cloud", "set", "--name", "coldvault-local")
        cloud = cli.run("cloud", "show")
        assert cloud["endpoints"]["activeDirectory"] == ready["authority_host"]
        assert cloud["suffixes"]["keyvaultDns"] == f".vault.localhost:{port}"
        secret_file = home / "client-secret"
        secret_file.write_text(ready["client_secret"])
        secret_file.chmod(0o600)
        cli.run(
            "login",
            "--service-principal",
            "--tenant",
            ready["tenant_id"],
            "--username",
            ready["client_id"],
            # `@FILE`: the client secret stays out of the command line.
            "--password",
            f"@{secret_file}",
        )
        yield cli
    finally:
        assert stop_emulator(proc) == 0


def test_login_lists_the_subscriptions_of_its_tenant_only(az):
    accounts = az.run("account", "list")
    assert sorted(a["id"] for a in accounts) == sorted([SUB, OTHER_SUB])
    assert all(a["tenantId"] == az.ready["tenant_id"] for a in accounts)
    assert all(a["cloudName"] == "coldvault-local" for a in accounts)


def test_keyvault_list_and_show_read_arm(az):
    vaults = az.run("keyvault", "list", "--subscription", SUB)
    assert sorted(v["name"] for v in vaults) == ["alpha", "beta", "delta"]
    alpha = az.run("keyvault", "show", "--subscription", SUB, "--name", "alpha")
    assert alpha["resourceGroup"] == "rg-cli"
    assert alpha["properties"]["vaultUri"] == az.ready["vaults"]["alpha"]
    assert alpha["properties"]["tenantId"] == az.ready["tenant_id"]
    assert alpha["properties"]["enableSoftDelete"] is True
    other = az.run("keyvault", "list", "--subscription", OTHER_SUB)
    assert [v["name"] for v in other] == ["gamma"]


def test_secret_set_show_list_download_backup_restore(az):
    value_file = az.file("value.txt", b"s3cret-cli-value")
    az.run("keyvault", "secret", "set", "--vault-name", "alpha", "--name", "cli-secret",
           "--file", value_file)
    shown = az.run("keyvault", "secret", "show", "--vault-name", "alpha", "--name", "cli-secret")
    assert shown["value"] == "s3cret-cli-value"
    listed = az.run("keyvault", "secret", "list", "--vault-name", "alpha")
    assert "cli-secret" in [s["name"] for s in listed]
    downloaded = az.home / "downloaded.txt"
    az.run("keyvault", "secret", "download", "--vault-name", "alpha", "--name", "cli-secret",
           "--file", str(downloaded))
    assert downloaded.read_text() == "s3cret-cli-value"

    blob = az.home / "cli-secret.blob"
    az.run("keyvault", "secret", "backup", "--vault-name", "alpha", "--name", "cli-secret",
           "--file", str(blob))
    restored = az.run("keyvault", "secret", "restore", "--vault-name", "beta", "--file", str(blob))
    assert restored["name"] == "cli-secret"
    assert restored["id"].split("/")[-1] == shown["id"].split("/")[-1]
    again = az.run("keyvault", "secret", "show", "--vault-name", "beta", "--name", "cli-secret")
    assert again["value"] == "s3cret-cli-value"
    # Another subscription: Azure's refusal reaches the CLI.
    refused = az.run("keyvault", "secret", "restore", "--vault-name", "gamma", "--file",
                     str(blob), check=False)
    assert refused.returncode != 0
    assert "Cannot decrypt backup blob" in refused.stderr


def test_key_backup_restore(az):
    created = az.run("keyvault", "key", "create", "--vault-name", "alpha", "--name", "cli-key",
                     "--kty", "RSA", "--size", "2048")
    blob = az.home / "cli-key.blob"
    az.run("keyvault", "key", "backup", "--vault-name", "alpha", "--name", "cli-key",
           "--file", str(blob))
    restored = az.run("keyvault", "key", "restore", "--vault-name", "beta", "--file", str(blob))
    assert restored["key"]["kid"].split("/")[-1] == created["key"]["kid"].split("/")[-1]
    assert restored["key"]["n"] == created["key"]["n"]


def test_certificate_import_download_backup_restore(az):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cli.example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    pem_file = az.file("cli-cert.pem", pem)
    imported = az.run("keyvault", "certificate", "import", "--vault-name", "alpha",
                      "--name", "cli-cert", "--file", pem_file)
    assert imported["name"] == "cli-cert"

    der_file = az.home / "cli-cert.der"
    az.run("keyvault", "certificate", "download", "--vault-name", "alpha", "--name", "cli-cert",
           "--file", str(der_file), "--encoding", "DER")
    assert x509.load_der_x509_certificate(der_file.read_bytes()) == cert

    blob = az.home / "cli-cert.blob"
    az.run("keyvault", "certificate", "backup", "--vault-name", "alpha", "--name", "cli-cert",
           "--file", str(blob))
    restored = az.run("keyvault", "certificate", "restore", "--vault-name", "beta",
                      "--file", str(blob))
    assert restored["x509ThumbprintHex"] == imported["x509ThumbprintHex"]
    managed = az.run("keyvault", "secret", "show", "--vault-name", "beta", "--name", "cli-cert")
    assert managed["managed"] is True


def test_blobs_of_a_coldvault_archive_restore_with_az(az, tmp_path):
    """A coldvault archive, opened with standard tools alone, restored item by item with az."""
    ready = az.ready
    az.run("keyvault", "secret", "set", "--vault-name", "alpha", "--name", "archived-secret",
           "--file", az.file("archived.txt", b"kept-in-the-archive"))
    az.run("keyvault", "key", "create", "--vault-name", "alpha", "--name", "archived-key",
           "--kty", "EC", "--curve", "P-256")
    policy = az.run("keyvault", "certificate", "get-default-policy")
    az.run("keyvault", "certificate", "create", "--vault-name", "alpha",
           "--name", "archived-cert", "--policy", json.dumps(policy))

    identity = tmp_path / "identity.txt"
    subprocess.run([BINARY, "keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = next(
        line.split(":", 1)[1].strip()
        for line in identity.read_text().splitlines()
        if line.startswith("# public key:")
    )
    env = dict(os.environ)
    env.update(
        {
            "AZURE_TENANT_ID": ready["tenant_id"],
            "AZURE_CLIENT_ID": ready["client_id"],
            "AZURE_CLIENT_SECRET": ready["client_secret"],
            "AZURE_AUTHORITY_HOST": ready["authority_host"],
            "COLDVAULT_CA_CERT": ready["ca_cert"],
        }
    )
    out_dir = tmp_path / "archives"
    out_dir.mkdir()
    backup = subprocess.run(
        [BINARY, "backup", "--vault", ready["vaults"]["alpha"], "-r", recipient,
         "-o", str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert backup.returncode == 0, backup.stderr
    (archive,) = list(out_dir.iterdir())

    opened = tmp_path / "opened"
    opened.mkdir()
    subprocess.run(
        f"age -d -i '{identity}' '{archive}' | zstd -d | tar -x -C '{opened}'",
        shell=True,
        check=True,
    )
    for kind, name in [("secret", "archived-secret"), ("key", "archived-key"),
                       ("certificate", "archived-cert")]:
        blob = opened / f"{kind}s" / name / "backup.bin"
        assert blob.is_file(), sorted(str(p) for p in opened.rglob("*"))
        restored = az.run("keyvault", kind, "restore", "--vault-name", "delta",
                          "--file", str(blob))
        assert restored, kind
    value = az.run("keyvault", "secret", "show", "--vault-name", "delta",
                   "--name", "archived-secret")
    assert value["value"] == "kept-in-the-archive"
    key = az.run("keyvault", "key", "show", "--vault-name", "delta", "--name", "archived-key")
    assert key["key"]["crv"] == "P-256"
    cert = az.run("keyvault", "certificate", "show", "--vault-name", "delta",
                  "--name", "archived-cert")
    assert cert["name"] == "archived-cert"
