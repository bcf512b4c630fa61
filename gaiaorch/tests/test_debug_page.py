"""With DEBUG on, Django's error page lists the settings: it must not show any credential."""

from __future__ import annotations

import sys
import uuid

from django.test import RequestFactory
from django.views.debug import technical_500_response

from gaiaorch.settings import channel_layers

# Random, so the page's source excerpts of this very file cannot contain them.
SECRETS = {name: uuid.uuid4().hex for name in ("database", "redis", "webhook", "url", "header")}
DATABASE_URL = f"postgres://gaia:{SECRETS['database']}@db.internal:5432/gaiaorch"
REDIS_URL = f"redis://:{SECRETS['redis']}@redis.internal:6379/0"


def _error_page(request) -> str:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()


def test_it_hides_credentials_inside_urls_on_the_debug_page(settings):
    settings.DEBUG = True
    settings.DATABASE_URL = DATABASE_URL
    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_LAYERS = channel_layers(REDIS_URL)
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": REDIS_URL}
    webhook = f"https://hooks.slack.com/services/T0/B0/{SECRETS['webhook']}"
    settings.GAIAORCH = {"notifications": {"webhooks": [{"name": "ops", "url": webhook}]}}
    settings.SOME_SERVICE_URL = f"http://10.0.0.9:8080/?apikey={SECRETS['url']}"
    request = RequestFactory().post("/gpu/acquire", HTTP_AUTHORIZATION=f"Token {SECRETS['header']}")
    page = _error_page(request)
    assert "RuntimeError" in page and "DATABASE_URL" in page  # the page itself still helps
    assert "redis://:********************@redis.internal" in page  # the host stays, not the password
    for name, secret in SECRETS.items():
        assert secret not in page, name
