"""OpenAPI post-processing: the refusals every endpoint shares, in the one error shape.

Views document their own domain refusals (409 naming the holder, 503 for a missing dependency);
the generic ones — bad input, authentication, unknown ids — follow from the operation itself and
are added here, so no endpoint's documentation forgets them.
"""

from __future__ import annotations

from typing import Any

ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "machine-readable code"},
        "detail": {"type": "string", "description": "a sentence for humans"},
    },
    "required": ["error", "detail"],
    "additionalProperties": True,
}
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
SHARED = {
    "400": "invalid_request (with fields), malformed_request (not JSON) or body_too_large",
    "401": "not_authenticated or authentication_failed (reads too, when GAIAORCH_OPEN_READS is off)",
    "403": "forbidden: missing_right names what the caller lacks (write for a read-only account, "
    "operator, or a right of grants:)",
    "404": "not_found: no such id (lease, GPU, handoff, operation, event)",
}


def shared_refusals(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    writes = method != "get"
    has_query = any(param["in"] == "query" for param in operation.get("parameters", []))
    codes = []
    if writes or has_query:
        codes.append("400")
    if operation.get("security"):
        codes.append("401")
    if writes:
        codes.append("403")
    if "{" in path or has_query or "requestBody" in operation:
        codes.append("404")  # an id in the path, the query (?gpu=) or the body (lease_id)
    return codes


def document_refusals(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS['POSTPROCESSING_HOOKS'])."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    for path, operations in result["paths"].items():
        for method, operation in operations.items():
            for code in shared_refusals(path, method, operation):
                operation["responses"].setdefault(code, {"description": SHARED[code]})
            for code, response in operation["responses"].items():
                if code >= "400" and "content" not in response:
                    response["content"] = ERROR_CONTENT
    return result
