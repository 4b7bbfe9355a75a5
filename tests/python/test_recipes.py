"""The scheduled-job recipes of docs/recipes/ are valid, use only flags that exist, and run.

Each YAML recipe must parse; every `coldvault backup …` command line in a recipe (YAML or
shell) may only use flags that `coldvault backup --help` lists.

Each recipe's commands are then executed against a local Key Vault holding a `prod-kv` vault:
the shell steps are taken from the recipe (Azure Pipelines `script` and AzureCLI@2
`inlineScript`, GitHub Actions `run`, the CronJob's container `args`, the cron script itself)
and run with bash, with the platform's variables set as the platform would set them and the
recipe's own variables overridden the way a pipeline run overrides them (the vault becomes
the local one's URL). What the platform does around the steps is stood in for:

- the sign-in: `az` on PATH answers `az account get-access-token` with a token of the local
  Key Vault's service principal (what AzureCLI@2 and azure/login leave behind); the managed
  identity is the local Key Vault's App Service-style endpoint (`IDENTITY_ENDPOINT`); the
  CronJob gets the local service principal in its environment (where AKS injects workload
  identity's variables);
- `cargo install` runs as written with `--debug` added, so that it reuses the suite's build
  instead of compiling a release build;
- the container image is built and run only when a Docker daemon answers; otherwise that test
  says it skipped and why. The CronJob's args are run with the binary either way, with the
  volumes mapped to folders.

Every run must leave an archive that `coldvault verify` accepts.
"""

import glob
import json
import os
import pathlib
import re
import shlex
import shutil
import stat
import subprocess
import sys

import pytest
import requests
import yaml

from conftest import start_emulator, stop_emulator

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"
BINARY = os.environ.get("COLDVAULT_BIN", str(ROOT / "target" / "debug" / "coldvault"))


def backup_flags():
    help_text = subprocess.run(
        [BINARY, "backup", "--help"], check=True, capture_output=True, text=True
    ).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text)) | set(
        re.findall(r"(?<![\w-])(-[a-zA-Z])\b", help_text)
    )


def strings(node):
    """Every string in a parsed YAML document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def backup_commands(text):
    """Every `coldvault backup …` command in a block of shell text, as argument lists."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        if "coldvault backup" in line:
            tail = line[line.index("coldvault backup") + len("coldvault backup") :]
            tail = tail.split(">")[0]
            yield shlex.split(tail.replace("${{", "X").replace("}}", "X"))


