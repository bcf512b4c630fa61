"""The wire end to end: a real daphne serving gaiaorch, clients contending over HTTP."""

import pytest

from bench.leases_http import cycle, drive, helper, server_env, start_daphne

pytestmark = pytest.mark.slow

CLIENTS = 8


def test_it_loses_no_grant_with_eight_clients_contending_over_http(tmp_path):
    env = server_env(tmp_path, None, CLIENTS)
    tokens = helper(env, "prepare", str(CLIENTS))
    server, base = start_daphne("console.asgi:application", env)
    try:
        outcome, _ = drive(base, tokens, CLIENTS, seconds=3, one=cycle)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert outcome.errors == []
    assert len(outcome.latencies) > CLIENTS
    assert len(set(outcome.tokens)) == len(outcome.tokens)
    left = helper(env, "leftovers")
    assert left == {"live": 0, "released": len(outcome.tokens) + CLIENTS}  # + one warm-up each
