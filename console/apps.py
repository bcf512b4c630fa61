from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ConsoleConfig(AppConfig):
    """The top layer: the operator dashboard, /status, /ready, /metrics, GET / and the root URLconf."""

    name = "console"
    verbose_name = "Operator console"

    def ready(self) -> None:
        # Each app's actions.py registers its operator actions (gaiaorch.actions), as admin.py
        # registers its model admins; the console renders the confirmation page of each.
        autodiscover_modules("actions")
