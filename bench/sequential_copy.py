"""The usual copy script: list the source's secrets, then get each value and set it in the
target, one request at a time.

The baseline the copy benchmark compares `coldvault copy` against: the algorithm of the widely
shared `CopySecretsToAnotherVault.ps1` (Get-AzKeyVaultSecret for the list, then per secret
Get-AzKeyVaultSecret -AsPlainText and Set-AzKeyVaultSecret, same login on both sides), written
with the official Azure SDK for Python (ClientSecretCredential, SecretClient) against the local
Key Vault whose ready line (JSON, as `coldvault emulator` prints it) is the first argument; the
source and target vault names follow. It prints one JSON line: secrets copied, wall seconds.
"""

import json
import socket
import sys
import time

from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

_real_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    # RFC 6761: every name under .localhost is loopback.
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


def main() -> int:
    ready = json.loads(sys.argv[1])
    source, target = sys.argv[2], sys.argv[3]
    socket.getaddrinfo = _loopback_getaddrinfo
    credential = ClientSecretCredential(
        ready["tenant_id"],
        ready["client_id"],
        ready["client_secret"],
        authority=ready["authority_host"],
        # The local issuer is not a Microsoft cloud: skip the authority discovery call.
        disable_instance_discovery=True,
        connection_verify=ready["ca_cert"],
    )
    src = SecretClient(ready["vaults"][source], credential, connection_verify=ready["ca_cert"])
    dst = SecretClient(ready["vaults"][target], credential, connection_verify=ready["ca_cert"])
    start = time.monotonic()
    count = 0
    for props in src.list_properties_of_secrets():
        if props.managed or not props.enabled:
            continue
        secret = src.get_secret(props.name)
        dst.set_secret(
            props.name,
            secret.value,
            content_type=secret.properties.content_type,
            tags=secret.properties.tags,
        )
        count += 1
    print(json.dumps({"secrets": count, "seconds": round(time.monotonic() - start, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
