"""The scope of one HTTP request as daphne hands it to the ASGI application."""

from __future__ import annotations


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], client=("127.0.0.1", 50000)
) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": ("127.0.0.1", 6410),
    }
