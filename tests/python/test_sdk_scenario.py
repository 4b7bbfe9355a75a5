"""One scenario per object kind with the newest official Python SDK at its default api-version: every
operation that coldvault or a user's own backup script uses (list, get, set, update, delete,
recover, purge, backup, restore; certificate create, import, policy and versions; key sign and
verify, encrypt and decrypt, wrap and unwrap, random bytes), with TLS verified against the
emulator's CA and the SDK's challenge verification on (see conftest.py). The journal then shows
that every request went out at the SDK's own default version, so a pin cannot hide a gap."""

import datetime
import hashlib

from azure.keyvault.certificates import CertificateContentType, CertificatePolicy, WellKnownIssuerNames
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

POLL = {"_polling_interval": 0.05}


def assert_journal_at_default(emulator, name, client, kind):
    """Every journaled request to `kind` (`secrets`, `keys`, `certificates`, their deleted lists)
    touching `name` carried `client`'s api-version, which the suite never sets: the SDK's
    default (`test_api_versions.py` checks that it is the package's `DEFAULT_VERSION`)."""
    version = str(getattr(client.api_version, "value", client.api_version))
    entries = [
        e
        for e in emulator.journal()
        if name in e["path"] and e["path"].lstrip("/").split("/")[0] in (kind, f"deleted{kind}")
    ]
    assert entries, f"no request touched {name}"
    for entry in entries:
        assert f"api-version={version}" in entry["query"], entry


def test_secret_backup_script_operations(emulator, secret_client, name):
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    first = secret_client.set_secret(name, "v1", content_type="text/plain", tags={"app": "a"})
    second = secret_client.set_secret(name, "v2", expires_on=expires)
    assert name in [p.name for p in secret_client.list_properties_of_secrets()]
    versions = {p.version for p in secret_client.list_properties_of_secret_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    assert secret_client.get_secret(name).value == "v2"
    assert secret_client.get_secret(name, first.properties.version).value == "v1"
    updated = secret_client.update_secret_properties(name, tags={"app": "b"}, enabled=True)
    assert updated.tags == {"app": "b"}

    blob = secret_client.backup_secret(name)
    secret_client.begin_delete_secret(name, **POLL).wait()
    assert secret_client.get_deleted_secret(name).name == name
    assert name in [d.name for d in secret_client.list_deleted_secrets()]
    secret_client.begin_recover_deleted_secret(name, **POLL).wait()
    assert secret_client.get_secret(name).value == "v2"
    secret_client.begin_delete_secret(name, **POLL).wait()
    secret_client.purge_deleted_secret(name)
    restored = secret_client.restore_secret_backup(blob)
    assert restored.name == name
    assert secret_client.get_secret(name, first.properties.version).value == "v1"
    assert_journal_at_default(emulator, name, secret_client, "secrets")


def test_key_backup_script_operations(emulator, credential, key_client, name):
    key = key_client.create_rsa_key(name, size=2048)
    ec = key_client.create_ec_key(f"{name}-ec", curve="P-256")
    assert {name, f"{name}-ec"} <= {p.name for p in key_client.list_properties_of_keys()}
    again = key_client.create_rsa_key(name, size=2048)
    versions = {p.version for p in key_client.list_properties_of_key_versions(name)}
    assert versions == {key.properties.version, again.properties.version}
    assert key_client.get_key(name, key.properties.version).key.n == key.key.n
    updated = key_client.update_key_properties(name, tags={"owner": "ops"})
    assert updated.properties.tags == {"owner": "ops"}

    # sign/verify, remotely, and checked locally against the public JWK.
    crypto = CryptographyClient(again, credential, connection_verify=emulator.ca)
    digest = hashlib.sha256(b"coldvault").digest()
    signature = crypto.sign(SignatureAlgorithm.rs256, digest).signature
    assert crypto.verify(SignatureAlgorithm.rs256, digest, signature).is_valid
    public = rsa.RSAPublicNumbers(
        int.from_bytes(again.key.e, "big"), int.from_bytes(again.key.n, "big")
    ).public_key()
    public.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    ec_crypto = CryptographyClient(ec, credential, connection_verify=emulator.ca)
    ec_signature = ec_crypto.sign(SignatureAlgorithm.es256, digest).signature
    assert ec_crypto.verify(SignatureAlgorithm.es256, digest, ec_signature).is_valid

    # encrypt/decrypt and wrap/unwrap; the encrypting half may run locally in the SDK, the
    # decrypting half always runs in the vault.
    sealed = crypto.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"data key").ciphertext
    assert crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed).plaintext == b"data key"
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"content key").encrypted_key
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"content key"
    assert len(key_client.get_random_bytes(16)) == 16

    blob = key_client.backup_key(name)
    key_client.begin_delete_key(name, **POLL).wait()
    assert key_client.get_deleted_key(name).name == name
    assert name in [d.name for d in key_client.list_deleted_keys()]
    key_client.begin_recover_deleted_key(name, **POLL).wait()
    key_client.begin_delete_key(name, **POLL).wait()
    key_client.purge_deleted_key(name)
    restored = key_client.restore_key_backup(blob)
    assert restored.properties.version == again.properties.version
    after = CryptographyClient(restored, credential, connection_verify=emulator.ca)
    signature = after.sign(SignatureAlgorithm.rs256, digest).signature
    public.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    assert_journal_at_default(emulator, name, key_client, "keys")


