from django.urls import path
from rest_framework.routers import SimpleRouter

from notifications.api.views import EventViewSet, OracleFallbackView

router = SimpleRouter(trailing_slash=True)
router.register("api/events", EventViewSet, basename="event")

urlpatterns = [
    path("notify/oracle-fallback", OracleFallbackView.as_view(), name="oracle-fallback"),
    *router.urls,
]
