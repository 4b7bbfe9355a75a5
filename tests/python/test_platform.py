"""The platform of the local Key Vault: challenge, tokens, envelope, headers, api-version,
throttling, faults, permissions, the clock, managed identity, the process itself."""

import json
import os
import socket
import time

import pytest
import requests
from azure.core.exceptions import HttpResponseError

from conftest import error_code, inner_code, start_emulator, stop_emulator


class Pinned:
    """requests with one CA, passed on every call (REQUESTS_CA_BUNDLE would win over a session's)."""

    def __init__(self, ca):
        self.ca = ca

    def get(self, url, **kwargs):
        return requests.get(url, verify=self.ca, timeout=30, **kwargs)

    def post(self, url, **kwargs):
        return requests.post(url, verify=self.ca, timeout=30, **kwargs)

    def put(self, url, **kwargs):
        return requests.put(url, verify=self.ca, timeout=30, **kwargs)


def test_ready_line_names_everything_a_client_needs(emulator):
    ready = emulator.ready
    port = ready["port"]
    assert ready["vaults"]["alpha"] == f"https://alpha.vault.localhost:{port}/"
    assert ready["authority_host"] == f"https://localhost:{port}"
    assert ready["admin"] == f"https://localhost:{port}/_emulator"
    assert os.path.isfile(ready["ca_cert"])
    assert ready["tenant_id"] and ready["client_id"] and ready["client_secret"]


def test_tls_is_verified_against_ca_pem_only(emulator):
    import certifi

    with pytest.raises(requests.exceptions.SSLError):
        requests.get(emulator.ready["admin"] + "/ready", verify=certifi.where(), timeout=5)
    assert requests.get(emulator.ready["admin"] + "/ready", verify=emulator.ca).status_code == 200


def test_challenge_401_bytes(emulator):
    response = emulator.raw("GET", "alpha", "/secrets", headers={"x-ms-client-request-id": "abc-123"})
    assert response.status_code == 401
    port, tenant = emulator.port, emulator.ready["tenant_id"]
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://localhost:{port}/{tenant}", '
        f'resource="https://vault.localhost:{port}"'
    )
    assert response.content == (
        b'{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}'
    )
    assert response.headers["x-ms-client-request-id"] == "abc-123"


def test_every_response_carries_azure_headers(emulator):
    response = emulator.raw("GET", "beta", "/secrets", emulator.token(), headers={"x-ms-client-request-id": "r-1"})
    assert response.status_code == 200
    assert len(response.headers["x-ms-request-id"]) == 36
    assert response.headers["x-ms-client-request-id"] == "r-1"
    assert response.headers["x-ms-keyvault-region"] == "westeurope"
    assert response.headers["x-ms-keyvault-service-version"]
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"] == "application/json; charset=utf-8"


