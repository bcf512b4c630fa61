from django.db import migrations, models

from gaiaorch.redaction import public_origin, public_webhook_name


def keep_only_origins(apps, schema_editor):
    """Stored URLs become their origin; rows of unnamed webhooks (named after their URL) take the
    name such a webhook gets now, so their pending retries still find it."""
    WebhookDelivery = apps.get_model("notifications", "WebhookDelivery")
    for delivery in WebhookDelivery.objects.exclude(url__regex=r"^[a-z]+://[^/?#@]*$").iterator():
        if delivery.webhook == delivery.url[:200]:
            delivery.webhook = public_webhook_name(delivery.url)[:200]
        delivery.url = public_origin(delivery.url)
        delivery.save(update_fields=["webhook", "url"])


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_webhooks_and_oracle_bursts"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhookdelivery",
            name="url",
            field=models.CharField(
                help_text="Scheme, host and port of the webhook's URL (its path may be a secret)",
                max_length=500,
            ),
        ),
        migrations.RunPython(keep_only_origins, migrations.RunPython.noop),
    ]
