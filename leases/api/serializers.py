from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from gaiaorch_client import contract
from leases import services
from leases.models import Lease, LeaseStatus

MAX_WAIT_SECONDS = contract.MAX_WAIT_SECONDS
MAX_GPU_INDEX = contract.MAX_GPU_INDEX


class RequesterField(serializers.CharField):
    """A requester's name: one of the configured services (validated by the serializer)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=100, **kwargs)


class RequesterFieldSchema(OpenApiSerializerFieldExtension):
    """The schema lists the requesters configured when it is generated (clients and the schema
    fuzz test then know the valid names)."""

    target_class = RequesterField

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "enum": services.requesters()}


class NumberOrWordField(serializers.Field):
    """An integer within bounds, or one of a few words: a contract field with `words` (gpu: "any")."""

    default_error_messages = {"invalid": "must be an integer from {minimum} to {maximum} or {words}"}

    def __init__(self, *, words: tuple[str, ...], min_value=None, max_value=None, **kwargs: Any):
        self.words, self.min_value, self.max_value = words, min_value, max_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int | str:
        if isinstance(data, str) and data in self.words:
            return data
        try:
            return serializers.IntegerField(
                min_value=self.min_value, max_value=self.max_value
            ).run_validation(data)
        except serializers.ValidationError:
            self.fail(
                "invalid",
                minimum=self.min_value,
                maximum=self.max_value,
                words=" or ".join(f'"{w}"' for w in self.words),
            )

    def to_representation(self, value: Any) -> Any:
        return value


class NumberOrWordFieldSchema(OpenApiSerializerFieldExtension):
    target_class = NumberOrWordField

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        return {
            "oneOf": [
                {"type": "integer", **_given(minimum=field.min_value, maximum=field.max_value)},
                {"type": "string", "enum": list(field.words)},
            ],
            "description": field.help_text or "",
        }


def contract_field(field: contract.Field) -> serializers.Field:
    """The DRF field of one request field of gaiaorch_client.contract."""
    options: dict[str, Any] = {"help_text": field.help}
    if not field.required:
        options.update(required=False, default=field.default)
    if field.nullable:
        options["allow_null"] = True
    if field.name == "requester":
        return RequesterField(**options)
    if field.words:
        return NumberOrWordField(
            words=field.words, **_given(min_value=field.minimum, max_value=field.maximum), **options
        )
    if field.kind is str:
        return serializers.CharField(**_given(max_length=field.max_length), **options)
    if field.kind is bool:
        return serializers.BooleanField(**options)
    number = serializers.IntegerField if field.kind is int else serializers.FloatField
    return number(**_given(min_value=field.minimum, max_value=field.maximum), **options)


def _given(**bounds: Any) -> dict[str, Any]:
    return {name: value for name, value in bounds.items() if value is not None}


class ContractSerializer(serializers.Serializer):
    """A serializer whose fields are those of the `request_fields` tuples of gaiaorch_client.contract
    (named, and read each time the fields are built: a field added there is here), then the ones it
    declares itself."""

    request_fields: tuple[str, ...] = ()

    def get_fields(self) -> dict[str, serializers.Field]:
        declared_once = [field for group in self.request_fields for field in getattr(contract, group)]
        fields = {field.name: contract_field(field) for field in declared_once}
        declared = super().get_fields()
        return {**fields, **{name: field for name, field in declared.items() if name not in fields}}


class AcquireSerializer(ContractSerializer):
    request_fields: tuple[str, ...] = ("ACQUIRE",)
    # accepted for compatibility (the seed's clients send it); acquire never blocks: use /gpu/wait
    timeout_seconds = serializers.FloatField(min_value=0, max_value=MAX_WAIT_SECONDS, required=False)

    def validate_requester(self, value: str) -> str:
        if value not in services.requesters():
            raise serializers.ValidationError(f"must be one of: {', '.join(services.requesters())}")
        return value


class WaitAcquireSerializer(AcquireSerializer):
    request_fields = ("ACQUIRE", "WAIT")


class WaitForLeaseSerializer(serializers.Serializer):
    lease_id = serializers.UUIDField()
    timeout_seconds = serializers.FloatField(min_value=0, max_value=MAX_WAIT_SECONDS, default=60)


class GrantedSerializer(serializers.Serializer):
    """200 of acquire and wait: the GPU is the requester's (acquire_body)."""

    success = serializers.BooleanField()
    lease_id = serializers.UUIDField()
    gpu = serializers.IntegerField()
    requester = serializers.CharField()
    status = serializers.CharField()
    fencing_token = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)
    message = serializers.CharField()
    choice = serializers.CharField(required=False, help_text='gpu "any": why this GPU, per GPU')


class QueuedSerializer(serializers.Serializer):
    """202 of acquire and wait: still queued, with its position."""

    success = serializers.BooleanField()
    lease_id = serializers.UUIDField()
    gpu = serializers.IntegerField()
    requester = serializers.CharField()
    status = serializers.CharField(help_text="waiting")
    queue_position = serializers.IntegerField(allow_null=True)
    waiting_for = serializers.CharField(allow_blank=True)
    message = serializers.CharField()
    choice = serializers.CharField(required=False, help_text='gpu "any": why this GPU, per GPU')


class LeaseIdSerializer(serializers.Serializer):
    lease_id = serializers.UUIDField()
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class ReleaseSerializer(LeaseIdSerializer):
    """The seed's release: by lease id, or without one (no body, `{}`, `{reason}`, `?gpu=N`)."""

    lease_id = serializers.UUIDField(required=False)
    gpu = serializers.IntegerField(min_value=0, max_value=63, required=False)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class OptionalReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class LeaseSerializer(serializers.ModelSerializer):
    lease_id = serializers.UUIDField(source="id", read_only=True)
    gpu = serializers.IntegerField(source="gpu.index", read_only=True)

    class Meta:
        model = Lease
        fields = [
            "lease_id",
            "gpu",
            "requester",
            "reason",
            "priority",
            "status",
            "fencing_token",
            "ttl_seconds",
            "expires_at",
            "memory_mib",
            "waiting_for",
            "requested_at",
            "granted_at",
            "last_heartbeat_at",
            "claim_by",
            "standing",
            "ended_at",
            "ended_by",
            "end_reason",
        ]
        read_only_fields = fields


class LeaseFilter(serializers.Serializer):
    gpu = serializers.IntegerField(required=False, min_value=0, max_value=MAX_GPU_INDEX)
    requester = serializers.CharField(required=False, max_length=100)
    status = serializers.MultipleChoiceField(required=False, choices=LeaseStatus.choices)
