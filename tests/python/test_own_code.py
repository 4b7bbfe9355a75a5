"""The "Use it from your own code" snippets of docs/EMULATOR.md, run as written.

An emulator started with `--print-env` prints shell `export` lines; a shell sources them and
runs the Python snippet (official SDK) and the Azure CLI snippet. Name resolution of
`NAME.vault.localhost` comes from the test-only sitecustomize in `resolve_localhost/`, standing in
for the `/etc/hosts` lines `--print-env` prints (see docs/EMULATOR.md).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import stop_emulator
from test_azure_cli import AZ, AZ_SKIP_REASON

ROOT = pathlib.Path(__file__).resolve().parents[2]
SNIPPETS = ROOT / "docs" / "snippets"
RESOLVE = pathlib.Path(__file__).resolve().parent / "resolve_localhost"
BINARY = os.environ.get("COLDVAULT_BIN", str(ROOT / "target" / "debug" / "coldvault"))
VALUE = "from-the-seed-7c1e"


@pytest.fixture(scope="module")
def printed_env(tmp_path_factory):
    """(`--print-env` output, the environment a shell gets by sourcing it)."""
    tmp = tmp_path_factory.mktemp("own-code")
    seed = tmp / "seed.json"
    seed.write_text(json.dumps({"secrets": [{"name": "db-password", "value": VALUE}]}))
    proc = subprocess.Popen(
        [BINARY, "emulator", "--port", "0", "--vault", "prod", "--seed", str(seed), "--print-env"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "#ready":
            break
    assert lines and lines[-1].strip() == "#ready", "".join(lines)
    env_file = tmp / "kv.env"
    env_file.write_text("".join(lines))
    dumped = subprocess.run(
        ["sh", "-c", '. "$1" && env -0', "sh", str(env_file)],
        check=True,
        capture_output=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in dumped.split("\0") if "=" in item)
    try:
        yield "".join(lines), env, tmp
    finally:
        assert stop_emulator(proc) == 0


def run_env(env):
    """`env` plus what the child needs to run: PATH, and name resolution of *.localhost."""
    full = dict(env)
    full["PATH"] = os.environ["PATH"]
    full["PYTHONPATH"] = str(RESOLVE)
    full["HOME"] = os.environ.get("HOME", "/tmp")
    return full


def test_print_env_names_every_variable_the_snippets_read(printed_env):
    text, env, _ = printed_env
    for name in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_AUTHORITY_HOST",
        "COLDVAULT_CA_CERT",
        "REQUESTS_CA_BUNDLE",
        "COLDVAULT_EMULATOR_ARM_ENDPOINT",
        "COLDVAULT_EMULATOR_VAULT_PROD",
    ]:
        assert env.get(name), name
    assert os.path.isabs(env["COLDVAULT_CA_CERT"])
    assert "#hosts 127.0.0.1 prod.vault.localhost" in text


def test_python_snippet_reads_the_secret(printed_env):
    _, env, _ = printed_env
    out = subprocess.run(
        [sys.executable, str(SNIPPETS / "own_code.py")],
        env=run_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == VALUE


@pytest.mark.skipif(AZ is None, reason=AZ_SKIP_REASON)
def test_az_snippet_lists_the_vault_and_reads_the_secret(printed_env):
    _, env, tmp = printed_env
    env = run_env(env)
    env["AZURE_CONFIG_DIR"] = str(tmp / "az-config")
    env["PATH"] = os.path.dirname(AZ) + os.pathsep + env["PATH"]
    env["AZURE_CORE_COLLECT_TELEMETRY"] = "false"
    out = subprocess.run(
        ["bash", "-euo", "pipefail", str(SNIPPETS / "own_code_az.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["prod", VALUE], out.stdout
