from django.conf import settings
from django.utils.module_loading import import_string


def test_it_keeps_every_middleware_async_capable():
    """One sync-only middleware would push every request (and each /gpu/wait) through a thread."""
    sync_only = [
        path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []


def test_it_serves_the_admin_stylesheet_itself(client, db):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")
