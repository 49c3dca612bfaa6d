"""The report page in a real browser: every image loads, no console error, no network.

Drives Debian's headless Chromium over the DevTools protocol (a websocket, through the
small ``websockets`` package) so the test sees what a person would: images decoded,
console messages, failed loads and every request the page makes. A screenshot is kept
under ``test-artifacts/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, castillo

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
)
ARTIFACTS = REPO / "test-artifacts"


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (install Debian's: apt-get install -y chromium); the browser test needs one")


class DevTools:
    """A minimal DevTools-protocol client: one page target, commands and their events."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, max_size=64 * 1024 * 1024, open_timeout=30))
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise AssertionError(f"no {method} within {timeout} s")

    def close(self) -> None:
        self._stack.close()


def _start(browser: str, profile: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise AssertionError(f"Chromium did not start its DevTools endpoint:\n{''.join(seen[-20:])}")


def test_report_page_renders_in_chromium(tmp_path: Path) -> None:
    pytest.importorskip("websockets", reason="pip install websockets (the DevTools client of this test)")
    pytest.importorskip("matplotlib", reason="pip install matplotlib (castillo report draws with it)")
    browser = _browser()
    out = tmp_path / "out"
    castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "-n",
        "4",
        "--max-new-tokens",
        "100",
        "-C",
        "reject_every=5",
        "--max-prompt-tokens",
        "7",
    )
    castillo("report", str(out), "--to", str(tmp_path / "report"), "--quiet")
    page = tmp_path / "report" / "index.html"
    proc, endpoint = _start(browser, tmp_path / "profile")
    tools = None
    try:
        tools = DevTools(endpoint)
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        tools.session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.send(f"{domain}.enable")
        tools.send("Page.navigate", {"url": page.as_uri()})
        tools.wait_for("Page.loadEventFired")
        images = tools.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.images).map(i => "
                "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})))",
                "returnByValue": True,
            },
        )["result"]["value"]
        shot = tools.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    finally:
        if tools is not None:
            tools.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-chromium.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    loaded = json.loads(images)
    pngs = sorted(p.name for p in page.parent.glob("*.png"))
    assert sorted(i["src"] for i in loaded) == pngs and len(pngs) >= 8
    assert all(i["complete"] and i["width"] > 0 for i in loaded), loaded
    errors = [
        e
        for e in tools.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
        or e.get("method") == "Network.loadingFailed"
    ]
    assert not errors, errors
    requested = [e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith("file://") for url in requested), requested  # nothing from a network
    assert screenshot.stat().st_size > 10_000
