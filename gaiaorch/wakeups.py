"""Wake-ups between the processes of one host: a Unix datagram socket per waiting listener.

A process that waits for others' commits (the task queue's pusher, a web process's event relay)
binds `<channel>-<pid>-<n>.sock` in the wake directory; a process that commits something they
wait for sends a few bytes to every socket of that channel there. The directory is beside the
SQLite database, as its -wal file is (every process sharing the file shares it), or this host's
`<var>/wake/` on PostgreSQL. Senders never block and never fail: a full buffer already holds a
wake-up, and a socket nobody is bound to any more is removed. Listeners still poll, for what a
wake-up cannot reach (a process on another host, a path too long for a socket).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import time
from pathlib import Path

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

SOCKET_PATH_MAX = 107  # bytes of an AF_UNIX path on Linux, without the final NUL
_numbers = itertools.count(1)


def directory() -> Path:
    database = connections["default"]
    if database.vendor == "sqlite" and not database.is_in_memory_db():  # type: ignore[attr-defined]  # SQLite's
        name = Path(database.settings_dict["NAME"])
        return name.with_name(f"{name.name}-wake")
    return Path(settings.VAR_DIR) / "wake"


def wake(channel: str, message: bytes = b"!") -> None:
    """Send `message` to every listener of `channel` on this host; never raises."""
    prefix = f"{channel}-"
    try:
        paths = [e.path for e in os.scandir(directory()) if e.name.startswith(prefix)]
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in paths:
            try:
                sender.sendto(message, path)
            except BlockingIOError:
                pass  # its buffer already holds wake-ups it has not read
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # nobody is bound there any more: its process has gone
            except OSError:
                logger.debug("could not wake the listener at %s; it polls", path, exc_info=True)


def listen(channel: str) -> socket.socket | None:
    """A non-blocking socket the wake-ups of `channel` arrive on, or None (the caller only polls)."""
    path = directory() / f"{channel}-{os.getpid()}-{next(_numbers)}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        logger.warning("%s is too long for a socket; %s wake-ups fall back to polling", path, channel)
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # only this account may wake it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by an earlier process with this pid
        listener.bind(str(path))
    except OSError:
        listener.close()
        logger.warning("could not bind %s; %s wake-ups fall back to polling", path, channel, exc_info=True)
        return None
    listener.setblocking(False)
    return listener


def close(listener: socket.socket | None) -> None:
    if listener is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(listener.getsockname())
    listener.close()


def drain(listener: socket.socket | None) -> list[bytes]:
    """The wake-ups received so far (none when there is no listener)."""
    messages: list[bytes] = []
    if listener is None:
        return messages
    with contextlib.suppress(BlockingIOError):
        while message := listener.recv(64):
            messages.append(message)
    return messages


def wait(listener: socket.socket | None, seconds: float) -> None:
    """Until a wake-up arrives or `seconds` pass."""
    if listener is None:
        time.sleep(seconds)
    else:
        select.select([listener], [], [], seconds)
