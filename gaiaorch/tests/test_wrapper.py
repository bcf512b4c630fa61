"""scripts/gaiaorch start | status | stop, as an operator uses it."""

import os
import subprocess
from pathlib import Path

import pytest

from gaiaorch.tests.test_runstack import free_port

ROOT = Path(__file__).resolve().parents[2]


def wrapper(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["scripts/gaiaorch", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_it_starts_reports_and_stops_the_service(tmp_path):
    env = {**os.environ, "GAIAORCH_VAR_DIR": str(tmp_path), "GAIAORCH_PORT": str(free_port())}
    try:
        started = wrapper(env, "start")
        assert started.returncode == 0, started.stderr
        assert "gaiaorch running" in started.stdout
        assert "already running" in wrapper(env, "start").stdout

        status = wrapper(env, "status")
        assert status.returncode == 0
        assert '"status":"healthy"' in status.stdout

        stopped = wrapper(env, "stop")
        assert stopped.returncode == 0 and "gaiaorch stopped" in stopped.stdout
        after = wrapper(env, "status")
        assert after.returncode == 3 and "not running" in after.stdout
    finally:
        wrapper(env, "stop")


def test_it_explains_its_usage():
    result = wrapper(dict(os.environ), "restart-everything")
    assert result.returncode == 2
    assert "usage: scripts/gaiaorch start|stop|status|logs" in result.stderr
