import argparse

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from gaiaorch.auth import ensure_service_account, revoke_token


class Command(BaseCommand):
    help = (
        "Create (or find) a service account for a GAIA service and print its new API token. "
        "Tokens are stored hashed: a key is printed once, when it is made."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the service's requester name, e.g. gaia-study, or e.g. prometheus")
        parser.add_argument(
            "--rotate", action="store_true", help="replace the token (the old key stops working)"
        )
        parser.add_argument(
            "--revoke",
            action="store_true",
            help="take the account's token away (its key stops working; --rotate gives it a new one)",
        )
        parser.add_argument(
            "--read-only",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="an account that reads everything and never writes (a metrics scraper); "
            "--no-read-only lets it write again. Applies to an existing account too, keeping its key.",
        )

    def handle(self, *args, name: str, rotate: bool, revoke: bool, read_only: bool | None, **options):
        if revoke:
            self.revoke(name)
            return
        key = ensure_service_account(name, rotate=rotate, read_only=read_only, actor="manage.py")
        if read_only is not None:
            told = "is read-only: it reads and never writes" if read_only else "may write"
            self.stderr.write(f"{name} {told}.")
        if key is not None:
            self.stdout.write(key)
            return
        prefix = get_user_model().objects.get(username=name).api_token.prefix
        if read_only is None:
            raise CommandError(
                f"{name} already has a token ({prefix}…); it is stored hashed and cannot be shown again. "
                "Pass --rotate for a new one (the old key stops working)."
            )
        self.stderr.write(f"Its token ({prefix}…) is unchanged.")

    def revoke(self, name: str) -> None:
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise CommandError(f"There is no account {name}.")
        if not revoke_token(user, actor="manage.py"):
            raise CommandError(f"{name} has no token to revoke.")
        self.stderr.write(f"{name}'s token is revoked: its key no longer works.")
