"""Run the web process (daphne), the worker (qcluster) and the ticker under one supervisor."""

from __future__ import annotations

import json
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Start daphne on GAIAORCH_PORT, the django-q2 worker and the ticker, restart any that dies, "
        "and stop all of them (and what they started) on SIGINT/SIGTERM."
    )

    def handle(self, *args, **options):
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = {
            "web": [
                *(sys.executable, "-m", "daphne"),
                *("-b", settings.BIND, "-p", str(settings.PORT), "gaiaorch.asgi:application"),
            ],
            "worker": [*manage, "qcluster"],
            "ticker": [*manage, "ticker"],
        }
        self.stdout.write(f"gaiaorch listening on http://{settings.BIND}:{settings.PORT}/ (admin: /admin/)")
        self.stdout.flush()
        os.chdir(settings.BASE_DIR)
        # The supervisor needs no Django: exec it in place of this process to drop Django's memory.
        os.execv(sys.executable, [sys.executable, "-m", "gaiaorch.supervisor", json.dumps(children)])
