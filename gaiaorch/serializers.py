"""Response shapes shared by the apps' OpenAPI documentation."""

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
