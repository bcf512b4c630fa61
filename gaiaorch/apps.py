from django.apps import AppConfig


class GaiaorchConfig(AppConfig):
    name = "gaiaorch"
    verbose_name = "gaiaorch"

    def ready(self) -> None:
        from django.conf import settings

        from gaiaorch import checks, services, ticker  # noqa: F401 (checks registers itself)

        ticker.every(settings.WORKER_HEARTBEAT_INTERVAL_SECONDS, name="gaiaorch.worker_heartbeat")(
            services.enqueue_worker_heartbeat
        )
