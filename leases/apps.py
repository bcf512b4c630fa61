from django.apps import AppConfig


class LeasesConfig(AppConfig):
    name = "leases"
    verbose_name = "GPU leases"

    def ready(self):
        from django.conf import settings

        from gaiaorch import ticker
        from leases import services

        ticker.every(settings.LEASE_REAPER_INTERVAL_SECONDS, name="leases.reap")(services.reap)
