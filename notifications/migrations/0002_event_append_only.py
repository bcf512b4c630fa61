"""The database itself refuses to rewrite history: UPDATE on an event raises."""

from django.db import migrations

SQLITE_TRIGGER = """
CREATE TRIGGER notifications_event_no_update BEFORE UPDATE ON notifications_event
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""
POSTGRES_TRIGGER = """
CREATE OR REPLACE FUNCTION notifications_event_refuse_update() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'events are append-only'; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER notifications_event_no_update BEFORE UPDATE ON notifications_event
FOR EACH ROW EXECUTE FUNCTION notifications_event_refuse_update();
"""
DROP = {
    "sqlite": "DROP TRIGGER IF EXISTS notifications_event_no_update;",
    "postgresql": "DROP TRIGGER IF EXISTS notifications_event_no_update ON notifications_event;"
    "DROP FUNCTION IF EXISTS notifications_event_refuse_update();",
}


def create_trigger(apps, schema_editor):
    sql = {"sqlite": SQLITE_TRIGGER, "postgresql": POSTGRES_TRIGGER}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql)


def drop_trigger(apps, schema_editor):
    sql = DROP.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial")]
    operations = [migrations.RunPython(create_trigger, drop_trigger)]
