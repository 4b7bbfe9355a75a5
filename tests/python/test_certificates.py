"""Certificates through the official azure-keyvault-certificates (with -keys and -secrets for the
managed key and secret): one test per behaviour of EMULATOR.md (items 10, 11, 13-15 for
certificates), each asserting the status and Azure's error code."""

import base64
import datetime
import hashlib

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.certificates import (
    CertificateContentType,
    CertificatePolicy,
    KeyType,
    WellKnownIssuerNames,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from conftest import error_code, inner_code

POLL = {"_polling_interval": 0.05}


def finish(poller):
    """Waits for a Key Vault poller and returns its result."""
    poller.wait()
    return poller.result()


def policy(subject="CN=coldvault.test", content_type=CertificateContentType.pkcs12, **kwargs):
    return CertificatePolicy(
        issuer_name=WellKnownIssuerNames.self,
        subject=subject,
        content_type=content_type,
        validity_in_months=12,
        **kwargs,
    )


def create(certificate_client, name, **kwargs):
    return finish(certificate_client.begin_create_certificate(name, policy(**kwargs), **POLL))


def make_certificate(subject, key, issuer=None, issuer_key=None, ca=False):
    """A certificate for `key`, self-signed unless an issuer is given."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(f"{subject}.example.test")]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def test_create_self_signed_goes_pending_then_completed(
    emulator, certificate_client, name
):
    poller = certificate_client.begin_create_certificate(name, policy(), **POLL)
    certificate = finish(poller)
    assert certificate.name == name
    cert = x509.load_der_x509_certificate(certificate.cer)
    assert cert.subject.rfc4514_string() == "CN=coldvault.test"
    assert certificate.properties.x509_thumbprint == hashlib.sha1(certificate.cer).digest()
    assert certificate.key_id.endswith(f"/keys/{name}/{certificate.properties.version}")
    assert certificate.secret_id.endswith(f"/secrets/{name}/{certificate.properties.version}")
    created = [
        e["status"]
        for e in emulator.journal(f"/certificates/{name}/create", "POST")
        if e["status"] != 401
    ]
    assert created == [202]
    operation = certificate_client.get_certificate_operation(name)
    assert operation.status == "completed"
    assert operation.target.endswith(f"/certificates/{name}")


def test_create_ec_certificate_with_sans(certificate_client, name):
    certificate = create(
        certificate_client,
        name,
        key_type=KeyType.ec,
        key_curve_name="P-384",
        san_dns_names=["app.example.test"],
    )
    cert = x509.load_der_x509_certificate(certificate.cer)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["app.example.test"]
    got = certificate_client.get_certificate_policy(name)
    assert got.key_curve_name == "P-384"
    assert got.san_dns_names == ["app.example.test"]


def test_managed_key_and_secret_listed_with_managed_true(
    certificate_client, key_client, secret_client, name
):
    certificate = create(certificate_client, name)
    version = certificate.properties.version
    keys = {k.name: k for k in key_client.list_properties_of_keys()}
    secrets = {s.name: s for s in secret_client.list_properties_of_secrets()}
    assert keys[name].managed is True
    assert secrets[name].managed is True
    key = key_client.get_key(name)
    assert key.properties.version == version
    assert key.properties.managed is True
    secret = secret_client.get_secret(name)
    assert secret.properties.version == version
    assert secret.properties.managed is True
    assert secret.properties.content_type == "application/x-pkcs12"
    assert secret.properties.key_id.endswith(f"/keys/{name}/{version}")
    # Standard base64 of a PFX that opens without a password and holds the same certificate.
    private_key, leaf, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert leaf.public_bytes(serialization.Encoding.DER) == certificate.cer
    assert private_key.public_key().public_numbers().n == int.from_bytes(key.key.n, "big")


def test_pem_certificate_secret_is_pem_text(certificate_client, secret_client, name):
    certificate = create(certificate_client, name, content_type=CertificateContentType.pem)
    secret = secret_client.get_secret(name)
    assert secret.properties.content_type == "application/x-pem-file"
    assert secret.value.startswith("-----BEGIN PRIVATE KEY-----\n")
    leaf = x509.load_pem_x509_certificate(secret.value.encode())
    assert leaf.public_bytes(serialization.Encoding.DER) == certificate.cer


def test_backing_up_or_setting_managed_objects_is_403(
    certificate_client, key_client, secret_client, name
):
    create(certificate_client, name)
    for call in (
        lambda: secret_client.backup_secret(name),
        lambda: secret_client.set_secret(name, "overwrite"),
        lambda: secret_client.update_secret_properties(name, enabled=False),
        lambda: secret_client.begin_delete_secret(name, **POLL),
    ):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == 403
        assert error_code(err.value) == "Forbidden"
        assert inner_code(err.value) == "SecretManagedByKeyVault"
    for call in (
        lambda: key_client.backup_key(name),
        lambda: key_client.update_key_properties(name, enabled=False),
        lambda: key_client.begin_delete_key(name, **POLL),
    ):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == 403
        assert error_code(err.value) == "Forbidden"
        assert inner_code(err.value) == "KeyManagedByKeyVault"


def test_import_pfx_with_password(certificate_client, secret_client, name):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_certificate("pfx-import", key)
    pfx = pkcs12.serialize_key_and_certificates(
        b"imported", key, cert, None, serialization.BestAvailableEncryption(b"pa55word")
    )
    imported = certificate_client.import_certificate(name, pfx, password="pa55word")
    assert imported.cer == cert.public_bytes(serialization.Encoding.DER)
    assert imported.policy.issuer_name == "Unknown"
    assert imported.policy.key_type == KeyType.rsa
    assert imported.policy.key_size == 2048
    secret = secret_client.get_secret(name)
    opened_key, opened_cert, _ = pkcs12.load_key_and_certificates(
        base64.b64decode(secret.value), None
    )
    assert opened_cert == cert
    assert opened_key.private_numbers() == key.private_numbers()


def test_import_pfx_with_wrong_password_is_400(certificate_client, name):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate("wrong-password", key)
    pfx = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(b"right")
    )
    with pytest.raises(HttpResponseError) as err:
        certificate_client.import_certificate(name, pfx, password="wrong")
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_import_pem_with_ca_signed_leaf_and_chain(certificate_client, secret_client, name):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_certificate("coldvault-test-ca", ca_key, ca=True)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = make_certificate("leaf", leaf_key, issuer=ca, issuer_key=ca_key)
    pem = (
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + leaf.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
    )
    imported = certificate_client.import_certificate(
        name, pem, policy=CertificatePolicy(
            issuer_name="Unknown", content_type=CertificateContentType.pem, subject="CN=leaf"
        )
    )
    assert imported.cer == leaf.public_bytes(serialization.Encoding.DER)
    assert imported.policy.san_dns_names == ["leaf.example.test"]
    secret = secret_client.get_secret(name)
    assert secret.properties.content_type == "application/x-pem-file"
    chain = x509.load_pem_x509_certificates(secret.value.encode())
    assert chain == [leaf, ca]


def test_certificate_backup_purge_restore_brings_all_three_back(
    certificate_client, key_client, secret_client, name
):
    certificate = create(certificate_client, name)
    version = certificate.properties.version
    value = secret_client.get_secret(name).value
    key_n = key_client.get_key(name).key.n
    blob = certificate_client.backup_certificate(name)

    finish(certificate_client.begin_delete_certificate(name, **POLL))
    certificate_client.purge_deleted_certificate(name)
    for call in (
        lambda: certificate_client.get_certificate(name),
        lambda: key_client.get_key(name),
        lambda: secret_client.get_secret(name),
    ):
        with pytest.raises(ResourceNotFoundError):
            call()

    restored = certificate_client.restore_certificate_backup(blob)
    assert restored.properties.version == version
    assert restored.cer == certificate.cer
    key = key_client.get_key(name)
    assert key.properties.version == version and key.properties.managed is True
    assert key.key.n == key_n
    secret = secret_client.get_secret(name)
    assert secret.properties.version == version and secret.properties.managed is True
    assert secret.value == value


def test_restore_certificate_over_live_name_is_409(certificate_client, name):
    create(certificate_client, name)
    blob = certificate_client.backup_certificate(name)
    with pytest.raises(ResourceExistsError) as err:
        certificate_client.restore_certificate_backup(blob)
    assert err.value.status_code == 409
    assert error_code(err.value) == "Conflict"


def test_delete_takes_managed_key_and_secret_along_and_recover_brings_them_back(
    certificate_client, key_client, secret_client, name
):
    certificate = create(certificate_client, name)
    deleted = finish(certificate_client.begin_delete_certificate(name, **POLL))
    assert deleted.recovery_id.endswith(f"/deletedcertificates/{name}")
    assert key_client.get_deleted_key(name).properties.managed is True
    assert secret_client.get_deleted_secret(name).properties.managed is True
    with pytest.raises(ResourceExistsError) as err:
        certificate_client.begin_create_certificate(name, policy(), **POLL)
    assert err.value.status_code == 409
    assert inner_code(err.value) == "ObjectIsDeletedButRecoverable"

    recovered = finish(certificate_client.begin_recover_deleted_certificate(name, **POLL))
    assert recovered.properties.version == certificate.properties.version
    assert key_client.get_key(name).properties.version == certificate.properties.version
    assert secret_client.get_secret(name).properties.managed is True


def test_policy_get_and_update(certificate_client, name):
    create(certificate_client, name)
    got = certificate_client.get_certificate_policy(name)
    assert got.subject == "CN=coldvault.test"
    assert got.issuer_name == "Self"
    assert got.validity_in_months == 12
    updated = certificate_client.update_certificate_policy(
        name, CertificatePolicy(issuer_name="Self", subject=got.subject, validity_in_months=24)
    )
    assert updated.validity_in_months == 24
    assert certificate_client.get_certificate_policy(name).validity_in_months == 24


def test_versions_and_update_properties(certificate_client, name):
    first = create(certificate_client, name)
    second = create(certificate_client, name)
    versions = {p.version for p in certificate_client.list_properties_of_certificate_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    updated = certificate_client.update_certificate_properties(
        name, first.properties.version, tags={"env": "test"}
    )
    assert updated.properties.tags == {"env": "test"}
    assert certificate_client.get_certificate_version(name, first.properties.version).cer == first.cer


def test_certificate_blob_posted_to_keys_is_400(certificate_client, key_client, name):
    create(certificate_client, name)
    blob = certificate_client.backup_certificate(name)
    with pytest.raises(HttpResponseError) as err:
        key_client.restore_key_backup(blob)
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_missing_certificate_is_404_certificate_not_found(certificate_client, name):
    with pytest.raises(ResourceNotFoundError) as err:
        certificate_client.get_certificate(name)
    assert err.value.status_code == 404
    assert error_code(err.value) == "CertificateNotFound"


def test_certificate_blob_restores_only_within_the_subscription(
    make_certificate_client, make_key_client, name
):
    alpha = make_certificate_client("alpha")
    certificate = create(alpha, name)
    blob = alpha.backup_certificate(name)
    restored = make_certificate_client("beta").restore_certificate_backup(blob)
    assert restored.properties.version == certificate.properties.version
    assert make_key_client("beta").get_key(name).properties.managed is True
    with pytest.raises(HttpResponseError) as err:
        make_certificate_client("gamma").restore_certificate_backup(blob)
    assert err.value.status_code == 400
    assert "Cannot decrypt backup blob" in err.value.message


def test_certificate_purge_refused_under_purge_protection(make_certificate_client, name):
    client = make_certificate_client("protected")
    create(client, name)
    finish(client.begin_delete_certificate(name, **POLL))
    with pytest.raises(HttpResponseError) as err:
        client.purge_deleted_certificate(name)
    assert err.value.status_code == 403
    assert error_code(err.value) == "Forbidden"


def test_certificate_delete_is_visible_after_the_delay_with_its_key(
    emulator, certificate_client, key_client, name
):
    create(certificate_client, name)
    emulator.settings(delete_delay_ms=300)
    deleted = finish(certificate_client.begin_delete_certificate(name, **POLL))
    assert deleted.name == name
    statuses = [e["status"] for e in emulator.journal(f"/deletedcertificates/{name}", "GET")]
    assert 404 in statuses and statuses[-1] == 200
    assert key_client.get_deleted_key(name).properties.managed is True


def test_issuer_create_get_update_list_delete(emulator, certificate_client, name):
    from azure.keyvault.certificates import AdministratorContact

    admin = AdministratorContact(first_name="Ada", last_name="L", email="ada@example.test", phone="1")
    issuer = certificate_client.create_issuer(
        name,
        "Test",
        account_id="account-1",
        password="issuer-pwd-canary",
        organization_id="org-1",
        admin_contacts=[admin],
    )
    assert issuer.provider == "Test"
    assert issuer.account_id == "account-1"
    assert issuer.password is None, "the issuer password is never answered"
    assert issuer.admin_contacts[0].email == "ada@example.test"
    assert certificate_client.get_issuer(name).organization_id == "org-1"
    updated = certificate_client.update_issuer(name, provider="OneCertV2-PrivateCA", enabled=False)
    assert (updated.provider, updated.enabled, updated.organization_id) == ("OneCertV2-PrivateCA", False, "org-1")
    assert name in [i.name for i in certificate_client.list_properties_of_issuers()]
    assert certificate_client.delete_issuer(name).name == name
    with pytest.raises(ResourceNotFoundError):
        certificate_client.get_issuer(name)
    assert "issuer-pwd-canary" not in str(emulator.journal())


def test_contacts_set_get_delete(certificate_client):
    from azure.keyvault.certificates import CertificateContact

    with pytest.raises(ResourceNotFoundError):
        certificate_client.get_contacts()
    contacts = [CertificateContact(email="ops@example.test", name="Ops", phone="555")]
    assert [c.email for c in certificate_client.set_contacts(contacts)] == ["ops@example.test"]
    assert [c.name for c in certificate_client.get_contacts()] == ["Ops"]
    assert [c.phone for c in certificate_client.delete_contacts()] == ["555"]
    with pytest.raises(ResourceNotFoundError):
        certificate_client.get_contacts()


def test_pending_operation_cancel_and_delete_are_served(emulator, certificate_client, name):
    # Created raw: the SDK's poller would complete the operation before the cancellation.
    created = emulator.raw(
        "POST",
        "alpha",
        f"/certificates/{name}/create",
        token=emulator.token(),
        body={"policy": {"x509_props": {"subject": "CN=p"}, "issuer": {"name": "Self"}}},
    )
    assert created.status_code == 202
    cancelled = certificate_client.cancel_certificate_operation(name)
    assert cancelled.cancellation_requested is True
    assert cancelled.status == "cancelled"
    assert certificate_client.delete_certificate_operation(name).cancellation_requested is True
    with pytest.raises(ResourceNotFoundError):
        certificate_client.get_certificate_operation(name)


def test_unserved_method_is_a_json_405_never_an_empty_body(emulator):
    response = emulator.raw("PUT", "alpha", "/certificates/x/pending", token=emulator.token(), body={})
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "MethodNotAllowed"


def test_platform_managed_policy_round_trips(emulator, certificate_client, name):
    platform = {"certificateUsage": "tls-server", "metadata": {"owner": "platform"}}
    token = emulator.token()
    created = emulator.raw(
        "POST",
        "alpha",
        f"/certificates/{name}/create",
        token=token,
        body={"policy": {"x509_props": {"subject": "CN=pm"}, "issuer": {"name": "Self"}, "platformManaged": platform}},
        api_version="2026-04-01",
    )
    assert created.status_code == 202, created.text
    got = emulator.raw("GET", "alpha", f"/certificates/{name}/policy", token=token, api_version="2026-04-01")
    assert got.json()["platformManaged"] == platform
    blob = certificate_client.backup_certificate(name)
    finish(certificate_client.begin_delete_certificate(name, **POLL))
    certificate_client.purge_deleted_certificate(name)
    certificate_client.restore_certificate_backup(blob)
    got = emulator.raw("GET", "alpha", f"/certificates/{name}/policy", token=token, api_version="2026-04-01")
    assert got.json()["platformManaged"] == platform
