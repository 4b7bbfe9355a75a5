"""Secrets through the official azure-keyvault-secrets: one test per behaviour of EMULATOR.md,
each asserting the status and Azure's error code."""

import base64
import re

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from conftest import error_code, inner_code

POLL = {"_polling_interval": 0.05}


def finish(poller):
    """Waits for a Key Vault poller (its result() alone does not wait) and returns the result."""
    poller.wait()
    return poller.result()


def version_of(secret_id):
    return secret_id.rstrip("/").rsplit("/", 1)[1]


def test_set_and_get_round_trip_with_attributes(secret_client, name):
    created = secret_client.set_secret(
        name, "s3cret", content_type="text/plain", tags={"team": "ops"}
    )
    assert re.fullmatch(r"[0-9a-f]{32}", created.properties.version)
    got = secret_client.get_secret(name)
    assert got.value == "s3cret"
    assert got.properties.content_type == "text/plain"
    assert got.properties.tags == {"team": "ops"}
    assert got.properties.recovery_level == "Recoverable+Purgeable"
    assert got.properties.recoverable_days == 90
    assert got.properties.created_on is not None


def test_get_specific_version_and_latest(secret_client, name):
    first = secret_client.set_secret(name, "one")
    secret_client.set_secret(name, "two")
    assert secret_client.get_secret(name, first.properties.version).value == "one"
    assert secret_client.get_secret(name).value == "two"


def test_missing_secret_is_404_secret_not_found(secret_client, name):
    with pytest.raises(ResourceNotFoundError) as err:
        secret_client.get_secret(name)
    assert err.value.status_code == 404
    assert error_code(err.value) == "SecretNotFound"


def test_paging_through_60_secrets_with_page_size_3(emulator, make_secret_client):
    client = make_secret_client("pages")
    for i in range(60):
        client.set_secret(f"page-{i:02d}", f"v{i}")
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=3)]
    assert sorted(names) == [f"page-{i:02d}" for i in range(60)]
    pages = [e for e in emulator.journal("/secrets", "GET") if e["status"] == 200]
    assert len(pages) == 20
    assert all("maxresults=3" in e["query"] for e in pages)


def test_maxresults_26_is_400_bad_parameter(secret_client):
    with pytest.raises(HttpResponseError) as err:
        list(secret_client.list_properties_of_secrets(max_page_size=26))
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_ragged_pages_with_empty_pages_are_followed(emulator, make_secret_client):
    emulator.settings(ragged_pages=True, page_size=4)
    client = make_secret_client("pages")
    names = [p.name for p in client.list_properties_of_secrets()]
    assert len([n for n in names if n.startswith("page-")]) == 60
    bodies = emulator.journal("/secrets", "GET")
    assert len(bodies) > 15


def test_list_versions(secret_client, name):
    ids = [secret_client.set_secret(name, f"v{i}").properties.version for i in range(4)]
    listed = [p.version for p in secret_client.list_properties_of_secret_versions(name)]
    assert sorted(listed) == sorted(ids)


def test_disabled_secret_is_403_secret_disabled(secret_client, name):
    secret_client.set_secret(name, "hidden", enabled=False)
    with pytest.raises(HttpResponseError) as err:
        secret_client.get_secret(name)
    assert err.value.status_code == 403
    assert error_code(err.value) == "Forbidden"
    assert inner_code(err.value) == "SecretDisabled"


def test_expired_secret_is_still_200(secret_client, name):
    import datetime

    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    secret_client.set_secret(name, "stale", expires_on=past)
    got = secret_client.get_secret(name)
    assert got.value == "stale"
    assert got.properties.expires_on == past


def test_update_properties(secret_client, name):
    secret_client.set_secret(name, "v")
    updated = secret_client.update_secret_properties(name, content_type="x/y", tags={"a": "b"})
    assert updated.content_type == "x/y"
    assert updated.tags == {"a": "b"}
    assert secret_client.get_secret(name).value == "v"


