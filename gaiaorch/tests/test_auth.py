from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from conftest import client_for_token
from gaiaorch.auth import digest_of, ensure_service_account, issue_token, user_for_key


def test_it_refuses_an_unauthenticated_write_with_401(anonymous_client, db):
    response = anonymous_client.post("/api/events/", {}, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


def test_it_refuses_a_bad_token_with_401(db):
    response = client_for_token("f" * 40).post("/api/events/", {}, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_it_creates_a_service_account_and_prints_a_working_token(db, capsys):
    call_command("service_account", "gaia-web")
    token = capsys.readouterr().out.strip()
    assert user_for_key(token).username == "gaia-web"
    response = client_for_token(token).post("/gpu/acquire", {}, format="json")
    assert response.status_code == 400  # authenticated: refused for its empty body, not with 401


def test_it_shows_a_key_only_when_it_is_made(db, capsys):
    call_command("service_account", "gaia-web")
    first = capsys.readouterr().out.strip()
    with pytest.raises(CommandError, match="--rotate"):
        call_command("service_account", "gaia-web")
    assert first not in capsys.readouterr().out
    assert user_for_key(first) is not None  # the existing key keeps working
    call_command("service_account", "gaia-web", "--rotate")
    second = capsys.readouterr().out.strip()
    assert second != first
    assert user_for_key(first) is None and user_for_key(second).username == "gaia-web"


def test_it_mints_a_read_only_account_that_reads_but_never_writes(db, capsys, settings):
    settings.OPEN_READS = False
    call_command("service_account", "prometheus", "--read-only")
    scraper = client_for_token(capsys.readouterr().out.strip())
    assert scraper.get("/metrics").status_code == 200  # reads are closed to anonymous callers only
    assert scraper.get("/api/events/").status_code == 200
    refused = scraper.post("/gpu/acquire", {"requester": "gaia-web", "reason": "x"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["missing_right"] == "write"


def test_it_makes_an_existing_account_read_only_and_writable_again_keeping_its_key(db, capsys):
    key = ensure_service_account("gaia-web")
    call_command("service_account", "gaia-web", "--read-only")
    assert "read-only" in capsys.readouterr().err
    web = client_for_token(key)
    assert web.post("/gpu/acquire", {}, format="json").status_code == 403  # before reading the body
    call_command("service_account", "gaia-web", "--no-read-only")
    assert "may write" in capsys.readouterr().err
    assert web.post("/gpu/acquire", {}, format="json").status_code == 400


def test_it_never_lets_a_read_only_account_be_an_operator(db, django_user_model):
    django_user_model.objects.create_user("grafana", is_staff=True)
    ensure_service_account("grafana", read_only=True)
    assert django_user_model.objects.get(username="grafana").is_staff is False


@pytest.mark.django_db(transaction=True)  # committed, so the rows are in the database file
def test_it_stores_a_digest_of_each_token_never_the_key(settings):
    key = ensure_service_account("gaia-web")
    database = Path(connection.settings_dict["NAME"])
    stored = b"".join(path.read_bytes() for path in (database, Path(f"{database}-wal")) if path.exists())
    assert digest_of(key).encode() in stored  # the scan sees the token's row
    assert key.encode() not in stored


def test_it_refuses_the_token_of_a_deactivated_account(db):
    key = ensure_service_account("gaia-web")
    get_user_model().objects.filter(username="gaia-web").update(is_active=False)
    assert user_for_key(key) is None
    assert client_for_token(key).post("/gpu/acquire", {}, format="json").status_code == 401


@pytest.mark.django_db(transaction=True)  # SQLite's schema editor works outside a transaction only
def test_it_keeps_keys_made_before_hashing_working(django_user_model):
    """The data migration turns stored plain keys into digests and drops the old table."""
    from django.apps import apps

    migration = __import__("gaiaorch.migrations.0002_api_tokens", fromlist=["hash_existing_tokens"])
    web = django_user_model.objects.create_user("gaia-web")
    old_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created datetime, user_id integer)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, '2026-01-01 00:00:00', %s)", [old_key, web.pk]
        )
    with connection.schema_editor() as editor:
        migration.hash_existing_tokens(apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    assert user_for_key(old_key) == web
    assert web.api_token.prefix == old_key[:8]


def test_it_gives_a_staff_user_a_token_once(db, operator):
    key = issue_token(operator)
    assert user_for_key(key) == operator
    assert user_for_key(issue_token(operator)) == operator
    assert user_for_key(key) is None  # a new key replaces the old one


def test_it_creates_an_operator_once(db, capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("ensure_operator")
    assert "Created operator 'admin'" in capsys.readouterr().out
    password = (tmp_path / "admin-password").read_text().strip()
    from django.contrib.auth import authenticate

    assert authenticate(username="admin", password=password) is not None
    call_command("ensure_operator")
    assert "An operator account exists" in capsys.readouterr().out
