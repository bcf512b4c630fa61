from django.apps import AppConfig


class HandoffsConfig(AppConfig):
    name = "handoffs"

    def ready(self):
        from gaiaorch import config, jobs, ticker
        from handoffs import services, tasks

        # Within stale_after + recovery_interval of a worker being alive, a dead worker's handoff resumes.
        jobs.schedule_recovery(services.HANDOFFS)
        ticker.every(lambda: config.current().gpu.tenant_interval_seconds, name="handoffs.tenants")(
            tasks.watch_tenants
        )
        ticker.follower(name="handoffs.reclaims")(tasks.retry_reclaims)