def test_value_over_25kb_is_400(secret_client, name):
    with pytest.raises(HttpResponseError) as err:
        secret_client.set_secret(name, "x" * (25 * 1024 + 1))
    assert err.value.status_code == 400
    assert error_code(err.value) == "BadParameter"


def test_invalid_name_is_400(emulator):
    token = emulator.token()
    response = emulator.raw("PUT", "alpha", "/secrets/bad_name", token, {"value": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"


def test_delete_polls_then_recover_then_purge(emulator, secret_client, name):
    emulator.settings(delete_delay_ms=400)
    secret_client.set_secret(name, "v")
    deleted = finish(secret_client.begin_delete_secret(name, **POLL))
    assert deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    assert deleted.scheduled_purge_date is not None
    polls = [e["status"] for e in emulator.journal(f"/deletedsecrets/{name}", "GET")]
    assert polls[0] == 404 and polls[-1] == 200, polls

    recovered = finish(secret_client.begin_recover_deleted_secret(name, **POLL))
    assert recovered.name == name
    polls = [e["status"] for e in emulator.journal(f"/secrets/{name}", "GET")]
    assert polls[0] == 404 and polls[-1] == 200, polls
    assert secret_client.get_secret(name).value == "v"

    finish(secret_client.begin_delete_secret(name, **POLL))
    assert name in [d.name for d in secret_client.list_deleted_secrets()]
    secret_client.purge_deleted_secret(name)
    purge = emulator.journal(f"/deletedsecrets/{name}", "DELETE")
    assert [e["status"] for e in purge] == [204]
    with pytest.raises(ResourceNotFoundError) as err:
        secret_client.get_deleted_secret(name)
    assert error_code(err.value) == "SecretNotFound"


def test_set_on_deleted_name_is_409_object_is_deleted_but_recoverable(secret_client, name):
    secret_client.set_secret(name, "v")
    finish(secret_client.begin_delete_secret(name, **POLL))
    with pytest.raises(ResourceExistsError) as err:
        secret_client.set_secret(name, "again")
    assert err.value.status_code == 409
    assert error_code(err.value) == "Conflict"
    assert inner_code(err.value) == "ObjectIsDeletedButRecoverable"


def test_set_right_after_delete_is_409_object_is_being_deleted(emulator, secret_client, name):
    emulator.settings(delete_delay_ms=60_000)
    secret_client.set_secret(name, "v")
    emulator.raw("DELETE", "alpha", f"/secrets/{name}", emulator.token())
    with pytest.raises(ResourceExistsError) as err:
        secret_client.set_secret(name, "again")
    assert inner_code(err.value) == "ObjectIsBeingDeleted"


def test_backup_of_5_versions_purge_restore_same_ids_and_values(secret_client, name):
    versions = {}
    for i in range(5):
        versions[secret_client.set_secret(name, f"value-{i}").properties.version] = f"value-{i}"
    blob = secret_client.backup_secret(name)
    finish(secret_client.begin_delete_secret(name, **POLL))
    secret_client.purge_deleted_secret(name)
    restored = secret_client.restore_secret_backup(blob)
    assert restored.name == name
    listed = {p.version for p in secret_client.list_properties_of_secret_versions(name)}
    assert listed == set(versions)
    for version, value in versions.items():
        assert secret_client.get_secret(name, version).value == value


def test_restore_answers_original_version_and_created(secret_client, name):
    created = secret_client.set_secret(name, "v").properties
    blob = secret_client.backup_secret(name)
    finish(secret_client.begin_delete_secret(name, **POLL))
    secret_client.purge_deleted_secret(name)
    restored = secret_client.restore_secret_backup(blob)
    assert restored.version == created.version
    assert restored.created_on == created.created_on


def test_restore_over_live_name_is_409_conflict(secret_client, name):
    secret_client.set_secret(name, "v")
    blob = secret_client.backup_secret(name)
    with pytest.raises(ResourceExistsError) as err:
        secret_client.restore_secret_backup(blob)
    assert err.value.status_code == 409
    assert error_code(err.value) == "Conflict"
    assert "There was a conflict restoring the secret" in err.value.error.message


def test_restore_over_soft_deleted_name_is_409(secret_client, name):
    secret_client.set_secret(name, "v")
    blob = secret_client.backup_secret(name)
    finish(secret_client.begin_delete_secret(name, **POLL))
    with pytest.raises(ResourceExistsError) as err:
        secret_client.restore_secret_backup(blob)
    assert err.value.status_code == 409
    assert inner_code(err.value) == "ObjectIsDeletedButRecoverable"


def test_restore_inside_purge_window_is_409_object_is_being_deleted_then_succeeds(
    emulator, secret_client, name
):
    emulator.settings(purge_window_ms=30_000)
    secret_client.set_secret(name, "v")
    blob = secret_client.backup_secret(name)
    finish(secret_client.begin_delete_secret(name, **POLL))
    secret_client.purge_deleted_secret(name)
    with pytest.raises(ResourceExistsError) as err:
        secret_client.restore_secret_backup(blob)
    assert err.value.status_code == 409
    assert inner_code(err.value) == "ObjectIsBeingDeleted"
    emulator.clock(advance_seconds=31)
    assert secret_client.restore_secret_backup(blob).name == name


def test_restore_into_second_vault_of_same_subscription(make_secret_client, name):
    alpha, beta = make_secret_client("alpha"), make_secret_client("beta")
    original = alpha.set_secret(name, "moved")
    restored = beta.restore_secret_backup(alpha.backup_secret(name))
    assert restored.vault_url.rstrip("/") == beta.vault_url.rstrip("/")
    assert restored.version == original.properties.version
    assert beta.get_secret(name).value == "moved"


def test_restore_into_vault_of_other_subscription_is_400(make_secret_client, name):
    alpha, gamma = make_secret_client("alpha"), make_secret_client("gamma")
    alpha.set_secret(name, "stays")
    with pytest.raises(HttpResponseError) as err:
        gamma.restore_secret_backup(alpha.backup_secret(name))
    assert err.value.status_code == 400
    assert err.value.error.message.startswith("Cannot decrypt backup blob")


def test_flipped_byte_in_blob_is_400_malformed_backup_blob(secret_client, name):
    secret_client.set_secret(name, "v")
    blob = bytearray(secret_client.backup_secret(name))
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(HttpResponseError) as err:
        secret_client.restore_secret_backup(bytes(blob))
    assert err.value.status_code == 400
    assert error_code(err.value) == "Malformed backup blob"


def test_blob_is_unpadded_base64url_on_the_wire(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    response = emulator.raw("POST", "alpha", f"/secrets/{name}/backup", emulator.token())
    assert response.status_code == 200
    value = response.json()["value"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", value)
    assert base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))[:8] == b"CVKVBK01"


def test_key_blob_posted_to_secrets_is_400(make_key_client, secret_client, name):
    key_client = make_key_client("alpha")
    key_client.create_rsa_key(name, size=2048)
    blob = key_client.backup_key(name)
    with pytest.raises(HttpResponseError) as err:
        secret_client.restore_secret_backup(blob)
    assert err.value.status_code == 400


def test_purge_refused_under_purge_protection(make_secret_client, name):
    client = make_secret_client("protected")
    client.set_secret(name, "v")
    deleted = finish(client.begin_delete_secret(name, **POLL))
    assert deleted.properties.recovery_level == "CustomizedRecoverable"
    with pytest.raises(HttpResponseError) as err:
        client.purge_deleted_secret(name)
    assert err.value.status_code == 403
    assert error_code(err.value) == "Forbidden"


def test_injected_429_is_retried_after_retry_after_and_journaled(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    emulator.fault(kind="throttle", count=2, method="GET", path=f"/secrets/{name}", retry_after=1)
    assert secret_client.get_secret(name).value == "v"
    statuses = [e["status"] for e in emulator.journal(f"/secrets/{name}", "GET")]
    assert statuses == [429, 429, 200]
    gaps = [e["at_ms"] for e in emulator.journal(f"/secrets/{name}", "GET")]
    assert gaps[1] - gaps[0] >= 900, "the SDK waited for Retry-After"
