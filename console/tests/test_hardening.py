"""Every mutating endpoint: who may call it, and how bad bodies are refused."""

from __future__ import annotations

import re
import uuid

import pytest

from conftest import client_for_token
from console.services import endpoint_index
from containers.models import Operation
from gaiaorch.auth import ensure_service_account

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _concrete(path: str) -> str:
    """A path template with plausible values: an int where the route wants one, else a UUID."""
    path = re.sub(r"\{operation_id\}", "1", path)
    return re.sub(r"\{\w+\}", str(uuid.uuid4()), path)


MUTATING_ENDPOINTS = [
    (method, entry["path"]) for entry in endpoint_index() for method in entry["methods"] if method in MUTATING
]


def test_it_finds_the_mutating_endpoints():
    paths = {path for _, path in MUTATING_ENDPOINTS}
    assert {"/gpu/acquire", "/gpu/wait", "/notify/oracle-fallback", "/containers/live/stop"} <= paths
    assert "/api/leases/{pk}/revoke/" in paths


@pytest.mark.parametrize(("method", "path"), MUTATING_ENDPOINTS)
def test_it_refuses_unauthenticated_callers(anonymous_client, method, path, db):
    response = anonymous_client.generic(method, _concrete(path), "{}", content_type="application/json")
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize(("method", "path"), MUTATING_ENDPOINTS)
def test_it_refuses_a_token_that_does_not_exist(anonymous_client, method, path, db):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anonymous_client.generic(method, _concrete(path), "{}", content_type="application/json")
    assert response.status_code == 401, response.content


@pytest.mark.parametrize(("method", "path"), MUTATING_ENDPOINTS)
def test_it_refuses_a_read_only_account_every_write(method, path, db):
    """A metrics scraper's account (`service_account prometheus --read-only`) never writes."""
    scraper = client_for_token(ensure_service_account("prometheus", read_only=True))
    response = scraper.generic(method, _concrete(path), "{}", content_type="application/json")
    assert response.status_code == 403, response.content
    assert response.json()["missing_right"] == "write"


# Every write that needs a right beyond acting for one's own name: the right, and a valid body.
GRANTED_ENDPOINTS = {
    "/containers/live/stop": ("live_stop", None),
    "/containers/live/start": ("live_start", None),
    "/containers/candidate/start": ("candidate_start", {"gpu_enabled": False}),
    "/containers/candidate/stop": ("candidate_stop", None),
    "/containers/swap": ("swap", {"service": "gaia-core", "target": "candidate"}),
    "/notify/oracle-fallback": (
        "oracle_fallback",
        {"fallback_model": "groq/llama", "original_role": "prime"},
    ),
}


def test_it_knows_the_right_of_every_container_operation():
    container_writes = {path for _, path in MUTATING_ENDPOINTS if path.startswith("/containers/")}
    assert container_writes == {path for path in GRANTED_ENDPOINTS if path.startswith("/containers/")}


def post_granted(client, path: str):
    return client.post(path, GRANTED_ENDPOINTS[path][1], format="json")


@pytest.mark.parametrize("path", GRANTED_ENDPOINTS)
def test_it_refuses_a_service_without_the_grant_naming_the_right(operations_accepted, service_token, path):
    response = post_granted(client_for_token(service_token("gaia-web")), path)
    assert response.status_code == 403, response.content
    assert response.json()["missing_right"] == GRANTED_ENDPOINTS[path][0]
    assert response.json()["actor"] == "gaia-web"
    assert GRANTED_ENDPOINTS[path][0] in response.json()["detail"]
    assert not Operation.objects.exists()


@pytest.mark.parametrize("path", GRANTED_ENDPOINTS)
def test_it_accepts_a_service_with_the_grant(operations_accepted, settings, service_token, path):
    settings.GAIAORCH = {**settings.GAIAORCH, "grants": {"deployer": [GRANTED_ENDPOINTS[path][0]]}}
    response = post_granted(client_for_token(service_token("deployer")), path)
    assert response.status_code in (200, 202), response.content


@pytest.mark.parametrize("path", GRANTED_ENDPOINTS)
def test_it_accepts_an_operator_without_any_grant(operations_accepted, operator_token_client, path):
    response = post_granted(operator_token_client, path)
    assert response.status_code in (200, 202), response.content


LEASE_ACTIONS = [
    ("/gpu/release", "lease_id"),
    ("/gpu/heartbeat", "lease_id"),
    ("/gpu/wait", "lease_id"),
    ("/api/leases/{id}/release/", None),
    ("/api/leases/{id}/heartbeat/", None),
    ("/api/leases/{id}/cancel/", None),
    ("/api/leases/{id}/revoke/", None),
]


@pytest.mark.parametrize(("path", "body_field"), LEASE_ACTIONS)
def test_it_forbids_a_service_acting_on_another_services_lease(study_client, core_lease, path, body_field):
    body = {"reason": "not mine"}
    if body_field:
        body[body_field] = str(core_lease.id)
        body["timeout_seconds"] = 1
    response = study_client.post(path.format(id=core_lease.id), body, format="json")
    assert response.status_code == 403, response.content
    assert response.json()["error"] == "forbidden"
    assert response.json()["missing_right"] == "operator"
    core_lease.refresh_from_db()
    assert core_lease.status == "active"


