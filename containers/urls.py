from django.urls import path
from rest_framework.routers import SimpleRouter

from containers import views

router = SimpleRouter(trailing_slash=True)
router.register("api/containers", views.ContainerViewSet, basename="container")
router.register("api/container-operations", views.OperationViewSet, basename="container-operation")

urlpatterns = [
    path("containers/status", views.container_status, name="containers-status"),
    path("containers/live/stop", views.live_stop, name="containers-live-stop"),
    path("containers/live/start", views.live_start, name="containers-live-start"),
    path("containers/candidate/start", views.candidate_start, name="containers-candidate-start"),
    path("containers/candidate/stop", views.candidate_stop, name="containers-candidate-stop"),
    path("containers/swap", views.swap, name="containers-swap"),
    path("containers/operations/<int:operation_id>", views.operation_status, name="containers-operation"),
    # Listed before the router, so that "status" is never read as a service name.
    path("api/containers/status/", views.api_container_status, name="api-containers-status"),
    *router.urls,
]
