"""Run the web process (daphne), the worker (qcluster) and the ticker under one supervisor."""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from gaiaorch.supervisor import Supervisor


def web() -> None:
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(["-b", settings.BIND, "-p", str(settings.PORT), "console.asgi:application"])


class Command(BaseCommand):
    help = (
        "Start daphne on GAIAORCH_PORT, the django-q2 worker and the ticker, restart any that dies, "
        "and stop all of them (and what they started) on SIGINT/SIGTERM."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"gaiaorch listening on http://{settings.BIND}:{settings.PORT}/ (admin: /admin/)")
        connections.close_all()  # children are forked from here: they must not share a connection
        supervisor = Supervisor(
            {"web": web, "worker": lambda: call_command("qcluster"), "ticker": lambda: call_command("ticker")}
        )
        sys.exit(supervisor.run())
