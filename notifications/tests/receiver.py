"""A real HTTP server on 127.0.0.1 that plays a webhook receiver (gaia-web, for example)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """Answers each POST with the next scripted status (then 200); `hang_seconds` delays answers;
    `trickle_seconds` sends the answer one byte at a time with that pause between bytes."""

    def __init__(
        self, statuses: list[int] | None = None, hang_seconds: float = 0.0, trickle_seconds: float = 0.0
    ):
        self.statuses = list(statuses or [])
        self.hang_seconds = hang_seconds
        self.trickle_seconds = trickle_seconds
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/notifications"

    def delivered(self) -> list[dict]:
        """Bodies the receiver accepted (answered 2xx)."""
        with self.lock:
            return [r["body"] for r in self.requests if 200 <= r["status"] < 300]

    def wait_for(self, count: int, seconds: float = 30) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if len(self.delivered()) >= count:
                return self.delivered()
            time.sleep(0.05)
        raise AssertionError(f"receiver got {self.requests} within {seconds} s, wanted {count} accepted")

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(receiver.hang_seconds)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append({"status": status, "body": body, "headers": dict(self.headers)})
                if receiver.trickle_seconds:
                    for byte in f"HTTP/1.1 {status} OK\r\nContent-Length: 2\r\n\r\n{{}}".encode():
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(receiver.trickle_seconds)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

            def handle(self):
                # The client may give up waiting, as a client with a timeout should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()

        return Handler
