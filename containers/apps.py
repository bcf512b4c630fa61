from django.apps import AppConfig


class ContainersConfig(AppConfig):
    name = "containers"
    verbose_name = "Containers"

    def ready(self) -> None:
        from containers import reality, services
        from gaiaorch import config, ticker

        ticker.follower(name="containers.follow_docker_events")(reality.follow)
        ticker.every(lambda: config.current().docker.reconcile_interval_seconds, name="containers.reconcile")(
            reality.reconcile
        )
        ticker.every(5.0, name="containers.recover_stale_operations")(services.recover_stale_operations)
