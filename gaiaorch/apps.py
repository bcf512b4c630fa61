from django.apps import AppConfig


class GaiaorchConfig(AppConfig):
    name = "gaiaorch"
    verbose_name = "gaiaorch"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib import admin
        from django.db.backends.signals import connection_created
        from django_q.signals import post_spawn

        from gaiaorch import checks, queues, services, ticker  # noqa: F401 (checks registers itself)
        from gaiaorch.admin_mixins import audit_editable_admins
        from gaiaorch.private_files import restrict_sqlite_files

        audit_editable_admins(admin.site)  # every app's admin is registered by now (admin's ready)
        connection_created.connect(restrict_sqlite_files, dispatch_uid="gaiaorch.restrict_sqlite_files")
        post_spawn.connect(queues.keep_worker_connections, dispatch_uid="gaiaorch.keep_worker_connections")

        ticker.every(settings.WORKER_HEARTBEAT_INTERVAL_SECONDS, name="gaiaorch.worker_heartbeat")(
            services.enqueue_worker_heartbeat
        )
