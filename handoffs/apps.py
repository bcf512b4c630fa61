from django.apps import AppConfig


class HandoffsConfig(AppConfig):
    name = "handoffs"

    def ready(self):
        from gaiaorch import ticker
        from handoffs import config, tasks

        settings = config.load()
        # Within stale_after + this interval of a worker being alive, a dead worker's handoff resumes.
        ticker.every(settings.recovery_interval_seconds, name="handoffs.recover")(
            tasks.recover_stale_handoffs
        )
        ticker.every(settings.baseline_interval_seconds, name="handoffs.baseline")(
            tasks.sample_idle_baselines
        )
