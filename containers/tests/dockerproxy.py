"""A Unix-socket proxy in front of the real Docker socket that a test can cut and restore.

Cutting it is how the tests make "Docker stopped" happen: every open connection (including an
in-flight `docker stop` and the event stream) breaks and new connections are refused, exactly
what the orchestrator sees when dockerd dies, without touching the machine's real dockerd.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

UPSTREAM = "/var/run/docker.sock"


class CuttableDockerSocket:
    def __init__(self, path: Path, upstream: str = UPSTREAM):
        self.path = path
        self.upstream = upstream
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def open(self) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self.listener = self.listener, None
        if listener:
            listener.close()
        self.path.unlink(missing_ok=True)
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
