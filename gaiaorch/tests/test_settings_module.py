"""The real settings module, loaded in a child process with a given environment."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings; django.setup();"
    "print(json.dumps({'port': settings.PORT, 'backend': settings.GPU_BACKEND,"
    " 'engine': settings.DATABASES['default']['ENGINE'],"
    " 'layer': settings.CHANNEL_LAYERS['default']['BACKEND'],"
    " 'broker': 'redis' if 'redis' in settings.Q_CLUSTER else 'orm'}))"
)


def load_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {
        "DJANGO_SETTINGS_MODULE": "gaiaorch.settings",
        "GAIAORCH_VAR_DIR": str(tmp_path),
        "PATH": "/usr/bin",
    }
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environ, capture_output=True, text=True
    )


def test_it_defaults_to_the_embedded_stack(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    result = load_settings(tmp_path, GAIAORCH_CONFIG=str(config))
    assert json.loads(result.stdout) == {
        "port": 6410,
        "backend": "auto",
        "engine": "gaiaorch.sqlite3",
        "layer": "channels.layers.InMemoryChannelLayer",
        "broker": "orm",
    }


def test_it_switches_to_postgres_and_redis_from_urls(tmp_path):
    result = load_settings(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/0",
        GAIAORCH_PORT="7300",
    )
    assert json.loads(result.stdout) == {
        "port": 7300,
        "backend": "auto",
        "engine": "django.db.backends.postgresql",
        "layer": "channels_redis.core.RedisChannelLayer",
        "broker": "redis",
    }


def test_it_lets_the_environment_override_the_shipped_yaml(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("orchestrator:\n  port: 7001\ngpu:\n  backend: fake\n")
    from_yaml = json.loads(load_settings(tmp_path, GAIAORCH_CONFIG=str(config)).stdout)
    from_env = json.loads(load_settings(tmp_path, GAIAORCH_CONFIG=str(config), GAIAORCH_PORT="7002").stdout)
    assert (from_yaml["port"], from_yaml["backend"]) == (7001, "fake")
    assert (from_env["port"], from_env["backend"]) == (7002, "fake")


def test_it_refuses_to_start_with_a_nonsense_setting(tmp_path):
    result = load_settings(tmp_path, GAIAORCH_DEBUG="perhaps")
    assert result.returncode != 0
    assert "ImproperlyConfigured: GAIAORCH_DEBUG must be one of" in result.stderr
