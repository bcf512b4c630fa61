from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from gaiaorch import event_types


class Command(BaseCommand):
    help = "Write docs/events.md from the event-type registry (--check: fail when it is out of date)."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if it differs")

    def handle(self, *args, check: bool, **options):
        path = Path(settings.BASE_DIR) / event_types.DOC_PATH
        text = event_types.markdown()
        if check:
            if not path.exists() or path.read_text() != text:
                self.stderr.write(f"{event_types.DOC_PATH} is out of date: run manage.py events_doc")
                raise SystemExit(1)
            return
        path.write_text(text)
        self.stdout.write(f"Wrote {path}")
