import hashlib
from datetime import UTC

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django.utils.dateparse import parse_datetime

OLD_TABLE = "authtoken_token"  # rest_framework.authtoken's, which held every key in plain text


def hash_existing_tokens(apps, schema_editor):
    """Keep every key made before tokens were hashed working: store its digest, then drop the
    old table (and its migration records, as if that app had never been installed)."""
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("gaiaorch", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, created, user_id FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        ApiToken(
            user_id=user_id,
            digest=hashlib.sha256(key.encode()).hexdigest(),
            prefix=key[:8],
            created_at=_aware(created),
        )
        for key, created, user_id in rows
    )
    if connection.vendor == "sqlite":
        schema_editor.execute("PRAGMA secure_delete = ON")  # the dropped pages are zeroed, not left free
    schema_editor.execute(f"DROP TABLE {OLD_TABLE}")
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()


def _aware(created):
    """SQLite hands back the stored UTC time as naive text; PostgreSQL an aware datetime."""
    created = parse_datetime(created) if isinstance(created, str) else created
    return timezone.make_aware(created, UTC) if timezone.is_naive(created) else created


class Migration(migrations.Migration):
    dependencies = [
        ("gaiaorch", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("digest", models.CharField(help_text="SHA-256 of the key, hex", max_length=64, unique=True)),
                (
                    "prefix",
                    models.CharField(
                        help_text="The key's first characters, to tell keys apart", max_length=8
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_token",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop),
    ]
