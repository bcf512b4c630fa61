from django.apps import AppConfig


class HandoffsConfig(AppConfig):
    name = "handoffs"

    def ready(self):
        from gaiaorch import config, ticker
        from handoffs import tasks

        # Within stale_after + this interval of a worker being alive, a dead worker's handoff resumes.
        ticker.every(lambda: config.current().handoffs.recovery_interval_seconds, name="handoffs.recover")(
            tasks.recover_stale_handoffs
        )
        ticker.every(lambda: config.current().gpu.baseline_interval_seconds, name="handoffs.baseline")(
            tasks.sample_idle_baselines
        )
