import json

from django.core.management.base import BaseCommand, CommandError
from django_q.tasks import async_task

from gaiaorch import event_types
from notifications import services
from notifications.events import MANUAL


class Command(BaseCommand):
    help = "Make events from the command line: an Oracle-fallback notice, or any event (for tests and demos)."

    def add_arguments(self, parser):
        kinds = parser.add_subparsers(dest="kind", required=True)
        oracle = kinds.add_parser("oracle-fallback", help="report that a cloud model answered for a role")
        oracle.add_argument("fallback_model")
        oracle.add_argument("original_role")
        oracle.add_argument("--reason", default="")
        event = kinds.add_parser("event", help="record an event")
        event.add_argument(
            "type",
            nargs="?",
            default=MANUAL,
            help=f"a declared event type (docs/events.md), default {MANUAL}; --data must be its payload",
        )
        event.add_argument("title")
        event.add_argument("--message", default="")
        event.add_argument("--data", default="{}", help="JSON object stored as the event's data")
        event.add_argument("--count", type=int, default=1, help="record this many events")
        event.add_argument("--pad", type=int, default=0, help="add this many characters to the message")
        event.add_argument("--via-worker", action="store_true", help="have the django-q2 worker record them")

    def handle(self, *args, kind: str, **options):
        if kind == "oracle-fallback":
            report = services.report_oracle_fallback(
                options["fallback_model"], options["original_role"], options["reason"], actor="manage.py"
            )
            self.stdout.write(json.dumps(report.body()))
            return
        self.record_events(**options)

    def record_events(self, type, title, message, data, count, pad, via_worker, **_):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise CommandError(f"--data is not JSON: {exc}") from None
        message += "x" * pad
        try:
            event_types.check(type, None, data)
        except event_types.EventContractError as exc:
            raise CommandError(str(exc)) from None
        for index in range(count):
            numbered = f"{title} {index + 1}/{count}" if count > 1 else title
            if via_worker:
                async_task("notifications.tasks.emit_event", type, numbered, message, data, group="notify")
            else:
                self.stdout.write(
                    str(services.record_event(type, numbered, message, actor="manage.py", data=data).id)
                )