def test_wrong_audience_is_401_akv10022(emulator):
    token = emulator.token(audience="https://storage.azure.com")
    response = emulator.raw("GET", "alpha", "/secrets", token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"
    assert response.json()["error"]["message"].startswith("AKV10022:")


def test_expired_token_is_401(emulator):
    response = emulator.raw("GET", "alpha", "/secrets", emulator.token(lifetime_seconds=-3600))
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_forged_token_is_401(emulator):
    token = emulator.token()
    head, payload, sig = token.split(".")
    forged = ".".join([head, payload, sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")])
    assert emulator.raw("GET", "alpha", "/secrets", forged).status_code == 401


def test_auth_off_accepts_any_bearer():
    proc, ready = start_emulator(["--auth", "off"], vaults=["solo"])
    try:
        url = ready["vaults"]["solo"] + "secrets?api-version=7.6"
        session = Pinned(ready["ca_cert"])
        assert session.get(url).status_code == 401
        assert session.get(url, headers={"Authorization": "Bearer anything"}).status_code == 200
    finally:
        assert stop_emulator(proc) == 0


def test_api_version_required_and_checked(emulator):
    token = emulator.token()
    for version in (None, "2016-10-02", "7.7", "2026-04-01-preview", "banana"):
        response = emulator.raw("GET", "alpha", "/secrets", token, api_version=version)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "BadParameter"
    for version in ("2016-10-01", "7.0", "7.3", "7.6", "7.6-preview.2", "2025-07-01", "2026-04-01",
                    "2026-07-01-preview"):
        assert emulator.raw("GET", "alpha", "/secrets", token, api_version=version).status_code == 200


def test_error_envelope_shape(emulator):
    response = emulator.raw("GET", "alpha", "/secrets/does-not-exist", emulator.token())
    assert response.status_code == 404
    body = response.json()
    assert list(body) == ["error"]
    assert body["error"]["code"] == "SecretNotFound"
    assert "does-not-exist" in body["error"]["message"]


def test_next_link_shape(emulator, make_secret_client):
    client = make_secret_client("beta")
    for i in range(3):
        client.set_secret(f"link-{i}", "v")
    token = emulator.token()
    body = emulator.raw("GET", "beta", "/secrets?maxresults=1", token).json()
    prefix = f"https://beta.vault.localhost:{emulator.port}/secrets?api-version=7.6&$skiptoken="
    assert body["nextLink"].startswith(prefix)
    assert body["nextLink"].endswith("&maxresults=1")
    last = emulator.raw("GET", "beta", "/secrets?maxresults=25", token).json()
    assert "nextLink" in last and last["nextLink"] is None


def test_budget_mode_answers_429_with_retry_after(emulator):
    emulator.settings(budget=3)
    token = emulator.token()
    statuses = [emulator.raw("GET", "beta", "/secrets", token).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = emulator.raw("GET", "beta", "/secrets", token)
    assert throttled.json()["error"]["code"] == "Throttled"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 10
    # Budgets are per vault.
    assert emulator.raw("GET", "alpha", "/secrets", token).status_code == 200


def test_budget_refills_after_the_window(emulator):
    emulator.settings(budget=1)
    emulator.clock(freeze=True)
    token = emulator.token()
    assert emulator.raw("GET", "beta", "/secrets", token).status_code == 200
    assert emulator.raw("GET", "beta", "/secrets", token).status_code == 429
    emulator.clock(advance_seconds=11)
    assert emulator.raw("GET", "beta", "/secrets", token).status_code == 200


def test_injected_503_is_retried_by_the_sdk(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    emulator.fault(kind="unavailable", count=1, path=f"/secrets/{name}", retry_after=0)
    assert secret_client.get_secret(name).value == "v"
    statuses = [e["status"] for e in emulator.journal(f"/secrets/{name}", "GET")]
    assert statuses == [503, 200]


def test_injected_500_surfaces_after_retries(emulator, make_secret_client, name):
    client = make_secret_client("alpha", retry_total=1)
    emulator.fault(kind="internal", count=5, method="GET", path=f"/secrets/{name}")
    with pytest.raises(HttpResponseError) as err:
        client.get_secret(name)
    assert err.value.status_code == 500


def test_dropped_connection_is_retried(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    emulator.fault(kind="drop", count=1, method="GET", path=f"/secrets/{name}")
    assert secret_client.get_secret(name).value == "v"
    statuses = [e["status"] for e in emulator.journal(f"/secrets/{name}", "GET")]
    assert statuses == [0, 200]


def test_fault_matches_vault_only(emulator, make_secret_client, name):
    beta = make_secret_client("beta")
    beta.set_secret(name, "v")
    emulator.fault(kind="throttle", count=1, vault="alpha", retry_after=0)
    assert beta.get_secret(name).value == "v"
    assert emulator.admin("GET", "/faults")["faults"][0]["count"] == 1


def test_delay_fault_slows_one_request(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    emulator.fault(kind="delay", count=1, delay_ms=300, path=f"/secrets/{name}")
    started = time.monotonic()
    secret_client.get_secret(name)
    assert time.monotonic() - started >= 0.3


def test_permissions_forbidden_by_policy(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    emulator.admin("PUT", "/permissions", {"vault": "alpha", "secrets": ["list"]})
    assert [p.name for p in secret_client.list_properties_of_secrets()]
    with pytest.raises(HttpResponseError) as err:
        secret_client.get_secret(name)
    assert err.value.status_code == 403
    assert error_code(err.value) == "Forbidden"
    assert inner_code(err.value) == "ForbiddenByPolicy"
    with pytest.raises(HttpResponseError) as err:
        secret_client.backup_secret(name)
    assert inner_code(err.value) == "ForbiddenByPolicy"


def test_second_client_with_its_own_permissions(emulator, make_secret_client, name):
    from azure.identity import ClientSecretCredential
    from azure.keyvault.secrets import SecretClient

    make_secret_client("alpha").set_secret(name, "v")
    other = emulator.admin("POST", "/clients", {})
    emulator.admin(
        "PUT", "/permissions", {"vault": "alpha", "principal": other["client_id"], "secrets": ["get"]}
    )
    credential = ClientSecretCredential(
        emulator.ready["tenant_id"],
        other["client_id"],
        other["client_secret"],
        authority=emulator.ready["authority_host"],
        disable_instance_discovery=True,
    )
    client = SecretClient(emulator.vault_url("alpha"), credential, connection_verify=emulator.ca)
    assert client.get_secret(name).value == "v"
    with pytest.raises(HttpResponseError) as err:
        client.set_secret(name, "w")
    assert inner_code(err.value) == "ForbiddenByPolicy"


def test_wrong_client_secret_is_refused_by_the_issuer(emulator):
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential
    from azure.keyvault.secrets import SecretClient

    credential = ClientSecretCredential(
        emulator.ready["tenant_id"],
        emulator.ready["client_id"],
        "wrong",
        authority=emulator.ready["authority_host"],
        disable_instance_discovery=True,
    )
    client = SecretClient(emulator.vault_url("alpha"), credential, connection_verify=emulator.ca)
    with pytest.raises(ClientAuthenticationError):
        client.get_secret("anything")


def test_managed_identity_endpoint_app_service_style(emulator, name, monkeypatch):
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.ready["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", "local")
    client = SecretClient(
        emulator.vault_url("alpha"), ManagedIdentityCredential(), connection_verify=emulator.ca
    )
    client.set_secret(name, "from-mi")
    assert client.get_secret(name).value == "from-mi"


def test_openid_configuration_and_jwks(emulator):
    tenant = emulator.ready["tenant_id"]
    base = emulator.ready["authority_host"]
    config = emulator.session.get(f"{base}/{tenant}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == f"{base}/{tenant}/oauth2/v2.0/token"
    keys = emulator.session.get(config["jwks_uri"]).json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"


def test_clock_freeze_advance_set(emulator, secret_client, name):
    target = int(time.time()) + 120
    emulator.clock(set=target)
    frozen = emulator.clock(freeze=True)
    assert frozen["now"] == target and frozen["frozen"]
    created = secret_client.set_secret(name, "v").properties.created_on
    assert int(created.timestamp()) == target
    assert emulator.clock(advance_seconds=60)["now"] == target + 60
    updated = secret_client.update_secret_properties(name, tags={"a": "b"})
    assert int(updated.updated_on.timestamp()) == target + 60
    assert int(updated.created_on.timestamp()) == target


def test_journal_records_method_path_status_latency(emulator, secret_client, name):
    secret_client.set_secret(name, "v")
    entries = emulator.journal(f"/secrets/{name}", "PUT")
    # The SDK's first request to a host carries no token and draws the challenge (the SDK
    # caches challenges per host, so only the session's first client shows it).
    assert [e["status"] for e in entries][-1] == 200
    assert all(e["principal"] is None for e in entries if e["status"] == 401)
    last = entries[-1]
    assert last["vault"] == "alpha"
    assert last["latency_ms"] >= 0
    assert last["principal"] == emulator.ready["client_id"]
    assert "api-version=" in last["query"]


def test_latency_setting_slows_every_request(emulator):
    emulator.settings(latency_ms=150)
    token = emulator.token()
    started = time.monotonic()
    emulator.raw("GET", "alpha", "/secrets", token)
    assert time.monotonic() - started >= 0.15


def test_state_dir_and_seed_survive_a_restart(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "vaults": [{"name": "seeded", "retention_days": 7}],
                "secrets": [
                    {"vault": "seeded", "name": "many", "value": "v", "version_count": 12},
                    {"vault": "seeded", "name": "off", "value": "x", "enabled": False},
                    {"vault": "seeded", "name": "gone", "value": "x", "deleted": True},
                ],
            }
        )
    )
    state = tmp_path / "state"
    args = ["--state-dir", str(state), "--seed", str(seed)]
    started = time.monotonic()
    proc, ready = start_emulator(args, vaults=[])
    startup = time.monotonic() - started
    try:
        session = Pinned(ready["ca_cert"])
        admin = ready["admin"]
        token = session.post(admin + "/tokens", json={}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        base = ready["vaults"]["seeded"]
        versions = session.get(base + "secrets/many/versions?api-version=7.6", headers=auth).json()
        assert len(versions["value"]) == 12
        off = session.get(base + "secrets/off?api-version=7.6", headers=auth)
        assert off.status_code == 403 and off.json()["error"]["innererror"]["code"] == "SecretDisabled"
        gone = session.get(base + "deletedsecrets/gone?api-version=7.6", headers=auth).json()
        assert gone["scheduledPurgeDate"] - gone["deletedDate"] == 7 * 86400
        put = session.put(base + "secrets/kept?api-version=7.6", headers=auth, json={"value": "k"})
        assert put.status_code == 200
    finally:
        assert stop_emulator(proc) == 0
    assert startup < 5, f"startup took {startup:.2f}s"
    assert (state / "vaults.json").exists() and (state / "ca.pem").exists()

    proc, ready = start_emulator(args, vaults=[])
    try:
        session = Pinned(str(state / "ca.pem"))
        token = session.post(ready["admin"] + "/tokens", json={}).json()["access_token"]
        kept = session.get(
            ready["vaults"]["seeded"] + "secrets/kept?api-version=7.6",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert kept.json()["value"] == "k"
    finally:
        assert stop_emulator(proc) == 0


def test_sigterm_exits_cleanly():
    proc, _ = start_emulator(vaults=["brief"])
    assert stop_emulator(proc) == 0


def test_unknown_vault_option_is_a_usage_error():
    import subprocess

    binary = os.environ.get("COLDVAULT_BIN", "target/debug/coldvault")
    result = subprocess.run(
        [binary, "emulator", "--vault", "x,colour=blue"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "colour=blue" in result.stderr


def test_managed_identity_endpoint_imds_style(emulator):
    base = emulator.ready["authority_host"]
    resource = f"https://vault.localhost:{emulator.port}"
    refused = emulator.session.get(
        f"{base}/metadata/identity/oauth2/token", params={"resource": resource}, verify=emulator.ca
    )
    assert refused.status_code == 400
    answer = emulator.session.get(
        f"{base}/metadata/identity/oauth2/token",
        params={"api-version": "2018-02-01", "resource": resource},
        headers={"Metadata": "true"},
        verify=emulator.ca,
    ).json()
    assert answer["token_type"] == "Bearer"
    assert emulator.raw("GET", "alpha", "/secrets", answer["access_token"]).status_code == 200


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_1_2_and_1_3_are_served(emulator, version):
    import ssl

    context = ssl.create_default_context(cafile=emulator.ca)
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="alpha.vault.localhost") as tls:
            assert tls.version() == version.replace("_", ".")


def test_fraction_faults_until_removed(emulator):
    token = emulator.token()
    emulator.fault(kind="throttle", rate=1.0, path="/secrets", vault="beta", retry_after=2)
    for _ in range(3):
        response = emulator.raw("GET", "beta", "/secrets", token)
        assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    emulator.admin("DELETE", "/faults")
    assert emulator.raw("GET", "beta", "/secrets", token).status_code == 200


def test_fault_rate_setting_answers_429_500_or_503(emulator):
    emulator.settings(fault_rate=1.0)
    token = emulator.token()
    statuses = {emulator.raw("GET", "beta", "/secrets", token).status_code for _ in range(12)}
    assert statuses <= {429, 500, 503} and statuses
    assert all(e["fault"] == "rate" for e in emulator.journal("/secrets", "GET"))