def pfx_for(subject):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    pfx = pkcs12.serialize_key_and_certificates(
        b"imported", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")
    )
    return pfx, cert


def test_certificate_backup_script_operations(emulator, certificate_client, secret_client, name):
    policy = CertificatePolicy(
        issuer_name=WellKnownIssuerNames.self,
        subject="CN=scenario.test",
        content_type=CertificateContentType.pkcs12,
        validity_in_months=12,
    )
    created = certificate_client.begin_create_certificate(name, policy, **POLL).result()
    assert created.name == name
    assert name in [p.name for p in certificate_client.list_properties_of_certificates()]
    versions = [p.version for p in certificate_client.list_properties_of_certificate_versions(name)]
    assert versions == [created.properties.version]
    assert certificate_client.get_certificate_version(name, created.properties.version).cer == created.cer
    got_policy = certificate_client.get_certificate_policy(name)
    assert got_policy.subject == "CN=scenario.test"
    changed = CertificatePolicy(issuer_name="Self", subject=got_policy.subject, validity_in_months=24)
    assert certificate_client.update_certificate_policy(name, changed).validity_in_months == 24
    updated = certificate_client.update_certificate_properties(name, tags={"tier": "gold"})
    assert updated.properties.tags == {"tier": "gold"}
    # What a backup script downloads: the managed secret holds the PFX with its key.
    managed = secret_client.get_secret(name)
    assert managed.properties.content_type == "application/x-pkcs12"

    pfx, cert = pfx_for("imported.scenario.test")
    imported = certificate_client.import_certificate(f"{name}-imp", pfx, password="pfx-pass")
    assert imported.cer == cert.public_bytes(serialization.Encoding.DER)

    blob = certificate_client.backup_certificate(name)
    certificate_client.begin_delete_certificate(name, **POLL).wait()
    assert certificate_client.get_deleted_certificate(name).name == name
    assert name in [d.name for d in certificate_client.list_deleted_certificates()]
    certificate_client.begin_recover_deleted_certificate(name, **POLL).wait()
    certificate_client.begin_delete_certificate(name, **POLL).wait()
    certificate_client.purge_deleted_certificate(name)
    restored = certificate_client.restore_certificate_backup(blob)
    assert restored.properties.version == created.properties.version
    assert restored.cer == created.cer
    assert_journal_at_default(emulator, name, certificate_client, "certificates")
