"""A real HTTP server on 127.0.0.1 speaking the lease and handoff contract (ARCHITECTURE.md §5).

It stands in for gaiaorch's lease and handoff endpoints while the client is tested; one GPU, FIFO.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANDOFF_PHASES = ["initiated", "releasing_gpu", "waiting_cuda_cleanup", "transferring_ownership"]


class FakeGaiaorch:
    def __init__(self, token: str = "service-token", handoff_outcome: str = "completed", hang_seconds=0.0):
        self.token = token
        self.handoff_outcome = handoff_outcome
        self.hang_seconds = hang_seconds
        self.holder: str | None = None
        self.queue: list[str] = []
        self.fencing = itertools.count(1)
        self.ids = itertools.count(1)
        self.heartbeats: list[str] = []
        self.released: list[str] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.handoff_polls: dict[str, int] = {}
        self.changed = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeGaiaorch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def hold_gpu(self) -> str:
        """Someone else (gaia-core) holds the GPU."""
        with self.changed:
            self.holder = f"lease-{next(self.ids)}"
            return self.holder

    def release_later(self, lease_id: str, seconds: float) -> None:
        threading.Timer(seconds, self._release, args=(lease_id,)).start()

    def route(self, method: str, path: str, body: dict) -> tuple[int, dict]:
        time.sleep(self.hang_seconds)
        routes = {
            ("POST", "/gpu/acquire"): self._acquire,
            ("POST", "/gpu/wait"): self._wait,
            ("POST", "/gpu/release"): lambda b: self._release(b.get("lease_id")),
            ("POST", "/gpu/heartbeat"): self._heartbeat,
            ("POST", "/notify/oracle-fallback"): lambda b: (200, {"success": True, "count": 1}),
        }
        if (method, path) in routes:
            return routes[method, path](body)
        if method == "POST" and path.startswith("/handoff/"):
            handoff_id = f"handoff-{next(self.ids)}"
            return 202, {"handoff_id": handoff_id, "status_url": f"/handoff/{handoff_id}/status"}
        if method == "GET" and path.startswith("/handoff/") and path.endswith("/status"):
            return self._handoff_status(path.split("/")[2])
        return 404, {"error": "not_found", "detail": f"no route {method} {path}"}

    def _acquire(self, body: dict) -> tuple[int, dict]:
        if not body.get("requester") or not body.get("reason"):
            return 400, {"error": "invalid_request", "detail": "requester and reason are required"}
        with self.changed:
            lease_id = f"lease-{next(self.ids)}"
            if self.holder is None:
                self.holder = lease_id
                return 200, self._granted(lease_id)
            self.queue.append(lease_id)
            return 202, self._waiting(lease_id)

    def _wait(self, body: dict) -> tuple[int, dict]:
        lease_id = body["lease_id"]
        with self.changed:
            self.changed.wait_for(lambda: self.holder == lease_id, timeout=body["timeout_seconds"])
            if self.holder == lease_id:
                return 200, self._granted(lease_id)
            return 202, self._waiting(lease_id)

    def _release(self, lease_id: str | None) -> tuple[int, dict]:
        with self.changed:
            if lease_id in self.queue:
                self.queue.remove(lease_id)
            elif lease_id == self.holder:
                self.holder = self.queue.pop(0) if self.queue else None
            else:
                return 404, {"error": "not_found", "detail": f"no lease {lease_id}", "lease_id": lease_id}
            self.released.append(lease_id)  # type: ignore[arg-type]
            self.changed.notify_all()
            return 200, {"success": True, "message": f"released {lease_id}"}

    def _heartbeat(self, body: dict) -> tuple[int, dict]:
        with self.changed:
            if body.get("lease_id") != self.holder:
                return 409, {"error": "not_holder", "detail": "that lease does not hold the GPU"}
            self.heartbeats.append(body["lease_id"])
            return 200, {"success": True, "expires_at": None}

    def _granted(self, lease_id: str) -> dict:
        return {"success": True, "lease_id": lease_id, "fencing_token": next(self.fencing), "gpu": 0,
                "expires_at": None, "message": "granted"}  # fmt: skip

    def _waiting(self, lease_id: str) -> dict:
        return {"success": False, "lease_id": lease_id, "status": "waiting",
                "queue_position": self.queue.index(lease_id) + 1, "waiting_for": self.holder}  # fmt: skip

    def _handoff_status(self, handoff_id: str) -> tuple[int, dict]:
        polls = self.handoff_polls[handoff_id] = self.handoff_polls.get(handoff_id, 0) + 1
        phase = HANDOFF_PHASES[polls - 1] if polls <= len(HANDOFF_PHASES) else self.handoff_outcome
        error = "cuda memory not freed" if phase == "failed" else None
        return 200, {"handoff_id": handoff_id, "phase": phase, "error": error, "phases": []}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def _answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Token {fake.token}":
                    status, answer = 401, {"error": "not_authenticated", "detail": "token required"}
                else:
                    status, answer = fake.route(method, self.path, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

            def handle(self):
                # The client may give up waiting, as a client with a timeout should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()

        return Handler
