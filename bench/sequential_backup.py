"""The usual script: list every secret, then get each value, one request at a time.

The baseline the backup benchmark compares coldvault against. It uses the official Azure SDK
for Python exactly as such scripts do (ClientSecretCredential, SecretClient), against the local
Key Vault whose ready line (JSON, as `coldvault emulator` prints it) is given as the argument.
It prints one JSON line: secrets read, wall seconds.
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
    vault = sys.argv[2] if len(sys.argv) > 2 else next(iter(ready["vaults"]))
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
    client = SecretClient(
        ready["vaults"][vault], credential, connection_verify=ready["ca_cert"]
    )
    start = time.monotonic()
    count = 0
    for props in client.list_properties_of_secrets():
        if props.managed or not props.enabled:
            continue
        client.get_secret(props.name)
        count += 1
    print(json.dumps({"secrets": count, "seconds": round(time.monotonic() - start, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
