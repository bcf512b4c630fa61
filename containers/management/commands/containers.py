"""`manage.py containers status | stop-live | start-live | start-candidate [--gpu] | stop-candidate |
swap SERVICE [--to candidate|live]`, each operation with `--wait` to follow it to its end."""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from containers import services
from containers.models import Operation, OperationKind, SwapTarget
from gaiaorch.errors import DomainError

STACK_COMMANDS = {
    "stop-live": OperationKind.LIVE_STOP,
    "start-live": OperationKind.LIVE_START,
    "start-candidate": OperationKind.CANDIDATE_START,
    "stop-candidate": OperationKind.CANDIDATE_STOP,
}
ACTOR = "cli"


class Command(BaseCommand):
    help = "Show container status, or run a stack operation / swap through the worker."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True)
        commands.add_parser("status", help="observed state of every configured service (JSON)")
        for name in STACK_COMMANDS:
            sub = commands.add_parser(name)
            self._wait_options(sub)
            if name == "start-candidate":
                sub.add_argument(
                    "--gpu", action="store_true", help="start with the GPU (lease + device request)"
                )
        swap = commands.add_parser("swap", help="move the live name of SERVICE to the candidate or back")
        swap.add_argument("service")
        swap.add_argument("--to", choices=SwapTarget.values, default=SwapTarget.CANDIDATE)
        self._wait_options(swap)

    def _wait_options(self, parser) -> None:
        parser.add_argument("--wait", action="store_true", help="follow the operation until it ends")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits at most")

    def handle(self, *args, **options):
        command = options["command"]
        if command == "status":
            self.stdout.write(json.dumps(services.status(), indent=2, default=str))
            return
        try:
            operation = self._request(command, options)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        self.stdout.write(
            f"operation #{operation.id} ({operation.kind}) queued: {', '.join(operation.services)}"
        )
        if options["wait"]:
            self._follow(operation.id, options["timeout"])

    def _request(self, command: str, options) -> Operation:
        if command == "swap":
            return services.request_swap(options["service"], options["to"], actor=ACTOR)
        return services.request_stack_operation(
            STACK_COMMANDS[command], actor=ACTOR, gpu_enabled=options.get("gpu", False)
        )

    def _follow(self, operation_id: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shown = 0
        while time.monotonic() < deadline:
            detail = services.operation_detail(services.operation(operation_id))
            for step in detail["steps"][shown:]:
                if step["outcome"] != "running":
                    self.stdout.write(f"  {step['outcome']:9} {step['name']}: {step['detail']}")
                    shown += 1
            if detail["status"] in ("succeeded", "failed"):
                if detail["status"] == "failed":
                    raise CommandError(f"operation #{operation_id} failed: {detail['error']}")
                self.stdout.write(f"operation #{operation_id} succeeded")
                return
            time.sleep(0.5)
        raise CommandError(f"operation #{operation_id} still running after {timeout:.0f} s")
