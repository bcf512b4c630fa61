from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from gaiaorch import ticker
        from notifications import services

        ticker.every(1.0, name="notifications.close_expired_oracle_bursts")(
            services.close_expired_oracle_bursts
        )
        ticker.every(0.5, name="notifications.dispatch_due_deliveries")(services.dispatch_due_deliveries)
