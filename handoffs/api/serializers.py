from rest_framework import serializers

from handoffs.models import Handoff, HandoffType


class StartSeedSerializer(serializers.Serializer):
    """Body of the seed endpoints: empty, {}, or {reason, timeout_seconds}."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
    timeout_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1, default=None)


class StartSerializer(StartSeedSerializer):
    type = serializers.ChoiceField(choices=HandoffType.choices)
    gpu = serializers.IntegerField(required=False, min_value=0, default=0)


class HandoffSerializer(serializers.ModelSerializer):
    handoff_id = serializers.UUIDField(source="id", read_only=True)
    progress_pct = serializers.IntegerField(read_only=True)
    phases = serializers.SerializerMethodField()
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

    def get_phases(self, handoff: Handoff) -> list[dict]:
        return [record.as_dict() for record in handoff.phases.all()]

    def get_status_url(self, handoff: Handoff) -> str:
        return f"/handoff/{handoff.id}/status"