def test_it_forbids_a_service_acquiring_for_another_service(study_client, db):
    response = study_client.post("/gpu/acquire", {"requester": "gaia-core", "reason": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert response.json()["missing_right"] == "operator"


@pytest.mark.parametrize(("method", "path"), MUTATING_ENDPOINTS)
def test_it_answers_malformed_json_with_400(operator_token_client, method, path):
    response = operator_token_client.generic(
        method, _concrete(path), '{"reason": ', content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "malformed_request"


@pytest.mark.parametrize(("method", "path"), MUTATING_ENDPOINTS)
def test_it_refuses_bodies_over_the_limit(operator_token_client, settings, method, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = '{"reason": "' + "x" * 2048 + '"}'
    response = operator_token_client.generic(method, _concrete(path), body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "body_too_large"


@pytest.mark.parametrize(
    ("body", "code"), [('{"lease_id": ', "malformed_request"), ("[" + "1," * 2000 + "1]", "body_too_large")]
)
async def test_it_refuses_bad_bodies_on_the_async_wait_under_asgi(async_client, settings, body, code):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = await async_client.post("/gpu/wait", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == code


def test_it_documents_the_shared_refusals_of_every_write():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert schema["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if method == "post":
                assert {"400", "401", "403"} <= set(responses), f"{method} {path}"
            for code, response in responses.items():
                if code >= "400":
                    assert "application/json" in response["content"], f"{method} {path} {code}"


NESTED_BODY = "[" * 1100


@pytest.mark.parametrize(("method", "path"), MUTATING_ENDPOINTS)
def test_it_answers_a_deeply_nested_body_with_400(anonymous_client, method, path, db):
    response = anonymous_client.generic(method, _concrete(path), NESTED_BODY, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "malformed_request"


@pytest.mark.django_db(transaction=True)  # the view's thread must see the token
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_it_answers_a_deeply_nested_body_on_the_async_wait_with_400(
    async_client, operator_token_client, content_type
):
    token = operator_token_client._credentials["HTTP_AUTHORIZATION"]
    response = await async_client.post(
        "/gpu/wait", NESTED_BODY, content_type=content_type, headers={"Authorization": token}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"


def _with_nul(path: str) -> str:
    return re.sub(r"\{\w+\}", "a%00b", path)


ENDPOINTS = [(method, entry["path"]) for entry in endpoint_index() for method in entry["methods"]]


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p in ENDPOINTS if "{" in p])
def test_it_answers_a_nul_byte_in_the_path_with_404(operator_client, method, path, db):
    response = operator_client.generic(method, _with_nul(path), "{}", content_type="application/json")
    assert response.status_code == 404, response.content
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_it_answers_a_nul_byte_in_the_query_with_400(operator_client, method, path, db):
    query = "?gpu=a%00&type=a%00b&requester=%00&service=x&lease_id=%00"
    response = operator_client.generic(method, _concrete(path) + query, "{}", content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"


OVER_BOUND = [
    ("/handoff/prime-to-study", {"timeout_seconds": 2**63}, "timeout_seconds"),
    ("/handoff/prime-to-study", {"timeout_seconds": 2**31}, "timeout_seconds"),
    ("/handoff/study-to-prime", {"timeout_seconds": 86_401}, "timeout_seconds"),
    ("/api/handoffs/", {"type": "prime_to_study", "timeout_seconds": 2**63}, "timeout_seconds"),
    ("/api/handoffs/", {"type": "prime_to_study", "gpu": 2**63}, "gpu"),
    ("/gpu/acquire", {"requester": "gaia-core", "reason": "x", "gpu": 2**63}, "gpu"),
    ("/gpu/acquire", {"requester": "gaia-core", "reason": "x", "priority": 2**63}, "priority"),
    ("/gpu/acquire", {"requester": "gaia-core", "reason": "x", "ttl_seconds": 2**63}, "ttl_seconds"),
    ("/gpu/acquire", {"requester": "gaia-core", "reason": "x", "memory_mib": 2**63}, "memory_mib"),
    ("/gpu/wait", {"requester": "gaia-core", "reason": "x", "timeout_seconds": 2**63}, "timeout_seconds"),
    ("/api/leases/?gpu=" + str(2**63), None, "gpu"),
    ("/gpu/status?gpu=" + str(2**63), None, "gpu"),
    ("/api/events/?after=" + str(2**63), None, "after"),
]


@pytest.mark.django_db(transaction=True)  # /gpu/wait reads the token on its own thread
@pytest.mark.parametrize(("path", "body", "field"), OVER_BOUND)
def test_it_refuses_an_integer_beyond_its_documented_bound(
    operator_token_client, everything_up, hold_gpu, monkeypatch, path, body, field
):
    """With everything up, only the bound stands between these values and the database."""
    monkeypatch.setattr("handoffs.services.enqueue", lambda handoff_id: None)
    hold_gpu("gaia-core")
    if body is None:
        response = operator_token_client.get(path)
    else:
        response = operator_token_client.post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
