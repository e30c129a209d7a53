"""Headless Chromium driven over the Chrome DevTools protocol, for the README's screenshots and the browser tests.

The protocol runs over a pipe (`--remote-debugging-pipe`: JSON messages, each ended by a NUL byte, on the
browser's file descriptors 3 and 4), with Python's standard library only: no port, no websocket library. One
browser holds one page. While it waits for a reply, it records what the page reports: its console errors and
uncaught exceptions (`errors`), and every request for a URL other than `file:` or `data:` (`requests`).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

LOCAL_SCHEMES = ("file:", "data:")  # a request for any other URL goes out over the network
INSTALL_HINT = "install Chromium, a Debian package: `sudo apt-get install -y chromium` (or set CHROMIUM to its path)"


class DevToolsError(RuntimeError):
    """The browser answered a command with an error, exited, or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else `chromium` or `chromium-browser` on PATH; None if there is none."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """Headless Chromium with one page, its console and network watched; use it as a context manager.

    `offline=True` turns the page's network off (DevTools' network emulation), so a page that asks for anything
    over the network gets nothing, and the request is still recorded in `requests`.
    """

    def __init__(
        self,
        executable: str | None = None,
        width: int = 1280,
        height: int = 800,
        offline: bool = False,
        timeout: float = 60.0,
    ) -> None:
        executable = executable or find_chromium()
        if not executable:
            raise FileNotFoundError(f"no Chromium: {INSTALL_HINT}")
        self.timeout = timeout
        self.errors: list[str] = []
        self.requests: list[str] = []
        self._events: list[dict] = []
        self._buffer, self._id, self._session, self._closed = b"", 0, None, False
        self._profile = tempfile.mkdtemp(prefix="tapelab-chromium-")
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()

        def as_fds_3_and_4() -> None:
            read, write = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=as_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        try:
            page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self._session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            if offline:
                self.call(
                    "Network.emulateNetworkConditions",
                    offline=True,
                    latency=0,
                    downloadThroughput=-1,
                    uploadThroughput=-1,
                )
            self.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> dict:
        """Send one DevTools command to the page (to the browser before the page is attached); return its result."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        end = time.monotonic() + self.timeout
        while True:
            reply = self._receive(end, f"the answer to {method}")
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict:
        """The next event `method` (e.g. "Page.loadEventFired"), or the first one already received; its params."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for index, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(index).get("params", {})
            self._receive(end, method)

    def open(self, url: str) -> None:
        """Load `url` and wait for its load event (every script run, every image in)."""
        self._events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise DevToolsError(f"{url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression evaluated in the page (a promise's, once it settles)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise DevToolsError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def box(self, selector: str) -> dict[str, float]:
        """The bounding box of the first element matching `selector`, in CSS pixels of the whole page (`x`, `y`,
        `width`, `height`); scrolled into view first."""
        found = self.js(f"""(() => {{
            const element = document.querySelector({json.dumps(selector)});
            if (!element) return null;
            element.scrollIntoView({{block: "center", inline: "center"}});
            const box = element.getBoundingClientRect();
            return {{x: box.x + window.scrollX, y: box.y + window.scrollY, width: box.width, height: box.height}};
        }})()""")
        if found is None:
            raise DevToolsError(f"no element matches {selector!r}")
        return found

    def click(self, selector: str) -> None:
        """Click the middle of the first element matching `selector` with the mouse, as a person would."""
        box = self.box(selector)
        scroll = self.js("[window.scrollX, window.scrollY]")
        x, y = box["x"] + box["width"] / 2 - scroll[0], box["y"] + box["height"] / 2 - scroll[1]
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, selector: str | None = None) -> bytes:
        """A PNG of the window, or of the element matching `selector` (clipped to its bounding box)."""
        params: dict[str, Any] = {"format": "png"}
        if selector:
            params["clip"] = {**self.box(selector), "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        """Close the browser (kill it if it doesn't close) and remove its profile; once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.process.poll() is None:
                self.call("Browser.close")
                self.process.wait(10)
        except (DevToolsError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        for fd in (self._in, self._out):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _receive(self, end: float, what: str) -> dict:
        """The next message from the browser (recording it if it is an event), waiting until `end` at most."""
        while b"\0" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise DevToolsError(f"timed out waiting for {what}")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise DevToolsError("chromium exited")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._record(message)
        return message

    def _record(self, event: dict) -> None:
        """Keep an event for wait_for_event; note console errors, uncaught exceptions and non-local requests."""
        self._events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(
                "console.error: "
                + " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("uncaught: " + (details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                self.requests.append(url)


def write_png(path: Path, png: bytes, max_bytes: int = 300_000) -> None:
    """Save a screenshot; one larger than `max_bytes` is saved in 256 colours (plenty for flat pages and charts)."""
    path.write_bytes(png)
    if len(png) > max_bytes:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
