from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from gaiaorch import event_types, ticker
        from notifications import delivery, services

        event_types.install_writer(services.record_event)
        event_types.load()

        ticker.every(1.0, name="notifications.close_expired_oracle_bursts")(
            services.close_expired_oracle_bursts
        )
        ticker.follower(name="notifications.deliver_webhooks")(delivery.run)
