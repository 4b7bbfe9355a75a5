"""Keys through the official azure-keyvault-keys: one test per behaviour of EMULATOR.md (items 9,
11, 13-15 for keys), each asserting the status and Azure's error code."""

import hashlib
import re

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import JsonWebKey, KeyCurveName, KeyRotationLifetimeAction, KeyRotationPolicy, KeyType
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from conftest import error_code, inner_code

POLL = {"_polling_interval": 0.05}


def finish(poller):
    """Waits for a Key Vault poller and returns its result."""
    poller.wait()
    return poller.result()


def crypto_client(emulator, credential, key):
    return CryptographyClient(key, credential, connection_verify=emulator.ca)


def public_key_of(jwk):
    """The public key a JWK describes, rebuilt locally with `cryptography`."""
    if jwk.kty in (KeyType.rsa, KeyType.rsa_hsm):
        numbers = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big"))
        return numbers.public_key()
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk.crv]
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
    )
    return numbers.public_key()


def verify_locally(jwk, alg, digest, signature):
    """True when `signature` over `digest` verifies under the JWK's public key."""
    key = public_key_of(jwk)
    try:
        if alg == SignatureAlgorithm.rs256:
            key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        elif alg == SignatureAlgorithm.ps256:
            key.verify(
                signature,
                digest,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                utils.Prehashed(hashes.SHA256()),
            )
        elif alg == SignatureAlgorithm.es256:
            half = len(signature) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        else:
            raise AssertionError(f"no local check for {alg}")
    except InvalidSignature:
        return False
    return True


def test_create_rsa_sizes_render_key_vault_jwk(key_client, name):
    for size in (2048, 3072, 4096):
        key = key_client.create_rsa_key(f"{name}-{size}", size=size)
        assert key.key.kty == KeyType.rsa
        assert len(key.key.n) * 8 == size
        assert key.key.e == b"\x01\x00\x01"
        assert re.fullmatch(r"[0-9a-f]{32}", key.properties.version)
        assert key.id == f"{key_client.vault_url}/keys/{name}-{size}/{key.properties.version}"
        assert set(key.key_operations) == {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}


def test_create_ec_curves(key_client, name):
    for curve, length in (("P-256", 32), ("P-384", 48), ("P-521", 66)):
        key = key_client.create_ec_key(f"{name}-{curve[2:]}", curve=curve)
        assert key.key.kty == KeyType.ec
        assert key.key.crv == curve
        assert len(key.key.x) == length and len(key.key.y) == length
        assert key.key_operations == ["sign", "verify"]


def test_hsm_key_in_standard_vault_is_400_bad_parameter(key_client, name):
    with pytest.raises(HttpResponseError) as err:
        key_client.create_rsa_key(name, hardware_protected=True)
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_hsm_key_in_premium_vault(make_key_client, name):
    client = make_key_client("prem")
    rsa_key = client.create_rsa_key(name, hardware_protected=True)
    assert rsa_key.key.kty == KeyType.rsa_hsm
    ec_key = client.create_ec_key(f"{name}-ec", curve=KeyCurveName.p_384, hardware_protected=True)
    assert ec_key.key.kty == KeyType.ec_hsm


