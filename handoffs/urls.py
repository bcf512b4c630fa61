from django.urls import path
from rest_framework.routers import SimpleRouter

from handoffs.api import views

router = SimpleRouter(trailing_slash=True)
router.register("api/handoffs", views.HandoffViewSet, basename="handoff")

urlpatterns = [
    path("handoff/prime-to-study", views.prime_to_study, name="handoff-prime-to-study"),
    path("handoff/study-to-prime", views.study_to_prime, name="handoff-study-to-prime"),
    path("handoff/<str:handoff_id>/status", views.handoff_status, name="handoff-status"),
    *router.urls,
]
