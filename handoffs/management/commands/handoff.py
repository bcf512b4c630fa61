"""manage.py handoff TYPE | status ID | cancel ID [--wait]

TYPE is any handoff type configured under `handoffs:` (prime-to-study, study-to-prime, …).

Starting a handoff follows it to its end, printing one line per phase as it happens; the exit code
is 0 only when it completed without warnings (2: completed with a warning, 1: failed/cancelled).
"""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from gaiaorch.errors import DomainError
from handoffs import services
from handoffs.models import TERMINAL, Phase

POLL_SECONDS = 0.2
EXIT_WARNING = 2


class Command(BaseCommand):
    help = "Start, follow, inspect or cancel GPU handoffs."

    def add_arguments(self, parser):
        parser.add_argument(
            "action", help="a configured handoff type (prime-to-study, study-to-prime, …), status or cancel"
        )
        parser.add_argument("handoff_id", nargs="?", help="for status and cancel")
        parser.add_argument("--reason", default="", help="why (stored and sent to the services)")
        parser.add_argument("--timeout-seconds", type=int, default=None, help="deadline of each phase")
        parser.add_argument("--gpu", type=int, default=0)
        parser.add_argument("--wait", action="store_true", help="status/cancel: follow until the end")
        parser.add_argument("--no-wait", action="store_true", help="start: print the id and return")
        parser.add_argument("--actor", default="operator-cli", help="name recorded in events")

    def handle(self, *args, action, handoff_id, **options):
        try:
            code = self._dispatch(action, handoff_id, options)
        except DomainError as refusal:
            raise CommandError(f"{refusal.code}: {refusal.detail}") from None
        sys.exit(code)

    def _dispatch(self, action: str, handoff_id: str | None, options) -> int:
        if action not in ("status", "cancel"):
            handoff = services.start(
                type=action,
                actor=options["actor"],
                reason=options["reason"],
                timeout_seconds=options["timeout_seconds"],
                gpu=options["gpu"],
            )
            self.stdout.write(
                f"handoff {handoff.id} {handoff.type}: {handoff.source} → {handoff.destination}"
            )
            return 0 if options["no_wait"] else self.follow(handoff.id)
        if not handoff_id:
            raise CommandError(f"handoff {action} needs a handoff id")
        if action == "cancel":
            services.cancel(handoff_id, actor=options["actor"])
            self.stdout.write(f"cancel requested for {handoff_id}")
        if options["wait"]:
            return self.follow(handoff_id)
        return self.show(handoff_id)

    def show(self, handoff_id) -> int:
        state = services.status(services.get(handoff_id))
        for record in state["phases"]:
            self.stdout.write(self._phase_line(record))
        self.stdout.write(f"phase: {state['phase']} ({state['progress_pct']}%)")
        if state["error"]:
            self.stdout.write(f"error: {state['error']}")
        return 0

    def follow(self, handoff_id) -> int:
        """Print one line per phase as each one finishes, until the handoff ends."""
        printed = 0
        while True:
            state = services.status(services.get(handoff_id))
            finished = [record for record in state["phases"] if record["finished_at"]]
            for record in finished[printed:]:
                self.stdout.write(self._phase_line(record))
                self.stdout.flush()
            printed = len(finished)
            if state["phase"] in TERMINAL:
                return self._exit_code(state)
            time.sleep(POLL_SECONDS)

    def _exit_code(self, state: dict) -> int:
        if state["error"]:
            self.stderr.write(f"error: {state['error']}")
        for warning in state["warnings"]:
            self.stderr.write(f"warning: {warning.get('code')}: {warning.get('detail')}")
        if state["phase"] != Phase.COMPLETED:
            return 1
        return EXIT_WARNING if state["warnings"] else 0

    @staticmethod
    def _phase_line(record: dict) -> str:
        figures = record["figures"]
        shown = {
            key: figures[key]
            for key in ("vram_before_mib", "used_mib", "free_mib", "seconds")
            if key in figures
        }
        took = ""
        if record["finished_at"]:
            took = f" {(record['finished_at'] - record['started_at']).total_seconds():.2f}s"
        extras = " ".join(f"{key}={value}" for key, value in shown.items())
        detail = f" — {record['detail']}" if record["detail"] else ""
        return f"  {record['name']:<24} {record['outcome']:<9}{took} {extras}{detail}".rstrip()
