from django.apps import AppConfig


class HandoffsConfig(AppConfig):
    name = "handoffs"

    def ready(self):
        from gaiaorch import jobs, ticker
        from handoffs import config, services, tasks

        settings = config.load()
        # Within stale_after + recovery_interval of a worker being alive, a dead worker's handoff resumes.
        jobs.schedule_recovery(services.HANDOFFS)
        ticker.every(settings.baseline_interval_seconds, name="handoffs.baseline")(
            tasks.sample_idle_baselines
        )
