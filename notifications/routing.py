from django.urls import path

from notifications.consumers import NotificationConsumer

websocket_urlpatterns = [path("ws/notifications", NotificationConsumer.as_asgi())]  # type: ignore[arg-type]  # an ASGI app
