import signal
import threading

from django.core.management.base import BaseCommand

from gaiaorch import ticker


class Command(BaseCommand):
    help = "Run periodic housekeeping (reapers, recovery, Docker event following) until SIGTERM."

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        names = sorted([*ticker.PERIODIC, *ticker.FOLLOWERS])
        self.stdout.write(f"ticker running: {', '.join(names) or 'no jobs registered'}")
        ticker.run_forever(stop)
