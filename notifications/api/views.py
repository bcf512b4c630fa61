from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from gaiaorch import rights
from gaiaorch.auth import actor_name
from gaiaorch.serializers import render
from notifications import feed, services
from notifications.api.serializers import EventSerializer, OracleFallbackSerializer
from notifications.models import Event

MAX_EVENT_ID = 2**63 - 1  # the id column is a signed 64-bit integer


class EventFilter(serializers.Serializer):
    after = serializers.IntegerField(required=False, min_value=0, max_value=MAX_EVENT_ID)
    type = serializers.CharField(required=False, max_length=64)
    severity = serializers.ChoiceField(required=False, choices=Event._meta.get_field("severity").choices)  # type: ignore[arg-type]
    subject_kind = serializers.CharField(required=False, max_length=32)
    subject_id = serializers.CharField(required=False, max_length=64)


class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The event log, read-only. `?after=<id>` returns events after that id in ascending order."""

    serializer_class = EventSerializer

    def get_queryset(self):
        params = EventFilter(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        wanted = dict(params.validated_data)
        after = wanted.pop("after", None)
        queryset = Event.objects.filter(**wanted)
        if self.action == "list":  # a listing must not show an id before an earlier one appears
            queryset = feed.visible(queryset)
        if after is not None:
            return queryset.filter(id__gt=after).order_by("id")
        return queryset.order_by("-id")


ORACLE_FALLBACK_ANSWER = inline_serializer(
    "OracleFallbackAnswer",
    {
        "success": serializers.BooleanField(),
        "notification_id": serializers.CharField(),
        "event_id": serializers.IntegerField(),
        "deduplicated": serializers.BooleanField(),
        "count": serializers.IntegerField(),
        "window_ends_at": serializers.DateTimeField(),
    },
)


class OracleFallbackView(APIView):
    """POST /notify/oracle-fallback: store and broadcast the notice (bursts are folded). Needs
    the oracle_fallback right (gaia-core's in the shipped configuration) or an operator."""

    @extend_schema(request=OracleFallbackSerializer, responses={200: ORACLE_FALLBACK_ANSWER})
    def post(self, request):
        rights.require(request.user, rights.ORACLE_FALLBACK)
        notice = OracleFallbackSerializer(data=request.data)
        notice.is_valid(raise_exception=True)
        report = services.report_oracle_fallback(**notice.validated_data, actor=actor_name(request.user))
        return Response(render(type(ORACLE_FALLBACK_ANSWER), report.body()))
