"""Debian's headless Chromium, driven over the DevTools protocol (a WebSocket on 127.0.0.1).

Tests load a page, evaluate expressions in it (computed styles, the DOM as laid out) and take
screenshots at a given viewport. Chromium is a required test dependency: if it is missing the
test fails, it is not skipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"


class Page:
    """One tab: navigate, evaluate, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are skipped)."""
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout=60)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"DevTools connection ended: {msg.type}")
            data = json.loads(msg.data)
            if data.get("id") == ident:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Emulate a screen of ``width`` × ``height`` CSS pixels."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def goto(self, url: str) -> None:
        """Load ``url`` and wait until the document is complete."""
        await self.call("Page.navigate", url=url)
        for _ in range(600):
            if await self.evaluate("document.readyState") == "complete":
                return
            await asyncio.sleep(0.05)  # polling a condition, not a fixed wait
        raise AssertionError(f"{url} did not finish loading")

    async def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page and return its value."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole page, not only the viewport)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        data = await self.call("Page.captureScreenshot", **params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium_page(user_data: Path) -> AsyncIterator[Page]:
    """Start headless Chromium on 127.0.0.1 and yield one page; stop it afterwards."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: `make test` installs the Debian package")
    user_data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-extensions", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--user-data-dir={user_data}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = user_data / "DevToolsActivePort"
        for _ in range(600):
            if port_file.exists() and port_file.read_text().count("\n") >= 1:
                break
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited with {proc.returncode}")
            await asyncio.sleep(0.05)  # polling a condition
        else:
            raise AssertionError("chromium did not open its DevTools port")
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as session:
            async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as resp:
                target = await resp.json()
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
