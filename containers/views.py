"""Seed-compatible container endpoints: thin, each checks its right, parses, calls one service,
serializes. Each operation needs its right (named as the operation kind) or an operator."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework import status as http
from rest_framework.decorators import api_view
from rest_framework.response import Response

from containers import services
from containers.models import Container, Operation, OperationKind
from containers.serializers import (
    CandidateStartSerializer,
    ContainerRowSerializer,
    ContainerStatusSerializer,
    OperationAcceptedSerializer,
    OperationDetailSerializer,
    OperationRowSerializer,
    SeedContainerStatusSerializer,
    SwapSerializer,
)
from gaiaorch import rights
from gaiaorch.auth import actor_name
from gaiaorch.serializers import ErrorSerializer, render

OPERATION_RESPONSES = {
    202: OperationAcceptedSerializer,
    400: ErrorSerializer,
    409: ErrorSerializer,
    503: ErrorSerializer,
}


def operation_schema(request=None):
    return extend_schema(request=request, responses=OPERATION_RESPONSES, tags=["containers"])


def accepted(operation: Operation) -> Response:
    body = {**services.operation_summary(operation), "services": operation.services}
    location = {"Location": services.status_url(operation)}
    return Response(
        render(OperationAcceptedSerializer, body), status=http.HTTP_202_ACCEPTED, headers=location
    )


def _body(request) -> dict:
    return request.data if isinstance(request.data, dict) else {}


@extend_schema(responses={200: SeedContainerStatusSerializer}, tags=["containers"])
@api_view(["GET"])
def container_status(request):
    """Observed state of every configured service, from the database (no Docker round trip);
    `live` and `candidate` in the seed's shape."""
    return Response(render(SeedContainerStatusSerializer, services.seed_status()))


@extend_schema(responses={200: ContainerStatusSerializer}, tags=["containers"])
@api_view(["GET"])
def api_container_status(request):
    """The same document as /containers/status, with `live` and `candidate` mapping role -> state."""
    return Response(render(ContainerStatusSerializer, services.status()))


def stack_operation_view(kind: str, name: str, summary: str):
    """A body-less POST that requests one stack operation and answers 202."""

    def view(request):
        rights.require(request.user, kind)
        return accepted(services.request_stack_operation(kind, actor=actor_name(request.user)))

    view.__name__, view.__doc__ = name, summary
    return operation_schema()(api_view(["POST"])(view))


live_stop = stack_operation_view(OperationKind.LIVE_STOP, "live_stop", "Stop the live stack.")
live_start = stack_operation_view(OperationKind.LIVE_START, "live_start", "Start the live stack.")
candidate_stop = stack_operation_view(
    OperationKind.CANDIDATE_STOP, "candidate_stop", "Stop the candidate stack."
)


@operation_schema(CandidateStartSerializer)
@api_view(["POST"])
def candidate_start(request):
    rights.require(request.user, OperationKind.CANDIDATE_START)
    params = CandidateStartSerializer(data=_body(request))
    params.is_valid(raise_exception=True)
    operation = services.request_stack_operation(
        OperationKind.CANDIDATE_START, actor=actor_name(request.user), **params.validated_data
    )
    return accepted(operation)


@operation_schema(SwapSerializer)
@api_view(["POST"])
def swap(request):
    rights.require(request.user, OperationKind.SWAP)
    params = SwapSerializer(data=_body(request))
    params.is_valid(raise_exception=True)
    operation = services.request_swap(
        params.validated_data["service"], params.validated_data["target"], actor=actor_name(request.user)
    )
    return accepted(operation)


@extend_schema(responses={200: OperationDetailSerializer, 404: ErrorSerializer}, tags=["containers"])
@api_view(["GET"])
def operation_status(request, operation_id: int):
    return Response(
        render(OperationDetailSerializer, services.operation_detail(services.operation(operation_id)))
    )


# "status" is /api/containers/status/ (routed first), never a service: the schema says so too.
NOT_STATUS = OpenApiParameter("service", str, OpenApiParameter.PATH, pattern=r"^(?!status$)[^/.]+$")


@extend_schema_view(retrieve=extend_schema(parameters=[NOT_STATUS]))
class ContainerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Reality rows as last observed (read-only); `/containers/status` adds Docker's reachability."""

    queryset = Container.objects.all()
    serializer_class = ContainerRowSerializer
    lookup_field = "service"
    lookup_value_regex = r"(?!status$)[^/.]+"  # /api/containers/status/ is the status document


class OperationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Container operations with their steps, newest first (read-only)."""

    queryset = Operation.objects.prefetch_related("steps").order_by("-id")
    serializer_class = OperationRowSerializer
