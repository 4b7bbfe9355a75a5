"""The api-version each installed official client sends by default must be one the local Key Vault
accepts: the suite installs the newest SDKs unpinned, so the day a release moves to a version the
emulator does not know, this fails instead of every other test failing obscurely (or, worse, the
suite being pinned around the gap).

The default is read from the SDK itself: `client.api_version` of a client built without one (what
it sends), checked to be one of the package's `ApiVersion` values, then sent on a real request
with TLS and challenge verification on."""

import importlib

import pytest

CLIENTS = [
    ("azure.keyvault.secrets", "SecretClient", "make_secret_client", "list_properties_of_secrets"),
    ("azure.keyvault.keys", "KeyClient", "make_key_client", "list_properties_of_keys"),
    (
        "azure.keyvault.certificates",
        "CertificateClient",
        "make_certificate_client",
        "list_properties_of_certificates",
    ),
]


def sdk_default(client):
    """The api-version a client built without one sends."""
    return str(getattr(client.api_version, "value", client.api_version))


@pytest.mark.parametrize("package,client_name,factory,lister", CLIENTS)
def test_installed_client_default_api_version_is_accepted(
    emulator, request, package, client_name, factory, lister
):
    client = request.getfixturevalue(factory)("alpha")
    default = sdk_default(client)
    # The version must be one of the package's published ones (its enum), not a typo.
    versions = [v.value for v in importlib.import_module(package).ApiVersion]
    assert default in versions

    # Raw: the emulator accepts it (an unknown version would be 400 BadParameter).
    token = emulator.token()
    plural = {"SecretClient": "secrets", "KeyClient": "keys", "CertificateClient": "certificates"}
    response = emulator.raw("GET", "alpha", f"/{plural[client_name]}", token=token, api_version=default)
    assert response.status_code == 200, response.text

    # Through the SDK: one list call at the default version, and the journal saw that version.
    list(getattr(client, lister)())
    seen = [e["query"] for e in emulator.journal(path=f"/{plural[client_name]}", method="GET")]
    assert any(f"api-version={default}" in q for q in seen), seen


def test_cryptography_client_default_api_version_is_accepted(emulator, credential, key_client, name):
    from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm

    key = key_client.create_rsa_key(name)
    crypto = CryptographyClient(key, credential, connection_verify=emulator.ca)
    assert sdk_default(crypto) == sdk_default(key_client)
    # RSA encryption may happen locally in the SDK; decrypt always goes to the vault.
    sealed = crypto.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"default version")
    assert crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed.ciphertext).plaintext == b"default version"


def test_unknown_api_version_names_the_newest_supported(emulator):
    response = emulator.raw("GET", "alpha", "/secrets", token=emulator.token(), api_version="2099-01-01")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"
    assert "2026-04-01" in response.json()["error"]["message"]
