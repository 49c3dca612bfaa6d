"""The report page in a real browser: every image loads, no console error, no network.

Drives Debian's headless Chromium over the DevTools protocol (a websocket, through the
small ``websockets`` package) so the test sees what a person would: images decoded,
console messages, failed loads and every request the page makes. A screenshot is kept
of each page is kept under ``test-artifacts/`` (gitignored) for a person to look at.
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


def _run(out: Path, *extra: str) -> None:
    castillo(
        "run",
        "--backend",
        "fake",
        "--out",
        str(out),
        "--quiet",
        "-n",
        "4",
        "--max-new-tokens",
        "100",
        "--max-prompt-tokens",
        "7",
        *extra,
    )


def _load(tools: DevTools, page: Path) -> tuple[list[dict[str, Any]], bytes]:
    """Open ``page`` in a fresh tab: its images (src, loaded, natural width) and a full-page screenshot."""
    target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    tools.session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        tools.send(f"{domain}.enable")
    tools.events.clear()
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
    return json.loads(images), base64.b64decode(shot["data"])


def _errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
        or e.get("method") == "Network.loadingFailed"
    ]


def test_report_page_renders_in_chromium(tmp_path: Path) -> None:
    """Two pages: a grid (two models x two datasets: heatmaps) and a single cell (histograms)."""
    pytest.importorskip("websockets", reason="pip install websockets (the DevTools client of this test)")
    pytest.importorskip("matplotlib", reason="pip install matplotlib (castillo report draws with it)")
    browser = _browser()
    grid, single = tmp_path / "grid", tmp_path / "single"
    source = tmp_path / "code.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"<b>task</b> {i} " + "word " * i}) + "\n" for i in range(6)))
    for model in ("org/M-1B-Instruct", "org/M-3B-Instruct"):
        _run(grid, "--model", model, "--corpus", "tiny", "-C", "reject_every=5")
        _run(grid, "--model", model, "--corpus", "jsonl", "--source", str(source), "-C", "dataset=Code")
    _run(single, "--corpus", "tiny")
    pages = {}
    for name, out in (("grid", grid), ("single", single)):
        castillo("report", str(out), "--to", str(tmp_path / f"report-{name}"), "--quiet")
        pages[name] = tmp_path / f"report-{name}" / "index.html"
    proc, endpoint = _start(browser, tmp_path / "profile")
    tools = None
    seen: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]] = {}
    try:
        tools = DevTools(endpoint)
        ARTIFACTS.mkdir(exist_ok=True)
        for name, page in pages.items():
            images, shot = _load(tools, page)
            (ARTIFACTS / f"report-chromium-{name}.png").write_bytes(shot)
            requested = [
                e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"
            ]
            seen[name] = (images, _errors(tools.events), requested)
    finally:
        if tools is not None:
            tools.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for name, page in pages.items():
        images, errors, requested = seen[name]
        summary = json.loads((page.parent / "summary.json").read_text())
        pngs = sorted(p.name for p in page.parent.glob("*.png"))
        assert sorted(i["src"] for i in images) == pngs == sorted(f["file"] for f in summary["figures"])
        assert all(i["complete"] and i["width"] > 0 for i in images), images
        assert not errors, errors
        assert requested and all(url.startswith("file://") for url in requested), requested  # nothing from a network
        assert (ARTIFACTS / f"report-chromium-{name}.png").stat().st_size > 10_000
    assert any(p.startswith("heatmap_") for p in (i["src"] for i in seen["grid"][0]))
    assert "lengths_hist.png" in {i["src"] for i in seen["single"][0]}
