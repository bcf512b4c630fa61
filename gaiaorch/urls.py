from django.contrib import admin
from django.urls import include, path

from gaiaorch import views

urlpatterns = [
    path("health", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("", include("notifications.urls")),
    path("", include("leases.urls")),
    path("", include("containers.urls")),
    path("", include("handoffs.urls")),
]
