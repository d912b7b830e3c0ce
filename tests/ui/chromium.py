"""Headless Chromium driven over the DevTools protocol (CDP): load a page, read what it shows, collect console
errors, take a screenshot. Debian's ``chromium`` package (installed by .ci/setup); nothing else."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-extensions",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageVisit:
    url: str
    text: str  # document.body.innerText: what a reader sees
    html: str  # document.documentElement.outerHTML after the scripts ran
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    values: dict = field(default_factory=dict)  # results of the extra expressions asked for


class Chromium:
    """One headless browser process; :meth:`visit` opens a fresh tab per page."""

    def __init__(self, width: int = 1360, height: int = 900) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (bash .ci/setup installs Debian's chromium package)")
        self.width, self.height = width, height
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.profile.cleanup()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def visit(
        self, url: str, screenshot: Path | None = None, expressions: dict[str, str] | None = None, actions: str | None = None
    ) -> PageVisit:
        """Load ``url`` in a new tab, wait for the load event, run ``actions`` (JavaScript, e.g. a hover), evaluate
        ``expressions``, capture a full-page PNG to ``screenshot``."""
        return asyncio.run(self._visit(url, screenshot, expressions or {}, actions))

    async def _visit(self, url: str, screenshot: Path | None, expressions: dict[str, str], actions: str | None) -> PageVisit:
        import websockets

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.loads(response.read())
        errors: list[str] = []
        async with websockets.connect(target["webSocketDebuggerUrl"], max_size=64 * 2**20) as socket:
            counter = 0
            pending: dict[int, asyncio.Future] = {}
            loaded = asyncio.Event()

            async def reader() -> None:
                async for raw in socket:
                    message = json.loads(raw)
                    if "id" in message and message["id"] in pending:
                        pending.pop(message["id"]).set_result(message)
                        continue
                    method, params = message.get("method"), message.get("params", {})
                    if method == "Page.loadEventFired":
                        loaded.set()
                    elif method == "Runtime.exceptionThrown":
                        details = params["exceptionDetails"]
                        errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
                    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                        errors.append(
                            "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                        )
                    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                        errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
                    elif method == "Network.loadingFailed" and not params.get("canceled"):
                        errors.append(f"load failed: {params.get('errorText')}")
                    elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                        errors.append(f"HTTP {params['response']['status']}: {params['response']['url']}")

            async def call(method: str, **params) -> dict:
                nonlocal counter
                counter += 1
                future = asyncio.get_running_loop().create_future()
                pending[counter] = future
                await socket.send(json.dumps({"id": counter, "method": method, "params": params}))
                reply = await asyncio.wait_for(future, 60)
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

            async def evaluate(expression: str):
                result = await call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
                if "exceptionDetails" in result:
                    raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
                return result["result"].get("value")

            task = asyncio.create_task(reader())
            try:
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await call(f"{domain}.enable")
                await call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
                await call("Page.navigate", url=url)
                await asyncio.wait_for(loaded.wait(), 60)
                # images load lazily: wait until every <img> on the page finished (or failed)
                await evaluate(
                    "Promise.all(Array.from(document.images).map(i => { i.loading = 'eager'; return i.complete ? 1 : "
                    "new Promise(r => { i.onload = i.onerror = r; }); }))"
                )
                if actions:
                    await evaluate(actions)
                values = {name: await evaluate(expression) for name, expression in expressions.items()}
                text = await evaluate("document.body.innerText")
                html = await evaluate("document.documentElement.outerHTML")
                if screenshot is not None:
                    metrics = await call("Page.getLayoutMetrics")
                    size = metrics.get("cssContentSize", metrics["contentSize"])
                    shot = await call(
                        "Page.captureScreenshot",
                        format="png",
                        captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": self.width, "height": min(size["height"], 4000), "scale": 1},
                    )
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                await asyncio.sleep(0.2)  # late console messages
            finally:
                task.cancel()
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{target['id']}", timeout=10).read()
        return PageVisit(url, text, html, errors, values)
