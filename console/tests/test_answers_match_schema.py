"""The main endpoints' answers validate against the OpenAPI schema, and they are written by the
serializers that document them (gaiaorch.serializers.render), which refuse an undeclared key.

Fast: one request each, through Django's test client, checked with jsonschema against the
response schema of its status code (the full fuzz over every operation is test_schema_fuzz.py).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers

from gaiaorch.serializers import ShapeError, render
from handoffs.models import Handoff
from leases.api.serializers import GrantedSerializer

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema's null type (the rest is JSON Schema)."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def assert_within_schema(schema: dict, method: str, path: str, response) -> None:
    operation = schema["paths"][path][method.lower()]
    content = operation["responses"][str(response.status_code)]["content"]["application/json"]
    document = {**json_schema(content["schema"]), "components": json_schema(schema["components"])}
    jsonschema.validate(response.json(), document)


def test_it_answers_the_main_endpoints_within_their_documented_schema(
    schema, everything_up, core_client, study_client, operator_client
):
    granted = core_client.post("/gpu/acquire", {"requester": "gaia-core", "reason": "serving"}, format="json")
    queued = study_client.post("/gpu/acquire", {"requester": "gaia-study", "reason": "LoRA"}, format="json")
    assert (granted.status_code, queued.status_code) == (200, 202)
    handoff = Handoff.objects.create(
        type="prime_to_study", source="gaia-prime", destination="gaia-study", requested_by="olivia"
    )
    calls = [
        ("POST", "/gpu/acquire", granted),
        ("POST", "/gpu/acquire", queued),
        ("GET", "/health", operator_client.get("/health")),
        ("GET", "/ready", operator_client.get("/ready")),
        ("GET", "/status", operator_client.get("/status")),
        ("GET", "/", operator_client.get("/")),
        ("GET", "/containers/status", operator_client.get("/containers/status")),
        ("GET", "/api/containers/status/", operator_client.get("/api/containers/status/")),
        ("GET", "/handoff/{handoff_id}/status", operator_client.get(f"/handoff/{handoff.id}/status")),
    ]
    for method, path, response in calls:
        assert response.status_code in (200, 202), (path, response.content)
        assert_within_schema(schema, method, path, response)


def test_it_refuses_to_render_a_key_the_serializer_does_not_declare():
    granted = {
        "success": True,
        "lease_id": "5b1e8a2c-7f0b-4a39-9d7c-2f6f4f3d9a10",
        "gpu": 0,
        "requester": "gaia-core",
        "status": "active",
        "fencing_token": 1,
        "expires_at": None,
        "message": "GPU 0 granted to gaia-core",
    }
    assert render(GrantedSerializer, granted) == granted
    with pytest.raises(ShapeError, match=r"GrantedSerializer answers keys .*\['holder'\]"):
        render(GrantedSerializer, {**granted, "holder": "gaia-core"})


def test_it_refuses_an_undeclared_key_inside_a_list_or_a_mapping():
    class Item(serializers.Serializer):
        name = serializers.CharField()

    class Page(serializers.Serializer):
        items = Item(many=True)
        by_role = serializers.DictField(child=Item())

    assert render(Page, {"items": [{"name": "a"}], "by_role": {"x": {"name": "b"}}})["items"] == [
        {"name": "a"}
    ]
    with pytest.raises(ShapeError, match=r"Page\.items\[0\]"):
        render(Page, {"items": [{"name": "a", "extra": 1}], "by_role": {}})
    with pytest.raises(ShapeError, match=r"Page\.by_role\['x'\]"):
        render(Page, {"items": [], "by_role": {"x": {"name": "b", "extra": 1}}})
