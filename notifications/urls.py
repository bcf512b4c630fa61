from rest_framework.routers import SimpleRouter

from notifications.api.views import EventViewSet

router = SimpleRouter(trailing_slash=True)
router.register("api/events", EventViewSet, basename="event")

urlpatterns = router.urls
