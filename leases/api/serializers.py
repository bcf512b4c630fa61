from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from leases import services
from leases.models import Lease, LeaseStatus

MAX_TTL_SECONDS = 7 * 24 * 3600
MAX_WAIT_SECONDS = 3600
MAX_GPU_INDEX = 63  # GAIAORCH_GPU_COUNT is at most 64


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


class AcquireGpuField(serializers.Field):
    """An acquire's GPU: its index, or "any" for the GPU whose free memory fits the need best."""

    default_error_messages = {
        "invalid": f'must be a GPU index (0 to {MAX_GPU_INDEX}) or "{services.ANY_GPU}"',
    }

    def to_internal_value(self, data):
        if data == services.ANY_GPU:
            return data
        try:
            return serializers.IntegerField(min_value=0, max_value=MAX_GPU_INDEX).run_validation(data)
        except serializers.ValidationError:
            self.fail("invalid")

    def to_representation(self, value):
        return value


class AcquireGpuFieldSchema(OpenApiSerializerFieldExtension):
    target_class = AcquireGpuField

    def map_serializer_field(self, auto_schema, direction):
        return {
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_GPU_INDEX},
                {"type": "string", "enum": [services.ANY_GPU]},
            ],
            "default": 0,
            "description": f'a GPU index, or "{services.ANY_GPU}": the GPU whose measured free memory '
            "fits memory_mib (else the requester's configured vram_mib) best",
        }


class AcquireSerializer(serializers.Serializer):
    requester = RequesterField()
    reason = serializers.CharField(max_length=500)
    gpu = AcquireGpuField(default=0)
    priority = serializers.IntegerField(min_value=-1000, max_value=1000, default=0)
    ttl_seconds = serializers.IntegerField(
        min_value=1, max_value=MAX_TTL_SECONDS, required=False, allow_null=True, default=None
    )
    memory_mib = serializers.IntegerField(
        min_value=1, max_value=10_000_000, required=False, allow_null=True, default=None
    )
    timeout_seconds = serializers.FloatField(min_value=0, max_value=MAX_WAIT_SECONDS, required=False)

    def validate_requester(self, value: str) -> str:
        if value not in services.requesters():
            raise serializers.ValidationError(f"must be one of: {', '.join(services.requesters())}")
        return value


class WaitAcquireSerializer(AcquireSerializer):
    timeout_seconds = serializers.FloatField(min_value=0, max_value=MAX_WAIT_SECONDS, default=60)
    keep_queued = serializers.BooleanField(default=False)


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
