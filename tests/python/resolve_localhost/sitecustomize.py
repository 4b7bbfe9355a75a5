"""Resolves `localhost` and every `*.localhost` name to 127.0.0.1 in a Python process.

Test-only: the Azure CLI scenario puts this directory on PYTHONPATH so the `az` process reaches
`NAME.vault.localhost` without `/etc/hosts` lines (glibc does not map `*.localhost` to loopback;
systemd-resolved does, but CI machines rarely run it). People add the hosts lines instead:
`coldvault emulator --print-env` prints them.
"""

import socket

_real_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_getaddrinfo
