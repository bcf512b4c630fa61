from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from gaiaorch import ticker
        from notifications import delivery, services
        from notifications.conf import notification_settings

        notification_settings()  # a broken notifications section stops start-up, not a delivery
        ticker.every(1.0, name="notifications.close_expired_oracle_bursts")(
            services.close_expired_oracle_bursts
        )
        ticker.follower(name="notifications.deliver_webhooks")(delivery.run)
