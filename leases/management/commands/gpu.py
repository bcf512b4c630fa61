"""manage.py gpu status | acquire | release | wait | heartbeat | revoke  [--json]"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gaiaorch.errors import DomainError
from gaiaorch.serializers import render
from gaiaorch_client import contract
from leases import services
from leases.api.serializers import LeaseSerializer
from leases.api.views import acquire_body


def _lease_args(parser) -> None:
    parser.add_argument("lease_id", help="the lease's id (a UUID)")


def _number_or_word(field: contract.Field):
    """argparse's type for a contract field that takes a word beside a number (--gpu any)."""

    def parse(value: str) -> int | str:
        if value in field.words:
            return value
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number or one of {list(field.words)}") from None

    return parse


def _field_arg(parser, field: contract.Field, **overrides: Any) -> None:
    """One option of gaiaorch_client.contract's fields (an optional flag for a bool)."""
    if field.kind is bool:
        parser.add_argument(field.cli_option, action="store_true", dest=field.name, help=field.help)
        return
    default = None if field.required else field.default
    kind = _number_or_word(field) if field.words else field.kind
    options = {"type": kind, "dest": field.name, "default": default, "help": field.help}
    parser.add_argument(field.cli_option, **{**options, **overrides})


def _acquire_args(parser, requester_required: bool = True) -> None:
    """The acquire fields; --requester is required (unless waiting on --lease), --reason may be left out."""
    for field in contract.ACQUIRE:
        if field.name == "requester":
            _field_arg(parser, field, required=requester_required)
        elif field.name == "reason":
            _field_arg(parser, field, default="")
        else:
            _field_arg(parser, field)


class Command(BaseCommand):
    help = "Inspect and change GPU leases from the shell (the same rules as the API)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON instead of text")
        parser.add_argument("--actor", default=f"cli:{getpass.getuser()}", help="name in the audit log")
        commands = parser.add_subparsers(dest="command", required=True)
        status = commands.add_parser("status", help="holders, queues and measured memory")
        status.add_argument("--gpu", type=int)
        _acquire_args(commands.add_parser("acquire", help="ask for a GPU (never blocks)"))
        wait = commands.add_parser("wait", help="ask for a GPU, or wait on --lease, until granted")
        _acquire_args(wait, requester_required=False)
        wait.add_argument("--lease", dest="lease_id", help="wait on an existing queue entry")
        for field in contract.WAIT:
            _field_arg(wait, field)
        release = commands.add_parser("release", help="release a lease (grants the next waiter)")
        _lease_args(release)
        release.add_argument("--reason", default="")
        _lease_args(commands.add_parser("heartbeat", help="renew a lease's TTL"))
        revoke = commands.add_parser("revoke", help="take a lease away (operator)")
        _lease_args(revoke)
        revoke.add_argument("--reason", required=True)

    def handle(self, *args, command: str, as_json: bool, actor: str, **options):
        try:
            body = getattr(self, f"do_{command}")(actor=actor, **options)
        except DomainError as exc:
            if as_json:
                self.stdout.write(_dumps(exc.body()))
            raise CommandError(exc.detail) from None
        self.stdout.write(_dumps(body) if as_json else _text(command, body))

    def do_status(self, *, actor: str, gpu: int | None, **_) -> dict[str, Any]:
        return services.gpu_status(gpu) if gpu is not None else services.gpu_status()

    def do_acquire(self, *, actor: str, **options) -> dict[str, Any]:
        return acquire_body(services.acquire(**_acquire_options(options), actor=actor))[0]

    def do_wait(self, *, actor: str, lease_id: str | None, **options) -> dict[str, Any]:
        if lease_id:
            entry = services.attend(lease_id)
        elif options["requester"]:
            entry = services.acquire(**_acquire_options(options), actor=actor)
        else:
            raise CommandError("give --requester (and --reason) or --lease")
        result = asyncio.run(
            services.wait_out(
                entry,
                timeout_seconds=options["timeout_seconds"],
                keep_queued=options["keep_queued"],
                actor=actor,
            )
        )
        return acquire_body(result)[0]

    def do_release(self, *, actor: str, lease_id: str, reason: str, **_) -> dict[str, Any]:
        return render(LeaseSerializer, services.release(lease_id, actor=actor, reason=reason))

    def do_heartbeat(self, *, actor: str, lease_id: str, **_) -> dict[str, Any]:
        return render(LeaseSerializer, services.heartbeat(lease_id, actor=actor))

    def do_revoke(self, *, actor: str, lease_id: str, reason: str, **_) -> dict[str, Any]:
        return render(LeaseSerializer, services.revoke(lease_id, actor=actor, reason=reason))


def _acquire_options(options: dict[str, Any]) -> dict[str, Any]:
    return contract.acquire_arguments(options)


def _dumps(body: Any) -> str:
    return json.dumps(body, indent=2, default=str)


def _text(command: str, body: dict[str, Any]) -> str:
    if command == "status":
        return "\n".join(_gpu_lines(gpu) for gpu in body.get("gpus", [body]))
    if "message" in body:
        chosen = f"\nchosen: {body['choice']}" if body.get("choice") else ""
        return f"{body['message']}{chosen}\nlease {body['lease_id']} ({body['status']})"
    return f"lease {body['lease_id']}: {body['requester']} on GPU {body['gpu']} is {body['status']}"


def _gpu_lines(gpu: dict[str, Any]) -> str:
    memory = gpu["memory"]
    measured = (
        f"{memory['used_mb']}/{memory['total_mb']} MiB used"
        if memory["used_mb"] is not None
        else f"memory not measured ({gpu['telemetry_reason']})"
    )
    holder = (
        f"held by {gpu['owner']} (token {gpu['fencing_token']}, lease {gpu['lease_id']}): {gpu['reason']}"
        if gpu["owner"]
        else "free"
    )
    lines = [f"GPU {gpu['gpu']}: {holder}; {measured}"]
    lines += [
        f"  {entry['position']}. {entry['requester']} (priority {entry['priority']}): {entry['waiting_for']}"
        for entry in gpu["queue"]
    ]
    return "\n".join(lines)
