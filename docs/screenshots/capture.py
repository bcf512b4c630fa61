"""Screenshots of admin pages in headless Chromium, logged in by a session cookie.

    python docs/screenshots/capture.py BASE_URL SESSION_KEY OUT.png PATH [WAIT_SECONDS [SCRIPT]]

Chromium has no cookie flag, so this drives it over the DevTools protocol: set the `sessionid`
cookie, open the page, wait (the dashboard redraws itself from its feed), optionally run SCRIPT in
the page (e.g. fill in and submit a form) and wait again, then capture the full page.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

WIDTH, MAX_HEIGHT = 1400, 2400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_socket_url(port: int) -> str:
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as answer:
                pages = [target for target in json.load(answer) if target["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("Chromium did not open its DevTools port")


class DevTools:
    def __init__(self, socket_):
        self.socket = socket_
        self.ids = itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        call_id = next(self.ids)
        await self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.socket.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]


async def resize(tools: DevTools, height: int) -> None:
    await tools.call(
        "Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False
    )


async def capture(
    socket_url: str, base: str, session: str, path: str, out: str, wait: float, script: str
) -> None:
    async with websockets.connect(socket_url, max_size=None) as socket_:
        tools = DevTools(socket_)
        await tools.call("Network.enable")
        await tools.call("Network.setCookie", name="sessionid", value=session, url=base)
        await resize(tools, 900)
        await tools.call("Page.enable")
        await tools.call("Page.navigate", url=base + path)
        await asyncio.sleep(wait)
        if script:
            await tools.call("Runtime.evaluate", expression=script)
            await asyncio.sleep(wait)
        metrics = await tools.call("Page.getLayoutMetrics")
        height = min(int(metrics["cssContentSize"]["height"]), MAX_HEIGHT)
        await resize(tools, height)
        shot = await tools.call("Page.captureScreenshot", format="png")
        with open(out, "wb") as file:
            file.write(base64.b64decode(shot["data"]))


def main(base: str, session: str, out: str, path: str, wait: str = "3", script: str = "") -> None:
    port = free_port()
    browser = subprocess.Popen(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp()}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(capture(page_socket_url(port), base.rstrip("/"), session, path, out, float(wait), script))
    finally:
        browser.terminate()
        browser.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
