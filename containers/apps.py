from django.apps import AppConfig


class ContainersConfig(AppConfig):
    name = "containers"
    verbose_name = "Containers"

    def ready(self) -> None:
        from containers import config, reality, services
        from gaiaorch import jobs, ticker

        parsed = config.current()  # a broken services/stacks section stops start-up here
        ticker.follower(name="containers.follow_docker_events")(reality.follow)
        ticker.every(parsed.reconcile_interval_seconds, name="containers.reconcile")(reality.reconcile)
        jobs.schedule_recovery(services.OPERATIONS)