def test_import_jwk_with_private_parts(key_client, name):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.private_numbers()

    def raw(n):
        return n.to_bytes((n.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(
        kty="RSA",
        n=raw(numbers.public_numbers.n),
        e=raw(numbers.public_numbers.e),
        d=raw(numbers.d),
        p=raw(numbers.p),
        q=raw(numbers.q),
        dp=raw(numbers.dmp1),
        dq=raw(numbers.dmq1),
        qi=raw(numbers.iqmp),
        key_ops=["sign", "verify"],
    )
    imported = key_client.import_key(name, jwk)
    assert imported.key.n == raw(numbers.public_numbers.n)
    assert imported.key_operations == ["sign", "verify"]
    assert key_client.get_key(name).key.n == imported.key.n


def test_sign_verifies_locally_and_remotely(emulator, credential, key_client, name):
    digest = hashlib.sha256(b"coldvault").digest()
    for alg, key in (
        (SignatureAlgorithm.rs256, key_client.create_rsa_key(f"{name}-rsa")),
        (SignatureAlgorithm.ps256, key_client.get_key(f"{name}-rsa")),
        (SignatureAlgorithm.es256, key_client.create_ec_key(f"{name}-ec", curve="P-256")),
    ):
        client = crypto_client(emulator, credential, key.id)
        signed = client.sign(alg, digest)
        assert signed.key_id == key.id
        assert verify_locally(key.key, alg, digest, signed.signature)
        assert client.verify(alg, digest, signed.signature).is_valid
        other = hashlib.sha256(b"tampered").digest()
        assert not client.verify(alg, other, signed.signature).is_valid


def test_sign_with_algorithm_of_another_family_is_400(emulator, credential, key_client, name):
    key = key_client.create_ec_key(name, curve="P-256")
    client = crypto_client(emulator, credential, key.id)
    with pytest.raises(HttpResponseError) as err:
        client.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_backup_purge_restore_keeps_versions_and_signs_as_the_original(
    emulator, credential, key_client, name
):
    first = key_client.create_rsa_key(name)
    second = key_client.create_rsa_key(name)
    blob = key_client.backup_key(name)
    finish(key_client.begin_delete_key(name, **POLL))
    key_client.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(name)

    restored = key_client.restore_key_backup(blob)
    assert restored.properties.version == second.properties.version
    assert restored.properties.created_on == second.properties.created_on
    versions = {p.version for p in key_client.list_properties_of_key_versions(name)}
    assert versions == {first.properties.version, second.properties.version}

    digest = hashlib.sha256(b"after restore").digest()
    signed = crypto_client(emulator, credential, restored.id).sign(SignatureAlgorithm.rs256, digest)
    assert verify_locally(second.key, SignatureAlgorithm.rs256, digest, signed.signature)
    old = key_client.get_key(name, first.properties.version)
    assert old.key.n == first.key.n


def test_restore_over_live_key_is_409_conflict(key_client, name):
    key_client.create_ec_key(name)
    blob = key_client.backup_key(name)
    with pytest.raises(ResourceExistsError) as err:
        key_client.restore_key_backup(blob)
    assert err.value.status_code == 409
    assert error_code(err.value) == "Conflict"


def test_key_blob_posted_to_secrets_is_400(key_client, make_secret_client, name):
    key_client.create_ec_key(name)
    blob = key_client.backup_key(name)
    with pytest.raises(HttpResponseError) as err:
        make_secret_client("alpha").restore_secret_backup(blob)
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_key_blob_restores_in_another_vault_of_the_subscription_only(
    key_client, make_key_client, name
):
    key = key_client.create_ec_key(name)
    blob = key_client.backup_key(name)
    restored = make_key_client("beta").restore_key_backup(blob)
    assert restored.key.x == key.key.x
    with pytest.raises(HttpResponseError) as err:
        make_key_client("gamma").restore_key_backup(blob)
    assert err.value.status_code == 400
    assert "Cannot decrypt backup blob" in err.value.message


def test_delete_recover_and_deleted_list(key_client, name):
    key = key_client.create_ec_key(name)
    deleted = finish(key_client.begin_delete_key(name, **POLL))
    assert deleted.recovery_id.endswith(f"/deletedkeys/{name}")
    assert name in {d.name for d in key_client.list_deleted_keys()}
    with pytest.raises(ResourceExistsError) as err:
        key_client.create_ec_key(name)
    assert err.value.status_code == 409
    recovered = finish(key_client.begin_recover_deleted_key(name, **POLL))
    assert recovered.properties.version == key.properties.version
    assert key_client.get_key(name).key.x == key.key.x


def test_list_keys_follows_pages(emulator, make_key_client, name):
    client = make_key_client("pages")
    names = {f"{name}-{i}" for i in range(7)}
    for n in names:
        client.create_ec_key(n)
    listed = {p.name for p in client.list_properties_of_keys(max_page_size=2)}
    assert names <= listed


def test_update_properties_and_tags(key_client, name):
    key_client.create_rsa_key(name)
    updated = key_client.update_key_properties(
        name, enabled=False, tags={"env": "test"}, key_operations=["verify"]
    )
    assert updated.properties.enabled is False
    assert updated.properties.tags == {"env": "test"}
    assert updated.key_operations == ["verify"]


def test_rotation_policy_round_trip(key_client, name):
    key_client.create_ec_key(name)
    policy = key_client.update_key_rotation_policy(
        name,
        KeyRotationPolicy(
            lifetime_actions=[KeyRotationLifetimeAction("Rotate", time_after_create="P18M")],
            expires_in="P48M",
        ),
    )
    assert policy.expires_in == "P48M"
    got = key_client.get_key_rotation_policy(name)
    assert got.expires_in == "P48M"
    assert got.lifetime_actions[0].action == "Rotate"
    assert got.lifetime_actions[0].time_after_create == "P18M"
    original = key_client.get_key(name)
    rotated = key_client.rotate_key(name)
    assert rotated.properties.version != original.properties.version
    assert rotated.key.crv == original.key.crv
    assert rotated.key.x != original.key.x
    assert len(list(key_client.list_properties_of_key_versions(name))) == 2


def test_missing_key_is_404_key_not_found(key_client, name):
    with pytest.raises(ResourceNotFoundError) as err:
        key_client.get_key(name)
    assert err.value.status_code == 404
    assert error_code(err.value) == "KeyNotFound"


def test_sign_with_disabled_key_is_403(emulator, credential, key_client, name):
    key = key_client.create_ec_key(name)
    key_client.update_key_properties(name, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        crypto_client(emulator, credential, key.id).sign(
            SignatureAlgorithm.es256, hashlib.sha256(b"x").digest()
        )
    assert err.value.status_code == 403
    assert error_code(err.value) == "Forbidden"


def test_managed_key_cannot_be_recovered_or_purged_alone(
    make_certificate_client, key_client, name
):
    from azure.keyvault.certificates import CertificatePolicy

    certificates = make_certificate_client("alpha")
    finish(certificates.begin_create_certificate(name, CertificatePolicy.get_default(), **POLL))
    finish(certificates.begin_delete_certificate(name, **POLL))
    for call in (
        lambda: key_client.begin_recover_deleted_key(name, **POLL),
        lambda: key_client.purge_deleted_key(name),
    ):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == 403
        assert error_code(err.value) == "Forbidden"
    assert key_client.get_deleted_key(name).properties.managed is True


def test_rsa_key_decrypts_and_unwraps_what_each_algorithm_sealed(emulator, credential, key_client, name):
    from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm

    key = key_client.create_rsa_key(name, size=2048)
    client = crypto_client(emulator, credential, key.id)
    public = public_key_of(key.key)
    paddings = {
        "RSA1_5": padding.PKCS1v15(),
        "RSA-OAEP": padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
        "RSA-OAEP-256": padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    }
    for alg in (EncryptionAlgorithm.rsa1_5, EncryptionAlgorithm.rsa_oaep, EncryptionAlgorithm.rsa_oaep_256):
        # Sealed with `cryptography` under the public JWK; the vault opens it.
        sealed = public.encrypt(b"data key", paddings[alg.value])
        assert client.decrypt(alg, sealed).plaintext == b"data key"
        # And the SDK's own encrypt round-trips.
        assert client.decrypt(alg, client.encrypt(alg, b"again").ciphertext).plaintext == b"again"
    for alg in (KeyWrapAlgorithm.rsa1_5, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256):
        wrapped = public.encrypt(b"content key", paddings[alg.value])
        assert client.unwrap_key(alg, wrapped).key == b"content key"
        assert client.unwrap_key(alg, client.wrap_key(alg, b"k2").encrypted_key).key == b"k2"


def test_key_ops_refusal_is_403_key_operation_forbidden(emulator, credential, key_client, name):
    from azure.keyvault.keys.crypto import EncryptionAlgorithm

    key = key_client.create_rsa_key(name, key_operations=["sign", "verify"])
    sealed = public_key_of(key.key).encrypt(
        b"x", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    with pytest.raises(HttpResponseError) as err:
        crypto_client(emulator, credential, key.id).decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed)
    assert err.value.status_code == 403
    assert error_code(err.value) == "Forbidden"
    assert inner_code(err.value) == "KeyOperationForbidden"


def test_expired_or_not_yet_valid_key_refuses_sign_but_still_decrypts(emulator, credential, key_client, name):
    import datetime

    from azure.keyvault.keys.crypto import EncryptionAlgorithm

    key = key_client.create_rsa_key(name)
    client = crypto_client(emulator, credential, key.id)
    sealed = client.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"kept readable").ciphertext
    now = datetime.datetime.fromtimestamp(emulator.clock()["now"], datetime.timezone.utc)
    for window, inner in (
        ({"expires_on": now - datetime.timedelta(minutes=5)}, "KeyExpired"),
        ({"not_before": now + datetime.timedelta(hours=1), "expires_on": now + datetime.timedelta(hours=2)}, "KeyNotYetValid"),
    ):
        key_client.update_key_properties(name, **window)
        with pytest.raises(HttpResponseError) as err:
            client.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"new").digest())
        assert err.value.status_code == 403
        assert inner_code(err.value) == inner
        assert client.decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed).plaintext == b"kept readable"


def test_random_bytes_1_to_128(key_client):
    assert len(key_client.get_random_bytes(128)) == 128
    assert key_client.get_random_bytes(32) != key_client.get_random_bytes(32)
    with pytest.raises(HttpResponseError) as err:
        key_client.get_random_bytes(129)
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_secure_wrap_key_is_400_not_supported(emulator, key_client, name):
    key = key_client.create_rsa_key(name)
    response = emulator.raw(
        "POST",
        "alpha",
        f"/keys/{name}/{key.properties.version}/securewrapkey",
        token=emulator.token(),
        body={"alg": "RSA-OAEP-256"},
        api_version="2026-04-01",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"
    assert response.json()["error"]["innererror"]["code"] == "NotSupported"
