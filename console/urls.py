"""The root URLconf: the coordinator's own endpoints, the operator dashboard, then every app's."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console import dashboard, views
from gaiaorch.views import health

dashboard_urlpatterns = [
    path("", admin.site.admin_view(dashboard.dashboard), name="console-dashboard"),
    path("feed", admin.site.admin_view(dashboard.feed), name="console-feed"),
    path("gpus", admin.site.admin_view(dashboard.gpus), name="console-gpus"),
    path("action/<slug:name>", admin.site.admin_view(dashboard.action), name="console-action"),
]

urlpatterns = [
    path("", views.index, name="index"),
    path("status", views.overview, name="status"),
    path("health", health, name="health"),
    path("ready", views.ready, name="ready"),
    path("metrics", views.prometheus, name="metrics"),
    path("admin/dashboard/", include(dashboard_urlpatterns)),
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
