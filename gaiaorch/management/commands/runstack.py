"""Run the web process (daphne), the worker (qcluster) and the ticker together; Ctrl-C stops all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 15


class Command(BaseCommand):
    help = "Start daphne on GAIAORCH_PORT, the django-q2 worker and the ticker; SIGINT/SIGTERM stops all."

    def handle(self, *args, **options):
        children = [self._web(), self._manage("qcluster"), self._manage("ticker")]
        stopping = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.append(True))
        self.stdout.write(f"gaiaorch listening on http://{settings.BIND}:{settings.PORT}/ (admin: /admin/)")
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        code = self._stop(children)
        sys.exit(0 if stopping else code or 1)

    def _web(self) -> subprocess.Popen:
        command = ["daphne", "-b", settings.BIND, "-p", str(settings.PORT), "console.asgi:application"]
        return subprocess.Popen([sys.executable, "-m", *command])

    def _manage(self, command: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "manage.py", command], cwd=settings.BASE_DIR)

    def _stop(self, children: list[subprocess.Popen]) -> int:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return max(abs(child.returncode or 0) for child in children)
