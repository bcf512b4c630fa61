from rest_framework import serializers

from notifications.models import Event


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = [
            "id",
            "type",
            "severity",
            "title",
            "message",
            "data",
            "actor",
            "subject_kind",
            "subject_id",
            "correlation_id",
            "created_at",
        ]
        read_only_fields = fields


class OracleFallbackSerializer(serializers.Serializer):
    """The seed's body: gaia-core reports that a cloud model answered because Prime was down."""

    fallback_model = serializers.CharField(max_length=200)
    original_role = serializers.CharField(max_length=100)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    timestamp = serializers.DateTimeField(required=False, allow_null=True, default=None)
