"""The fleet recipes of docs/recipes/ run, and together back up every vault exactly once.

A local Key Vault serves a fleet of vaults over three subscriptions, found through its Azure
Resource Manager surface (`COLDVAULT_ARM_ENDPOINT` stands in for the public cloud's, as the
vault URL does in the other recipe tests). Each recipe's shards are run the way their
platform runs them:

- the Kubernetes Indexed Job: the pod's args, once per completion index with
  `JOB_COMPLETION_INDEX` set as Kubernetes sets it, the service principal in the environment
  standing in for workload identity (as in test_recipes.py), the volumes mapped to folders;
- the Container Apps jobs: the script itself, with an `az` stand-in that keeps each job's
  YAML; each job's container is then run from its YAML with the managed identity endpoint
  (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`) that Container Apps gives a replica.

The archives of all shards together must name every vault of the fleet exactly once, and each
must pass `coldvault verify`.
"""

import json
import pathlib
import shlex
import stat
import subprocess
import sys

import pytest
import requests
import yaml

from conftest import start_emulator, stop_emulator
from test_recipes import BINARY, RECIPES, ROOT, Platform, container_args

SUBSCRIPTIONS = [
    "11111111-0000-0000-0000-0000000000f1",
    "22222222-0000-0000-0000-0000000000f2",
    "33333333-0000-0000-0000-0000000000f3",
]
FLEET = [f"fleet-kv-{i:02}" for i in range(11)]
SEEDED = "fleet-db-password"
CANARY = "CANARY-fleet-recipes-5be2-never-print-me"


@pytest.fixture(scope="module")
def fleet():
    """A local Key Vault serving FLEET over three subscriptions, one secret in each vault."""
    specs = [f"{name},subscription={SUBSCRIPTIONS[i % 3]}" for i, name in enumerate(FLEET)]
    proc, ready = start_emulator(vaults=specs)
    try:
        ca = ready["ca_cert"]
        token = requests.post(ready["admin"] + "/tokens", json={}, verify=ca).json()["access_token"]
        for name in FLEET:
            answer = requests.put(
                ready["vaults"][name].rstrip("/") + f"/secrets/{SEEDED}?api-version=7.6",
                json={"value": CANARY},
                headers={"Authorization": f"Bearer {token}"},
                verify=ca,
            )
            assert answer.status_code == 200, answer.text
        yield ready
    finally:
        stop_emulator(proc)


def run_shard(args, env):
    """Runs one shard's coldvault; answers its fleet summary."""
    result = subprocess.run([BINARY, *args], env=env, capture_output=True, text=True)
    shown = result.stdout + result.stderr
    assert CANARY not in shown, "a secret value was printed"
    assert result.returncode == 0, shown
    events = [json.loads(line) for line in result.stdout.splitlines()]
    (summary,) = [e for e in events if e["type"] in ("fleet_summary",)]
    return summary


def assert_every_vault_once(platform, folder, summaries):
    archives = sorted(pathlib.Path(folder).glob("*.tar.zst.age"))
    vaults = sorted(a.name.rsplit("-", 1)[0] for a in archives)
    assert vaults == sorted(FLEET), "every vault exactly once"
    reported = sorted(v["vault"] for s in summaries for v in s["vaults"])
    assert reported == sorted(FLEET), "each shard reports its own vaults only"
    assert sum(1 for s in summaries if s["vaults"]) >= 2, "the fleet is spread over shards"
    for archive in archives:
        verify = subprocess.run(
            [BINARY, "verify", str(archive), "-i", str(platform.identity)],
            capture_output=True, text=True,
        )
        assert verify.returncode == 0, verify.stderr


