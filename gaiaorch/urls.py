from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gaiaorch import views

urlpatterns = [
    path("", views.index, name="index"),
    path("status", views.overview, name="status"),
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("metrics", views.prometheus, name="metrics"),
    path("admin/dashboard/", include("gaiaorch.console.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("notifications.urls")),
    path("", include("leases.urls")),
    path("", include("containers.urls")),
    path("", include("handoffs.urls")),
]

handler404 = "gaiaorch.views.not_found"
handler500 = "gaiaorch.views.server_error"
