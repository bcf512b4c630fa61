"""gaiaorch's ASGI application with two probes for the handover rows of bench/leases_http.py.

- the moment each decision's commit wakes this process's waits (`WAITS.notify`, run by the
  decision's commit hook right after its COMMIT returns), with the leases it changed;
- the moment each `/gpu/wait` answer starts to be sent (`http.response.start`), with its status
  and the lease id of its body.

Both are read on CLOCK_MONOTONIC, the clock the benchmark's clients read too (one clock for every
process of the machine), and written as JSON lines to $HANDOVER_PROBE_OUT when the server exits.
The probes add a list append per commit and per answer; nothing else changes.
"""

from __future__ import annotations

import atexit
import json
import os
import time

from console.asgi import application as gaiaorch
from leases import services

RECORDS: list[tuple] = []


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _probe_commits() -> None:
    notify = services.WAITS.notify

    def probed(*keys, **handed):
        RECORDS.append(("commit", now(), keys))
        return notify(*keys, **handed)

    services.WAITS.notify = probed  # type: ignore[method-assign]  # a benchmark's probe


async def application(scope, receive, send):
    if scope["type"] != "http" or scope["path"] != "/gpu/wait":
        return await gaiaorch(scope, receive, send)
    started: list = []

    async def probed_send(message):
        if message["type"] == "http.response.start":
            started[:] = [now(), message["status"]]
        elif message["type"] == "http.response.body" and started:
            lease_id = json.loads(message.get("body") or b"{}").get("lease_id")
            RECORDS.append(("answer", started[0], started[1], lease_id))
        await send(message)

    return await gaiaorch(scope, receive, probed_send)


def _write() -> None:
    with open(os.environ["HANDOVER_PROBE_OUT"], "w") as out:
        for record in RECORDS:
            out.write(json.dumps(record) + "\n")


_probe_commits()
atexit.register(_write)