def test_every_yaml_recipe_parses():
    recipes = sorted(RECIPES.glob("*.y*ml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        documents = list(yaml.safe_load_all(recipe.read_text()))
        assert documents and all(doc for doc in documents), recipe


@pytest.mark.parametrize(
    "recipe", sorted(p.name for p in RECIPES.iterdir()), ids=lambda n: n
)
def test_recipe_uses_only_existing_flags(recipe):
    flags = backup_flags()
    path = RECIPES / recipe
    text = path.read_text()
    commands = []
    if path.suffix in (".yaml", ".yml"):
        for doc in yaml.safe_load_all(text):
            for value in strings(doc):
                commands += list(backup_commands(value))
            # A container's args list: the whole list is one command line.
            for value in _arg_lists(doc):
                if value[:1] == ["backup"]:
                    commands.append(value[1:])
    else:
        commands = list(backup_commands(text))
    assert commands, f"{recipe} runs coldvault backup"
    for args in commands:
        used = [a.split("=")[0] for a in args if a.startswith("-")]
        unknown = [f for f in used if f not in flags]
        assert not unknown, f"{recipe}: unknown flags {unknown}"


def _arg_lists(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "args" and isinstance(value, list):
                yield [str(v) for v in value]
            else:
                yield from _arg_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _arg_lists(value)


# --- running the recipes against the local Key Vault --------------------------------------

VAULT = "prod-kv"
SEEDED = "recipe-db-password"
CANARY = "CANARY-recipes-7d41-never-print-me"

FAKE_AZ = """#!{python}
# `az account get-access-token -o json --scope SCOPE` as the Azure CLI answers it once signed
# in; the signed-in account is the local Key Vault's service principal ({login}).
import json, sys, time
import requests

args = sys.argv[1:]
if args[:2] != ["account", "get-access-token"]:
    sys.exit("az stand-in: only `az account get-access-token` is served")
scope = args[args.index("--scope") + 1] if "--scope" in args else args[args.index("--resource") + 1] + "/.default"
login = json.load(open({login!r}))
answer = requests.post(
    f"{{login['authority']}}/{{login['tenant']}}/oauth2/v2.0/token",
    data={{"grant_type": "client_credentials", "client_id": login["client"],
          "client_secret": login["secret"], "scope": scope}},
    verify=login["ca"],
)
if answer.status_code != 200:
    sys.exit(f"ERROR: AADSTS: {{answer.text}}")
token = answer.json()
expires = int(time.time()) + int(token["expires_in"])
print(json.dumps({{
    "accessToken": token["access_token"],
    "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
    "expires_on": expires,
    "subscription": "00000000-0000-0000-0000-000000000000",
    "tenant": login["tenant"],
    "tokenType": "Bearer",
}}))
"""


@pytest.fixture(scope="module")
def local_vault():
    """A local Key Vault with `prod-kv` holding one secret."""
    proc, ready = start_emulator(vaults=[VAULT])
    try:
        ca = ready["ca_cert"]
        token = requests.post(ready["admin"] + "/tokens", json={}, verify=ca).json()["access_token"]
        answer = requests.put(
            ready["vaults"][VAULT].rstrip("/") + f"/secrets/{SEEDED}?api-version=7.6",
            json={"value": CANARY},
            headers={"Authorization": f"Bearer {token}"},
            verify=ca,
        )
        assert answer.status_code == 200, answer.text
        yield ready
    finally:
        stop_emulator(proc)


class Platform:
    """A scheduler's machine for one recipe: a work folder, an age identity, the platform's
    environment, `az` signed in, and coldvault installed by the recipe's own install step."""

    def __init__(self, tmp_path, ready):
        self.tmp = tmp_path
        self.ready = ready
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.identity = tmp_path / "identity.txt"
        subprocess.run([BINARY, "keygen", "-o", str(self.identity)], check=True, capture_output=True)
        self.recipient = re.search(r"# public key: (age1\w+)", self.identity.read_text()).group(1)
        login = tmp_path / "az-login.json"
        login.write_text(json.dumps({
            "authority": ready["authority_host"], "tenant": ready["tenant_id"],
            "client": ready["client_id"], "secret": ready["client_secret"], "ca": ready["ca_cert"],
        }))
        login.chmod(0o600)
        az = self.bin / "az"
        az.write_text(FAKE_AZ.format(python=sys.executable, login=str(login)))
        az.chmod(az.stat().st_mode | stat.S_IXUSR)
        self.install_root = tmp_path / "cargo-root"
        # The machine's own environment (its toolchain, HOME) without any sign-in: each
        # recipe gets only the credentials its platform would give it.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "COLDVAULT_"))
        }
        self.env.update({
            "PATH": os.pathsep.join([str(self.install_root / "bin"), str(self.bin), os.environ.get("PATH", "")]),
            "COLDVAULT_CA_CERT": ready["ca_cert"],
            "CARGO_INSTALL_ROOT": str(self.install_root),
        })
        # The suite's build: `cargo install --debug` finds it there and only copies it.
        build_dir = pathlib.Path(BINARY).resolve().parent
        if build_dir.name == "debug":
            self.env["CARGO_TARGET_DIR"] = str(build_dir.parent)

    @property
    def vault_url(self):
        return self.ready["vaults"][VAULT]

    def service_principal(self):
        """The variables a service principal's environment carries."""
        return {
            "AZURE_TENANT_ID": self.ready["tenant_id"],
            "AZURE_CLIENT_ID": self.ready["client_id"],
            "AZURE_CLIENT_SECRET": self.ready["client_secret"],
            "AZURE_AUTHORITY_HOST": self.ready["authority_host"],
        }

    def run_step(self, script, cwd, env=None):
        """Runs one shell step as the platforms do (bash, -e, pipefail)."""
        if re.search(r"^\s*cargo install ", script, re.M):
            if shutil.which("cargo") is None:
                pytest.skip("cargo is not on PATH: the recipe's install step cannot run here")
            script = re.sub(r"^(\s*)cargo install ", r"\1cargo install --debug ", script, flags=re.M)
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
        )
        shown = result.stdout + result.stderr
        assert CANARY not in shown, "a secret value was printed"
        assert result.returncode == 0, f"step failed ({result.returncode}):\n{script}\n{shown}"
        return result

    def installed(self):
        """The coldvault the recipe's install step put on PATH."""
        path = self.install_root / "bin" / "coldvault"
        assert path.is_file(), "the recipe's install step installed coldvault"
        return path

    def assert_archive(self, folder):
        archives = sorted(pathlib.Path(folder).glob("*.tar.zst.age"))
        assert len(archives) == 1, f"one archive in {folder}: {archives}"
        check = subprocess.run(
            [BINARY, "inspect", str(archives[0]), "-i", str(self.identity), "--json"],
            capture_output=True, text=True,
        )
        assert check.returncode == 0, check.stderr
        assert SEEDED in check.stdout, "the archive holds the vault's secret"
        verify = subprocess.run(
            [BINARY, "verify", str(archives[0]), "-i", str(self.identity)], capture_output=True, text=True
        )
        assert verify.returncode == 0, verify.stderr
        return archives[0]


def expand(text, values, pattern, what):
    """Replaces each `pattern` reference in `text` by its value; an unknown one fails."""

    def one(match):
        name = match.group(1).strip()
        assert name in values, f"{what} references {name!r}, which the run does not define"
        return values[name]

    return re.sub(pattern, one, text)


def test_azure_pipelines_recipe_runs(local_vault, tmp_path):
    doc = yaml.safe_load((RECIPES / "azure-pipelines.yml").read_text())
    platform = Platform(tmp_path, local_vault)
    staging = tmp_path / "a"
    staging.mkdir()
    # The recipe's variables, overridden as a queued run overrides them, then the predefined
    # ones and the secret-free pipeline variable the recipe asks for.
    variables = {k: str(v) for k, v in (doc.get("variables") or {}).items()}
    variables.update({
        "vault": platform.vault_url,
        "COLDVAULT_RECIPIENT": platform.recipient,
        "Build.ArtifactStagingDirectory": str(staging),
        "Build.SourcesDirectory": str(ROOT),
    })
    ran = []
    for step in doc["steps"]:
        if step.get("checkout") == "self":
            ran.append("checkout")  # the checkout is this repository
            continue
        if "script" in step:
            script = step["script"]
        elif str(step.get("task", "")).startswith("AzureCLI@"):
            assert step["inputs"]["scriptType"] == "bash"
            script = step["inputs"]["inlineScript"]
        elif str(step.get("task", "")).startswith("PublishPipelineArtifact@"):
            target = expand(step["inputs"]["targetPath"], variables, r"\$\(([^)]+)\)", "the pipeline")
            platform.assert_archive(target)
            ran.append("publish")
            continue
        else:
            pytest.fail(f"a step the test does not know how to run: {step}")
        assert "checkout" in ran, "the sources are checked out before they are used"
        platform.run_step(expand(script, variables, r"\$\(([^)]+)\)", "the pipeline"), cwd=ROOT)
        ran.append("install" if "cargo install" in script else "backup")
    platform.installed()
    assert ran == ["checkout", "install", "backup", "publish"], ran


def test_github_actions_recipe_runs(local_vault, tmp_path):
    doc = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    platform = Platform(tmp_path, local_vault)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    (job,) = doc["jobs"].values()
    env = {k: str(v) for k, v in (job.get("env") or {}).items()}
    env.update({"VAULT": platform.vault_url, "RUNNER_TEMP": str(runner_temp)})
    context = {
        "vars.COLDVAULT_RECIPIENT": platform.recipient,
        "runner.temp": str(runner_temp),
    }
    steps = [str(s.get("uses", "run")).split("@")[0] for s in job["steps"]]
    runs = [i for i, s in enumerate(steps) if s == "run"]
    assert steps.index("actions/checkout") < runs[0], "checkout before install"
    assert steps.index("azure/login") < runs[-1], "sign-in before the backup"
    uploaded = False
    for step in job["steps"]:
        uses = str(step.get("uses", "")).split("@")[0]
        if uses in ("actions/checkout", "azure/login"):
            continue  # the checkout is this repository; `az` on PATH stands for the login
        if uses == "actions/upload-artifact":
            pattern = expand(step["with"]["path"], context, r"\$\{\{([^}]+)\}\}", "the workflow")
            matched = glob.glob(pattern)
            assert len(matched) == 1, f"{pattern} matches the archive: {matched}"
            platform.assert_archive(runner_temp)
            uploaded = True
            continue
        assert "run" in step, f"a step the test does not know how to run: {step}"
        script = expand(step["run"], context, r"\$\{\{([^}]+)\}\}", "the workflow")
        platform.run_step(script, cwd=ROOT, env=env)
    platform.installed()
    assert uploaded
    lines = (runner_temp / "backup.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "summary"


def test_cron_managed_identity_recipe_runs(local_vault, tmp_path):
    platform = Platform(tmp_path, local_vault)
    # Installed as the script's header says (into the machine's PATH).
    header = (RECIPES / "cron-managed-identity.sh").read_text()
    install = re.search(r"^#\s+(cargo install .*)$", header, re.M).group(1)
    platform.run_step(install.replace(" --root /usr/local", ""), cwd=ROOT)
    platform.installed()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(platform.recipient + "\n")
    out = tmp_path / "backups"
    out.mkdir()
    log = tmp_path / "backup.jsonl"
    # A VM's managed identity: the identity endpoint, no service principal variables.
    env = {
        "IDENTITY_ENDPOINT": local_vault["identity_endpoint"],
        "IDENTITY_HEADER": "local-identity-header",
        "VAULT": platform.vault_url,
        "RECIPIENTS_FILE": str(recipients),
        "BACKUP_DIR": str(out),
        "LOG_FILE": str(log),
    }
    platform.run_step(f"sh {shlex.quote(str(RECIPES / 'cron-managed-identity.sh'))}", cwd=tmp_path, env=env)
    platform.assert_archive(out)
    summary = json.loads(log.read_text().splitlines()[-1])
    assert summary["type"] == "summary"


def cronjob_container():
    doc = yaml.safe_load((RECIPES / "kubernetes-cronjob.yaml").read_text())
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def dockerfile_build_commands():
    """The build commands the Dockerfile's header gives, in order."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [l[1:].strip() for l in lines if re.match(r"#\s+(RUSTFLAGS=|docker build )", l)]


def test_kubernetes_recipe_names_the_image_the_dockerfile_builds():
    _, container = cronjob_container()
    commands = dockerfile_build_commands()
    assert len(commands) == 2, commands
    tag = re.search(r"\s-t\s+(\S+)", commands[1]).group(1)
    assert container["image"] == tag, "the CronJob runs the image the Dockerfile builds"
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM scratch$", text, re.M)
    assert 'ENTRYPOINT ["/coldvault"]' in text
    assert "crt-static" in commands[0], "a static binary: scratch has no libc"
    assert 'getrandom_backend="linux_getrandom"' in commands[0], "randomness without /dev"


def container_args(container, env, mounts):
    """The container's args as the kubelet expands them: `$(VAR)` from the container's env;
    mount paths mapped to folders."""
    args = [expand(a, env, r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", "the container") for a in container["args"]]
    mapped = []
    for arg in args:
        for mount, folder in mounts.items():
            if arg == mount or arg.startswith(mount + "/"):
                arg = str(folder) + arg[len(mount):]
        mapped.append(arg)
    return mapped


def test_kubernetes_recipe_runs(local_vault, tmp_path):
    pod, container = cronjob_container()
    platform = Platform(tmp_path, local_vault)
    recipients = tmp_path / "configmap"
    recipients.mkdir()
    (recipients / "recipients.txt").write_text(platform.recipient + "\n")
    backups = tmp_path / "pvc"
    backups.mkdir()
    by_volume = {"recipients": recipients, "backups": backups}
    mounts = {m["mountPath"]: by_volume[m["name"]] for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env["VAULT"] = platform.vault_url
    args = container_args(container, env, mounts)
    # The image's entrypoint is the binary; here it runs without the image.
    result = subprocess.run(
        [BINARY, *args], env={**platform.env, **env, **platform.service_principal()},
        capture_output=True, text=True,
    )
    assert CANARY not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["type"] == "summary"
    platform.assert_archive(backups)
    assert pod["securityContext"]["runAsUser"] == 65532, "the image's user"


def docker_available():
    if shutil.which("docker") is None:
        return False, "the docker command is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, (probe.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return True, ""


def test_kubernetes_image_builds_and_runs(local_vault, tmp_path):
    available, why = docker_available()
    if not available:
        pytest.skip(f"image not built or run: no Docker daemon reachable ({why})")
    for command in dockerfile_build_commands():
        subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=ROOT, check=True)
    pod, container = cronjob_container()
    platform = Platform(tmp_path, local_vault)
    recipients = tmp_path / "configmap"
    recipients.mkdir()
    (recipients / "recipients.txt").write_text(platform.recipient + "\n")
    backups = tmp_path / "pvc"
    backups.mkdir()
    # The pod's fsGroup makes the volume writable for the image's user; here, its owner.
    if os.geteuid() == 0:
        os.chown(backups, 65532, 65532)
    else:
        backups.chmod(0o777)
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env["VAULT"] = platform.vault_url
    args = [expand(a, env, r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", "the container") for a in container["args"]]
    volumes = {"recipients": recipients, "backups": backups}
    command = ["docker", "run", "--rm", "--network", "host"]
    for mount in container["volumeMounts"]:
        command += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}"]
    command += ["-v", f"{local_vault['ca_cert']}:/etc/coldvault-ca.pem:ro", "-e", "COLDVAULT_CA_CERT=/etc/coldvault-ca.pem"]
    for name, value in platform.service_principal().items():
        command += ["-e", f"{name}={value}"]
    command += [container["image"], *args]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    platform.assert_archive(backups)
