"""Every mutating endpoint: who may call it, and how bad bodies are refused."""

from __future__ import annotations

import re
import uuid

import pytest

from console.services import endpoint_index

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
    core_lease.refresh_from_db()
    assert core_lease.status == "active"


def test_it_forbids_a_service_acquiring_for_another_service(study_client, db):
    response = study_client.post("/gpu/acquire", {"requester": "gaia-core", "reason": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


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
