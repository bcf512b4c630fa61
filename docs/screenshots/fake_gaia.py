"""Fake gaia-core (6415), gaia-prime (7777) and gaia-study (8766) on 127.0.0.1 for the console demo.

    python docs/screenshots/fake_gaia.py FAKE_GPU_FILE [STUDY_READY_DELAY_SECONDS]

Prime's /sleep really frees VRAM in the fake GPU file; gaia-study answers /study/gpu-ready only
after the delay, so a prime_to_study handoff stays in `signaling_recipient` long enough to look at.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDLE_MIB = 1210


def set_used(path: str, index: int, used_mib: int) -> None:
    with open(path) as file:
        document = json.load(file)
    document["gpus"][index]["used_mib"] = used_mib
    with open(path + ".tmp", "w") as file:
        json.dump(document, file)
    os.replace(path + ".tmp", path)


def answering(routes: dict):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            route = routes.get(self.path.split("?")[0])
            body = json.dumps(route() if route else {"ok": True, "message": "fine"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    return Handler


def after(seconds: float, action):
    def run():
        time.sleep(seconds)
        return action()

    return run


def main(gpu_file: str, study_delay: str = "120") -> None:
    def prime_sleeps():
        set_used(gpu_file, 0, IDLE_MIB)
        return {"ok": True, "message": "sleeping"}

    servers = {
        6415: {"/gpu/release": after(2, lambda: {"ok": True, "message": "released", "state": "released"})},
        7777: {"/sleep": after(2, prime_sleeps)},
        8766: {"/study/gpu-ready": after(float(study_delay), lambda: {"ok": True, "gpu_available": True})},
    }
    for port, routes in servers.items():
        server = ThreadingHTTPServer(("127.0.0.1", port), answering(routes))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
