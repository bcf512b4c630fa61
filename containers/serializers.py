from rest_framework import serializers

from containers.models import SwapTarget


class CandidateStartSerializer(serializers.Serializer):
    gpu_enabled = serializers.BooleanField(default=False)


class SwapSerializer(serializers.Serializer):
    service = serializers.CharField(max_length=100)
    target = serializers.ChoiceField(choices=SwapTarget.choices, default=SwapTarget.CANDIDATE)
