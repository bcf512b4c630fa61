from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from gaiaorch import ticker
        from notifications import delivery, services

        ticker.every(1.0, name="notifications.close_expired_oracle_bursts")(
            services.close_expired_oracle_bursts
        )
        ticker.follower(name="notifications.deliver_webhooks")(delivery.run)
