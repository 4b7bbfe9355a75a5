"""The usual KV-to-Key-Vault script: list the KV mount, then read each secret and set it in
the vault, one request at a time.

The baseline the KV copy benchmark compares `coldvault copy --from bao+…` against: what a
hand-written sync job does without Vault Enterprise's secrets sync (list the mount recursively
with the official `hvac` client, read each secret's current version, `set_secret` it into Key
Vault as JSON with the official Azure SDK for Python). Arguments: the local Key Vault's ready
line (JSON, as `coldvault emulator` prints it), the target vault's name, the OpenBao address,
the mount. The token comes from VAULT_TOKEN. Prints one JSON line: secrets copied, wall seconds.
"""

import json
import os
import socket
import sys
import time

import hvac
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

_real_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    # RFC 6761: every name under .localhost is loopback.
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


def walk(kv, mount, folder=""):
    listed = kv.secrets.kv.v2.list_secrets(path=folder, mount_point=mount)
    for key in listed["data"]["keys"]:
        if key.endswith("/"):
            yield from walk(kv, mount, folder + key)
        else:
            yield folder + key


def main() -> int:
    ready = json.loads(sys.argv[1])
    target, bao_addr, mount = sys.argv[2], sys.argv[3], sys.argv[4]
    socket.getaddrinfo = _loopback_getaddrinfo
    credential = ClientSecretCredential(
        ready["tenant_id"],
        ready["client_id"],
        ready["client_secret"],
        authority=ready["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ready["ca_cert"],
    )
    dst = SecretClient(ready["vaults"][target], credential, connection_verify=ready["ca_cert"])
    kv = hvac.Client(url=bao_addr, token=os.environ["VAULT_TOKEN"])
    start = time.monotonic()
    count = 0
    for path in walk(kv, mount):
        data = kv.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )["data"]["data"]
        name = path.replace("/", "--")
        dst.set_secret(
            name,
            json.dumps(data, separators=(",", ":"), sort_keys=True),
            content_type="application/json",
        )
        count += 1
    print(json.dumps({"secrets": count, "seconds": round(time.monotonic() - start, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