def test_kubernetes_indexed_job_recipe_backs_up_every_vault_once(fleet, tmp_path):
    doc = yaml.safe_load((RECIPES / "kubernetes-indexed-job.yaml").read_text())
    job = doc["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    shards = job["completions"]
    assert job["parallelism"] == shards, "every shard runs at once"
    pod = job["template"]["spec"]
    assert job["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    (container,) = pod["containers"]
    assert container["args"][container["args"].index("--shards") + 1] == str(shards)
    platform = Platform(tmp_path, fleet)
    recipients = tmp_path / "configmap"
    recipients.mkdir()
    (recipients / "recipients.txt").write_text(platform.recipient + "\n")
    backups = tmp_path / "shared-pvc"
    backups.mkdir()
    by_volume = {"recipients": recipients, "backups": backups}
    mounts = {m["mountPath"]: by_volume[m["name"]] for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    args = container_args(container, env, mounts)
    summaries = []
    for index in range(shards):
        summaries.append(run_shard(args, {
            **platform.env, **env, **platform.service_principal(),
            "COLDVAULT_ARM_ENDPOINT": fleet["arm_endpoint"],
            "JOB_COMPLETION_INDEX": str(index),
        }))
    assert_every_vault_once(platform, backups, summaries)


FAKE_AZ = """#!{python}
# `az containerapp job create --name NAME --resource-group RG --yaml FILE`: keeps the job's YAML.
import pathlib, shutil, sys

args = sys.argv[1:]
if args[:3] != ["containerapp", "job", "create"]:
    sys.exit("az stand-in: only `az containerapp job create` is served")
name = args[args.index("--name") + 1]
assert args[args.index("--resource-group") + 1]
shutil.copy(args[args.index("--yaml") + 1], pathlib.Path({record!r}) / (name + ".yaml"))
print('{{"provisioningState": "Succeeded"}}')
"""


def test_container_apps_jobs_recipe_backs_up_every_vault_once(fleet, tmp_path):
    platform = Platform(tmp_path, fleet)
    record = tmp_path / "jobs"
    record.mkdir()
    az = platform.bin / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable, record=str(record)))
    az.chmod(az.stat().st_mode | stat.S_IXUSR)
    shards = 3
    platform.run_step(f"sh {shlex.quote(str(RECIPES / 'container-apps-jobs.sh'))}", cwd=tmp_path, env={
        "RESOURCE_GROUP": "ops",
        "ENVIRONMENT_ID": "/subscriptions/s/resourceGroups/ops/providers/Microsoft.App/managedEnvironments/ops-env",
        "IDENTITY_ID": "/subscriptions/s/resourceGroups/ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/coldvault",
        "IDENTITY_CLIENT_ID": "00000000-0000-0000-0000-00000000c0de",
        "IMAGE": "coldvault:0.1.0",
        "RECIPIENT": platform.recipient,
        "SHARDS": str(shards),
    })
    jobs = sorted(record.glob("*.yaml"))
    assert [j.stem for j in jobs] == [f"coldvault-backup-{i}" for i in range(shards)]
    share = tmp_path / "azure-files"
    share.mkdir()
    summaries = []
    for job in jobs:
        spec = yaml.safe_load(job.read_text())
        assert spec["identity"]["type"] == "UserAssigned"
        configuration = spec["properties"]["configuration"]
        assert configuration["triggerType"] == "Schedule"
        assert configuration["scheduleTriggerConfig"]["parallelism"] == 1
        template = spec["properties"]["template"]
        (container,) = template["containers"]
        (volume,) = template["volumes"]
        assert volume["storageType"] == "AzureFile"
        mounts = {m["mountPath"]: share for m in container["volumeMounts"]}
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        args = container_args(container, {}, mounts)
        # A Container Apps replica's managed identity: the identity endpoint, no secret.
        summaries.append(run_shard(args, {
            **platform.env, **env,
            "IDENTITY_ENDPOINT": fleet["identity_endpoint"],
            "IDENTITY_HEADER": "local-identity-header",
            "COLDVAULT_ARM_ENDPOINT": fleet["arm_endpoint"],
        }))
    assert_every_vault_once(platform, share, summaries)


def test_the_recipes_are_named_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for recipe in ("kubernetes-indexed-job.yaml", "container-apps-jobs.sh"):
        assert f"docs/recipes/{recipe}" in readme, recipe
