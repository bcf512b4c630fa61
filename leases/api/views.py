"""The seed-compatible /gpu/* endpoints and the /api/leases/ resource: parse, call one service,
serialize. Who may act for which requester is checked here; the rules live in leases.services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view
from rest_framework.response import Response

from gaiaorch import rights
from gaiaorch.auth import actor_name
from gaiaorch.errors import InvalidRequest
from gaiaorch.serializers import render
from gaiaorch_client import contract
from leases import services
from leases.api.serializers import (
    AcquireSerializer,
    GrantedSerializer,
    LeaseFilter,
    LeaseIdSerializer,
    LeaseSerializer,
    OptionalReasonSerializer,
    QueuedSerializer,
    ReasonSerializer,
    ReleaseSerializer,
)
from leases.models import Lease


def ensure_acts_for(user, requester: str) -> None:
    rights.require_acts_for(user, requester)


def lease_for(user, lease_id) -> services.LeaseOwner:
    """Whose the lease is and its GPU, if `user` may act on it (its own requester's, or any for staff)."""
    lease = services.lease_owner(lease_id)
    ensure_acts_for(user, lease.requester)
    return lease


def acquire_body(result: services.AcquireResult) -> tuple[dict[str, Any], int]:
    """The seed's acquire answer: 200 when granted, 202 with the queue position when waiting
    (rendered by GrantedSerializer and QueuedSerializer, which document them)."""
    lease = result.lease
    base = {"lease_id": str(lease.id), "gpu": lease.gpu.index, "requester": lease.requester}
    if result.granted:
        body = {
            "success": True,
            **base,
            "status": lease.status,
            "fencing_token": lease.fencing_token,
            "expires_at": lease.expires_at.isoformat() if lease.expires_at else None,
            "message": f"GPU {lease.gpu.index} granted to {lease.requester}",
        }
        if result.choice:
            body["choice"] = result.choice
        return render(GrantedSerializer, body), status.HTTP_200_OK
    body = {
        "success": False,
        **base,
        "status": lease.status,
        "queue_position": result.queue_position,
        "waiting_for": result.waiting_for,
        "message": f"{lease.requester} is number {result.queue_position} in the queue: {result.waiting_for}"
        if result.queue_position
        else f"The request is {lease.status}.",
    }
    if result.choice:
        body["choice"] = result.choice
    return render(QueuedSerializer, body), status.HTTP_202_ACCEPTED


def validated(serializer_class, data) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def lease_body(lease: Lease, message: str) -> dict[str, Any]:
    return {"success": True, "message": message, **render(LeaseSerializer, lease)}


@extend_schema(request=AcquireSerializer, responses={200: GrantedSerializer, 202: QueuedSerializer})
@api_view(["POST"])
def acquire(request):
    """Ask for a GPU. Never blocks: `timeout_seconds` is accepted for compatibility; use /gpu/wait."""
    params = validated(AcquireSerializer, request.data)  # timeout_seconds: read, never used
    ensure_acts_for(request.user, params["requester"])
    body, code = acquire_body(
        services.acquire(**contract.acquire_arguments(params), actor=actor_name(request.user))
    )
    return Response(body, status=code)


@extend_schema(
    request=ReleaseSerializer,
    parameters=[
        OpenApiParameter("lease_id", OpenApiTypes.UUID, required=False),
        OpenApiParameter("gpu", OpenApiTypes.INT, required=False, description="without a lease id"),
    ],
    responses={
        200: LeaseSerializer,
        409: OpenApiResponse(description="conflict (the lease already ended) or nothing_held"),
    },
)
@api_view(["POST"])
def release(request):
    """Release by lease id (JSON body or ?lease_id=). Without an id, a service releases its own
    lease (or leaves its queue) and an operator releases the holder, on the named or only GPU."""
    data = {**request.query_params.dict(), **(request.data if isinstance(request.data, dict) else {})}
    params = validated(ReleaseSerializer, data)
    actor = actor_name(request.user)
    if "lease_id" in params:
        lease = lease_for(request.user, params["lease_id"])
        ensure_same_gpu(lease, params.get("gpu"))
        released = services.release_reporting(lease.id, actor=actor, reason=params["reason"], gpu=lease.gpu)
    else:
        requester = rights.own_requester(request.user)
        released = services.release_without_id_reporting(
            gpu=params.get("gpu"), requester=requester, actor=actor, reason=params["reason"]
        )
    return Response(released_body(released))


def ensure_same_gpu(lease: services.LeaseOwner, gpu: int | None) -> None:
    if gpu is not None and gpu != lease.gpu:
        raise InvalidRequest(
            f"Lease {lease.id} is on GPU {lease.gpu}, not GPU {gpu}.",
            fields={"gpu": [f"lease {lease.id} is on GPU {lease.gpu}"]},
        )


def released_body(released: services.Released) -> dict[str, Any]:
    """The seed's release answer (success, message, queue_length), the lease and the next holder."""
    lease = released.lease
    body = lease_body(lease, f"{lease.requester} {lease.status} GPU {lease.gpu.index}")
    body["next_holder"] = released.next_holder
    body["queue_length"] = released.queue_length
    return body


@extend_schema(request=LeaseIdSerializer, responses=LeaseSerializer)
@api_view(["POST"])
def heartbeat(request):
    params = validated(LeaseIdSerializer, request.data)
    lease = lease_for(request.user, params["lease_id"])
    renewed = services.heartbeat(lease.id, actor=actor_name(request.user), gpu=lease.gpu)
    return Response(lease_body(renewed, "Lease renewed"))


GPU_STATUS_SCHEMA = extend_schema(
    parameters=[OpenApiParameter("gpu", OpenApiTypes.INT, required=False)], responses=OpenApiTypes.OBJECT
)


def status_of(request, document) -> Response:
    gpu = request.query_params.get("gpu")
    if gpu is None:
        return Response(document())
    return Response(document(validated(LeaseFilter, {"gpu": gpu})["gpu"]))


@GPU_STATUS_SCHEMA
@api_view(["GET"])
def gpu_status(request):
    """The seed's GPU status: every GPU (top-level fields describe GPU 0), `?gpu=N` for one;
    a free GPU's owner is "none"."""
    return status_of(request, services.seed_gpu_status)


@GPU_STATUS_SCHEMA
@api_view(["GET"])
def api_gpu_status(request):
    """The same document as /gpu/status, with null as the owner of a free GPU."""
    return status_of(request, services.gpu_status)


class LeaseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Leases, newest first; filter with ?gpu=, ?requester=, ?status= (repeatable).
    Actions: release, heartbeat, cancel (the requester or staff), revoke (staff, with a reason)."""

    serializer_class = LeaseSerializer
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_queryset(self):
        wanted = validated(LeaseFilter, self.request.query_params)
        queryset = Lease.objects.select_related("gpu").order_by("-requested_at")
        if "gpu" in wanted:
            queryset = queryset.filter(gpu__index=wanted["gpu"])
        if "requester" in wanted:
            queryset = queryset.filter(requester=wanted["requester"])
        if wanted.get("status"):
            queryset = queryset.filter(status__in=wanted["status"])
        return queryset

    def retrieve(self, request, *args, **kwargs):
        lease = self.get_object()
        return Response(render(LeaseSerializer, services.get_lease(lease.id)))

    def _acted(self, request, service, serializer_class=OptionalReasonSerializer) -> Response:
        lease = lease_for(request.user, self.get_object().id)
        params = validated(serializer_class, request.data)
        changed = service(lease.id, actor=actor_name(request.user), **params)
        return Response(render(LeaseSerializer, changed))

    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        return self._acted(request, services.release)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._acted(request, services.cancel)

    @action(detail=True, methods=["post"])
    def heartbeat(self, request, pk=None):
        lease = lease_for(request.user, self.get_object().id)
        return Response(render(LeaseSerializer, services.heartbeat(lease.id, actor=actor_name(request.user))))

    @action(detail=True, methods=["post"], permission_classes=[rights.IsOperator])
    def revoke(self, request, pk=None):
        return self._acted(request, services.revoke, ReasonSerializer)
