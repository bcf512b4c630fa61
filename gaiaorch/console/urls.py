from django.contrib import admin
from django.urls import path

from gaiaorch.console import views

urlpatterns = [
    path("", admin.site.admin_view(views.dashboard), name="console-dashboard"),
    path("feed", admin.site.admin_view(views.feed), name="console-feed"),
    path("action/<slug:name>", admin.site.admin_view(views.action), name="console-action"),
]
