import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from gaiaorch import event_types, events
from gaiaorch.private_files import create_private


class Command(BaseCommand):
    help = (
        "Make sure an operator can log in to the admin: when no superuser exists, create one "
        "(GAIAORCH_ADMIN_USER, default 'admin'; password from GAIAORCH_ADMIN_PASSWORD or generated "
        "and written to var/admin-password)."
    )

    def handle(self, *args, **options):
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            self.stdout.write("An operator account exists; log in at /admin/.")
            return
        username = os.environ.get("GAIAORCH_ADMIN_USER", "admin")
        password = os.environ.get("GAIAORCH_ADMIN_PASSWORD") or secrets.token_urlsafe(18)
        with transaction.atomic():
            users.create_superuser(username=username, email="", password=password)
            event_types.record(
                events.ACCOUNT_CREATED,
                f"Operator account {username} created",
                actor="manage.py",
                data={"account": username, "read_only": False},
                subject=("account", username),
            )
        password_file = settings.VAR_DIR / "admin-password"
        password_file.unlink(missing_ok=True)  # left by an earlier operator; replaced, never reopened
        create_private(password_file, password + "\n")
        self.stdout.write(f"Created operator '{username}'; password in {password_file}. Log in at /admin/.")
