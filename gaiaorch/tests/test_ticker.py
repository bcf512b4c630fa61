import threading

import pytest

from gaiaorch import ticker

# close_old_connections() runs after every job, as it does in the ticker process.
pytestmark = pytest.mark.django_db


def test_it_runs_each_periodic_job_on_its_cadence(monkeypatch):
    calls = []
    monkeypatch.setattr(ticker, "PERIODIC", {})
    ticker.every(1.0, name="fast")(lambda: calls.append("fast"))
    ticker.every(5.0, name="slow")(lambda: calls.append("slow"))
    for now in (0.0, 0.5, 1.0, 2.0, 5.0):
        ticker.run_due(now)
    assert calls == ["fast", "slow", "fast", "fast", "fast", "slow"]


def test_it_keeps_running_other_jobs_when_one_raises(monkeypatch):
    calls = []
    monkeypatch.setattr(ticker, "PERIODIC", {})

    def broken():
        raise RuntimeError("boom")

    ticker.every(1.0, name="broken")(broken)
    ticker.every(1.0, name="fine")(lambda: calls.append("fine"))
    ticker.run_due(0.0)
    assert calls == ["fine"]


def test_it_restarts_a_follower_that_fails(monkeypatch):
    runs = []
    stop = threading.Event()

    def flaky(stop_event):
        runs.append(1)
        if len(runs) == 3:
            stop_event.set()
        raise ConnectionError("docker went away")

    monkeypatch.setattr(ticker, "MAX_BACKOFF_SECONDS", 0.01)
    ticker.keep_following("flaky", flaky, stop)
    assert len(runs) == 3
