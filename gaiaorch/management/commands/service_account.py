from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from gaiaorch.auth import ensure_service_account


class Command(BaseCommand):
    help = (
        "Create (or find) a service account for a GAIA service and print its new API token. "
        "Tokens are stored hashed: a key is printed once, when it is made."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the service's requester name, e.g. gaia-study")
        parser.add_argument(
            "--rotate", action="store_true", help="replace the token (the old key stops working)"
        )

    def handle(self, *args, name: str, rotate: bool, **options):
        key = ensure_service_account(name, rotate=rotate)
        if key is None:
            prefix = get_user_model().objects.get(username=name).api_token.prefix
            raise CommandError(
                f"{name} already has a token ({prefix}…); it is stored hashed and cannot be shown again. "
                "Pass --rotate for a new one (the old key stops working)."
            )
        self.stdout.write(key)
