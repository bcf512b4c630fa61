from django.apps import AppConfig


class ContainersConfig(AppConfig):
    name = "containers"
    verbose_name = "Containers"

    def ready(self) -> None:
        from containers import reality, services
        from gaiaorch import config, jobs, ticker

        ticker.follower(name="containers.follow_docker_events")(reality.follow)
        ticker.every(lambda: config.current().docker.reconcile_interval_seconds, name="containers.reconcile")(
            reality.reconcile
        )
        jobs.schedule_recovery(services.OPERATIONS)
