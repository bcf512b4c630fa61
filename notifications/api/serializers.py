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
