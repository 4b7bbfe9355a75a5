"""Reads one secret from the local Key Vault with the official Python SDK, configured from the
variables `coldvault emulator --print-env` exports (and its /etc/hosts lines added).
docs/EMULATOR.md shows this file; tests/python/test_own_code.py runs it."""

import os

from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

credential = ClientSecretCredential(
    os.environ["AZURE_TENANT_ID"],
    os.environ["AZURE_CLIENT_ID"],
    os.environ["AZURE_CLIENT_SECRET"],
    authority=os.environ["AZURE_AUTHORITY_HOST"],
    # The local issuer is unknown to login.microsoftonline.com: do not ask it.
    disable_instance_discovery=True,
)
# REQUESTS_CA_BUNDLE (exported too) makes the SDK trust the emulator's CA; TLS and the
# challenge-resource check stay on.
client = SecretClient(os.environ["COLDVAULT_EMULATOR_VAULT_PROD"], credential)
print(client.get_secret("db-password").value)
