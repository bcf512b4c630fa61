from django.core.management import call_command
from rest_framework.authtoken.models import Token

from conftest import client_for_token


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
    assert Token.objects.get(key=token).user.username == "gaia-web"
    response = client_for_token(token).get("/api/events/")
    assert response.status_code == 200


def test_it_keeps_the_token_unless_asked_to_rotate(db, capsys):
    call_command("service_account", "gaia-web")
    first = capsys.readouterr().out.strip()
    call_command("service_account", "gaia-web")
    assert capsys.readouterr().out.strip() == first
    call_command("service_account", "gaia-web", "--rotate")
    assert capsys.readouterr().out.strip() != first


def test_it_creates_an_operator_once(db, capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("ensure_operator")
    assert "Created operator 'admin'" in capsys.readouterr().out
    password = (tmp_path / "admin-password").read_text().strip()
    from django.contrib.auth import authenticate

    assert authenticate(username="admin", password=password) is not None
    call_command("ensure_operator")
    assert "An operator account exists" in capsys.readouterr().out
