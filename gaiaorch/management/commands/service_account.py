from django.core.management.base import BaseCommand

from gaiaorch.auth import ensure_service_account


class Command(BaseCommand):
    help = "Create (or find) a service account for a GAIA service and print its API token."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the service's requester name, e.g. gaia-study")
        parser.add_argument("--rotate", action="store_true", help="replace the existing token")

    def handle(self, *args, name: str, rotate: bool, **options):
        self.stdout.write(ensure_service_account(name, rotate=rotate))
