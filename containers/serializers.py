"""Request bodies, and the response shapes the OpenAPI schema documents."""

from rest_framework import serializers

from containers.models import Container, Operation, OperationStep, SwapTarget
from gaiaorch.serializers import StepRecordSerializer


class CandidateStartSerializer(serializers.Serializer):
    gpu_enabled = serializers.BooleanField(default=False)


class SwapSerializer(serializers.Serializer):
    service = serializers.CharField(max_length=100, help_text="live service, its candidate, or the role")
    target = serializers.ChoiceField(choices=SwapTarget.choices, default=SwapTarget.CANDIDATE)


class OperationAcceptedSerializer(serializers.Serializer):
    operation_id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    status_url = serializers.CharField()
    services = serializers.ListField(child=serializers.CharField())


class StepSerializer(StepRecordSerializer):
    service = serializers.CharField()


class OperationDetailSerializer(OperationAcceptedSerializer):
    params = serializers.DictField()
    requested_by = serializers.CharField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    deadline_at = serializers.DateTimeField(allow_null=True)
    steps = StepSerializer(many=True)


class ServiceStatusSerializer(serializers.Serializer):
    service = serializers.CharField()
    stack = serializers.CharField()
    role = serializers.CharField()
    container_id = serializers.CharField()
    name = serializers.CharField()
    image = serializers.CharField()
    state = serializers.CharField()
    health = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    device_requests = serializers.ListField(child=serializers.DictField())
    last_seen_at = serializers.DateTimeField(allow_null=True)
    gpu = serializers.BooleanField()
    vram_mib = serializers.ListField(child=serializers.IntegerField())
    port = serializers.IntegerField(allow_null=True)


class ContainerStatusSerializer(serializers.Serializer):
    docker_available = serializers.BooleanField()
    docker_error = serializers.CharField()
    live = serializers.DictField(child=serializers.CharField(), help_text="role -> state")
    candidate = serializers.DictField(child=serializers.CharField(), help_text="role -> state")
    services = ServiceStatusSerializer(many=True)
    swaps = serializers.ListField(child=serializers.DictField())
    active_operation = serializers.DictField(allow_null=True)


class SeedServiceSerializer(serializers.Serializer):
    """One service as the seed described it."""

    name = serializers.CharField()
    state = serializers.ChoiceField(choices=["running", "stopped", "starting", "stopping", "unknown"])
    port = serializers.IntegerField(allow_null=True)
    healthy = serializers.BooleanField(help_text="running, with a passing Docker health check")
    last_check = serializers.DateTimeField(allow_null=True, help_text="when Docker was last asked")


class SeedContainerStatusSerializer(ContainerStatusSerializer):
    live = serializers.DictField(child=SeedServiceSerializer(), help_text="role -> service")
    candidate = serializers.DictField(child=SeedServiceSerializer(), help_text="role -> service")


class ContainerRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Container
        fields = [
            "service",
            "stack",
            "role",
            "container_id",
            "name",
            "image",
            "state",
            "health",
            "started_at",
            "device_requests",
            "last_seen_at",
            "changed_at",
        ]
        read_only_fields = fields


class OperationStepRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = OperationStep
        fields = ["name", "service", "outcome", "detail", "figures", "started_at", "finished_at"]
        read_only_fields = fields


class OperationRowSerializer(serializers.ModelSerializer):
    steps = OperationStepRowSerializer(many=True, read_only=True)

    class Meta:
        model = Operation
        fields = [
            "id",
            "kind",
            "status",
            "services",
            "params",
            "requested_by",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "deadline_at",
            "steps",
        ]
        read_only_fields = fields
