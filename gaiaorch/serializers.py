"""Response shapes shared by the apps' OpenAPI documentation, and `render`: the answer written by
the serializer that documents it."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every refusal: {"error": code, "detail": sentence, ...context}."""

    error = serializers.CharField()
    detail = serializers.CharField()


class StepRecordSerializer(serializers.Serializer):
    """One step or phase of a job (gaiaorch.jobs.StepRecord.as_dict)."""

    name = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField()
    detail = serializers.CharField()
    figures = serializers.DictField()


# --- answers rendered by the serializers that document them ---------------------------------


class ShapeError(RuntimeError):
    """An answer with a key its documenting serializer does not declare: a programming error (the
    OpenAPI schema would not show it), never silently dropped."""


def render(serializer_class: type[serializers.Serializer], body: Any, **options: Any) -> Any:
    """`body` (a service's dict, or a row) as `serializer_class` renders it: the serializer that
    documents the answer in the OpenAPI schema is the one that writes it, so the two cannot drift.

    The serializer's fields are built once per class and options (building them is most of the
    cost of an answer): rendering reads a field's settings and never changes them, and an answer
    rendered here has no context (a field that needs the request is not rendered through this)."""
    serializer = _renderer(serializer_class, tuple(sorted(options.items())))
    _check(serializer, body, serializer_class.__name__)
    return serializer.to_representation(body)


@cache
def _renderer(serializer_class: type[serializers.Serializer], options: tuple[tuple[str, Any], ...]):
    serializer = serializer_class(**dict(options))
    serializer.fields  # noqa: B018  # built now, once, rather than by the first concurrent answers
    return serializer


def _check(field: serializers.Field, value: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(field, serializers.ListSerializer | serializers.ListField) and isinstance(value, list):
        child = field.child
        for index, item in enumerate(value):
            if child is not None:
                _check(child, item, f"{where}[{index}]")
    elif isinstance(field, serializers.Serializer) and isinstance(value, Mapping):
        declared = {(sub.source if sub.source != "*" else name): sub for name, sub in field.fields.items()}
        extra = sorted(set(value) - set(declared))
        if extra:
            raise ShapeError(f"{where} answers keys its serializer does not declare: {extra}")
        for key, sub in declared.items():
            if key in value:
                _check(sub, value[key], f"{where}.{key}")
    elif isinstance(field, serializers.DictField) and isinstance(value, Mapping):
        for key, item in value.items():
            _check(field.child, item, f"{where}[{key!r}]")
