from django.urls import path
from rest_framework.routers import SimpleRouter

from leases.api import views
from leases.api.wait import wait

router = SimpleRouter(trailing_slash=True)
router.register("api/leases", views.LeaseViewSet, basename="lease")

urlpatterns = [
    path("gpu/acquire", views.acquire, name="gpu-acquire"),
    path("gpu/release", views.release, name="gpu-release"),
    path("gpu/wait", wait, name="gpu-wait"),
    path("gpu/heartbeat", views.heartbeat, name="gpu-heartbeat"),
    path("gpu/status", views.gpu_status, name="gpu-status"),
    path("api/gpu/status/", views.api_gpu_status, name="api-gpu-status"),
    *router.urls,
]
