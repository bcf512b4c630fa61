from rest_framework import serializers

from gaiaorch.serializers import StepRecordSerializer
from handoffs.models import Handoff
from leases.api.serializers import MAX_GPU_INDEX

MAX_PHASE_TIMEOUT_SECONDS = 86_400


class StartSeedSerializer(serializers.Serializer):
    """Body of the seed endpoints: empty, {}, or {reason, timeout_seconds}."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
    timeout_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_PHASE_TIMEOUT_SECONDS, default=None
    )


MAX_WAIT_SECONDS = 3600


class WaitSerializer(serializers.Serializer):
    """How long a seed start waits for the handoff's end (?wait=SECONDS or Prefer: wait=N)."""

    wait = serializers.FloatField(min_value=0, max_value=MAX_WAIT_SECONDS)


class StartSerializer(StartSeedSerializer):
    type = serializers.CharField(max_length=32, help_text="A handoff type configured under handoffs:")
    gpu = serializers.IntegerField(required=False, min_value=0, max_value=MAX_GPU_INDEX, default=0)


class StartedSerializer(serializers.Serializer):
    """The 202 answer to a start: where to follow the handoff."""

    success = serializers.BooleanField()
    handoff_id = serializers.UUIDField()
    handoff_type = serializers.CharField()
    status_url = serializers.CharField()
    phase = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field, not Field.source
    destination = serializers.CharField()
    message = serializers.CharField()


class StatusSerializer(serializers.Serializer):
    """The seed's status shape plus the phase timeline (services.status)."""

    handoff_id = serializers.UUIDField()
    handoff_type = serializers.CharField()
    phase = serializers.CharField()
    progress_pct = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    source = serializers.CharField()  # type: ignore[assignment]  # a field, not Field.source
    destination = serializers.CharField()
    gpu = serializers.IntegerField()
    reason = serializers.CharField()
    requested_by = serializers.CharField()
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)
    error_context = serializers.DictField(allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField())
    lease_id = serializers.UUIDField(allow_null=True)
    fencing_token = serializers.IntegerField(allow_null=True)
    phases = StepRecordSerializer(many=True)


class WaitedSerializer(StatusSerializer):
    """A seed start that waited: the status, where to follow it, and what happened."""

    success = serializers.BooleanField()
    status_url = serializers.CharField()
    message = serializers.CharField()


class HandoffSerializer(serializers.ModelSerializer):
    handoff_id = serializers.UUIDField(source="id", read_only=True)
    progress_pct = serializers.IntegerField(read_only=True)
    phases = StepRecordSerializer(many=True, read_only=True)
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = Handoff
        fields = [
            "handoff_id",
            "type",
            "gpu_index",
            "source",
            "destination",
            "phase",
            "progress_pct",
            "reason",
            "timeout_seconds",
            "requested_by",
            "cancel_requested",
            "source_lease_id",
            "destination_lease_id",
            "fencing_token",
            "error",
            "warnings",
            "created_at",
            "completed_at",
            "status_url",
            "phases",
        ]
        read_only_fields = fields

    def get_status_url(self, handoff: Handoff) -> str:
        return f"/handoff/{handoff.id}/status"
