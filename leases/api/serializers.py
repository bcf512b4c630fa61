from rest_framework import serializers

from leases import services
from leases.models import Lease, LeaseStatus

MAX_TTL_SECONDS = 7 * 24 * 3600
MAX_WAIT_SECONDS = 3600
MAX_GPU_INDEX = 63  # GAIAORCH_GPU_COUNT is at most 64


class AcquireSerializer(serializers.Serializer):
    requester = serializers.CharField(max_length=100)
    reason = serializers.CharField(max_length=500)
    gpu = serializers.IntegerField(min_value=0, max_value=MAX_GPU_INDEX, default=0)
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


class LeaseIdSerializer(serializers.Serializer):
    lease_id = serializers.UUIDField()
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


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
            "ended_at",
            "ended_by",
            "end_reason",
        ]
        read_only_fields = fields


class LeaseFilter(serializers.Serializer):
    gpu = serializers.IntegerField(required=False, min_value=0, max_value=MAX_GPU_INDEX)
    requester = serializers.CharField(required=False, max_length=100)
    status = serializers.MultipleChoiceField(required=False, choices=LeaseStatus.choices)
