from django.urls import path
from rest_framework.routers import SimpleRouter

from handoffs.api import views

router = SimpleRouter(trailing_slash=True)
router.register("api/handoffs", views.HandoffViewSet, basename="handoff")

urlpatterns = [
    path("handoff/<str:handoff_id>/status", views.handoff_status, name="handoff-status"),
    path("handoff/<slug:handoff_type>", views.start_by_path, name="handoff-start"),
    *router.urls,
]
