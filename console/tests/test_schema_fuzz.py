"""schemathesis against the project's own OpenAPI schema: no 5xx, no response outside the schema.

Every operation of /api/schema/ is called with generated requests through the WSGI handler in
this process, authenticated as an operator (staff token), with the dependencies up (fake GPU
telemetry, Docker recorded reachable and its ping answered) so a 503 would be a real defect.
Work that would leave the process (container operations, handoff phases) is enqueued nowhere.
"""

from __future__ import annotations

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.openapi import from_wsgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gaiaorch.auth import issue_token
from leases import services as leases

EXAMPLES_PER_OPERATION = 50
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


def _schema():
    return from_wsgi("/api/schema/?format=json", WSGIHandler())


def _operations() -> list[tuple[str, GenerationMode]]:
    """Every operation with valid requests; those that can be sent invalid ones also with those."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    cases = []
    for path, operations in paths.items():
        for method, spec in operations.items():
            label = f"{method.upper()} {path}"
            cases.append((label, GenerationMode.POSITIVE))
            if _can_be_invalid(spec):
                cases.append((label, GenerationMode.NEGATIVE))
    return cases


def _can_be_invalid(spec: dict) -> bool:
    """A body, or a parameter narrower than any string (a free string has no invalid value)."""
    constrained = [param for param in spec.get("parameters", []) if param["schema"] != {"type": "string"}]
    return bool(spec.get("requestBody") or constrained)


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the database connection after each request; Django's test client
    switches that off so the test's transaction survives, and so does this fixture."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def dependencies_up(everything_up, monkeypatch):
    monkeypatch.setattr("containers.services.require_docker", lambda: None)  # answers as if pinged
    monkeypatch.setattr("containers.services.enqueue", lambda operation_id: None)
    monkeypatch.setattr("handoffs.services.enqueue", lambda handoff_id: None)
    real_wait_out = leases.wait_out

    async def short_wait_out(entry, *, timeout_seconds, **options):
        # Generated timeouts reach 3,600 s; a wait answers in the same shapes after 50 ms.
        return await real_wait_out(entry, timeout_seconds=min(timeout_seconds, 0.05), **options)

    monkeypatch.setattr(leases, "wait_out", short_wait_out)


@pytest.fixture
def staff_token(django_user_model, db) -> str:
    olivia = django_user_model.objects.create_user("olivia", is_staff=True)
    return issue_token(olivia)


@pytest.mark.slow
@pytest.mark.parametrize(("label", "mode"), _operations(), ids=str)
def test_it_answers_generated_requests_within_the_schema(
    label, mode, keep_test_connection, dependencies_up, staff_token
):
    """Valid requests (positive) and requests that break the schema (negative) alike."""
    method, path = label.split(" ", 1)
    operation = _schema()[path][method]
    headers = {"Authorization": f"Token {staff_token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: what passed here passes in CI
        suppress_health_check=list(HealthCheck),
    )
    def call(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()


UNDOCUMENTED = {"/api/schema/", "/api/docs/"}  # the schema and its viewer describe the others


def test_it_fuzzes_every_operation_the_server_answers():
    """An endpoint missing from the schema would never be fuzzed (as POST /gpu/wait once was)."""
    from console.services import endpoint_index

    fuzzed = {label for label, _ in _operations()}
    answered = {
        f"{method} {entry['path'].replace('{pk}', '{id}')}"  # the schema names a router's pk `id`
        for entry in endpoint_index()
        for method in entry["methods"]
        if entry["path"] not in UNDOCUMENTED and method != "HEAD"  # HEAD is GET without a body
    }
    assert answered - fuzzed == set()
