"""Headless Chromium driving the demo page against a live server on loopback.

What it is: a module-wide live server (real uvicorn, built-in model, CPU, API keys on, a small
upload limit, one request at a time so a second one queues), a Playwright browser launched
from Debian's `/usr/bin/chromium` (never a downloaded build), a fresh page per test with a
recorder of what the page showed and when, and screenshots under `test-artifacts/ui/`.
What it is not: a unit test of the scripts; only what a person would see is checked.

Invariant: the browser never reaches beyond 127.0.0.1 (background networking is off, and the
page loads nothing from elsewhere). Without Chromium or Playwright the tests skip, except under
CI (`CI` set), where they fail: `.ci/run` installs both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import LiveServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
API_KEY = "ui-test-key"
UPLOAD_LIMIT = 256 << 10
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machine has no network: no refused-connection floods
    "--disable-component-update",
    "--disable-sync",
]

# Installed before any page script runs: logs (time, element, attribute, value) whenever the
# frame canvas shows a new frame, the status changes, or the video gets a source, with what the
# page showed at that moment (status, progress, whether the canvas has non-black pixels).
RECORDER = """
window.__record = [];
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const el = m.target;
    const status = document.getElementById("status");
    const entry = {
      t: performance.now(), id: el.id, attr: m.attributeName,
      value: el.getAttribute(m.attributeName),
      state: status ? status.dataset.state : null,
      progress: document.getElementById("progress")?.value ?? null, painted: null,
    };
    if (el.id === "frame" && el.width > 0) {
      const data = el.getContext("2d").getImageData(0, 0, el.width, el.height).data;
      entry.painted = data.some((v, i) => i % 4 !== 3 && v > 8);
    }
    window.__record.push(entry);
  }
}).observe(document, {subtree: true, attributes: true,
                      attributeFilter: ["data-index", "data-state", "src"]});
"""


def _chromium() -> str:
    path = os.environ.get("PACKCACHE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        _unavailable(f"no Chromium at {path} (apt-get install chromium)")
    return path


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why}: .ci/run should have installed it")
    pytest.skip(why)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("data"),
        api_keys=[API_KEY],
        max_upload_bytes=UPLOAD_LIMIT,
        max_running=1,
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    executable = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as profile,
        sync_playwright() as pw,
    ):
        # A persistent context on a fresh folder: the user data dir is ours, and empty.
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1100, "height": 1200},
        )
        context.add_init_script(RECORDER)
        yield context
        context.close()


class Page:
    """One tab on the demo page, with its uncaught script errors and a screenshot helper."""

    def __init__(self, context: Any, live: LiveServer) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(live.url + "/")
        self.page.wait_for_selector('#status[data-state="idle"]', timeout=15_000)

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def record(self) -> list[dict[str, Any]]:
        record: list[dict[str, Any]] = self.page.evaluate("window.__record")
        return record

    def state(self) -> str:
        return str(self.page.get_attribute("#status", "data-state"))

    def wait_state(self, *states: str, timeout_ms: int = 60_000) -> str:
        wanted = ",".join(f'#status[data-state="{s}"]' for s in states)
        self.page.wait_for_selector(wanted, timeout=timeout_ms)
        return self.state()

    def fill_request(
        self, key: str, latent_frames: int, steps: int, size: str = "64x64", policy: str = ""
    ) -> None:
        p = self.page
        p.fill("#api-key", key)
        p.select_option("#frames", str(latent_frames))
        p.fill("#steps", str(steps))
        if policy:
            p.select_option("#policy", policy)
        p.click("details > summary")
        p.fill("#size", size)

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def open_page(browser: Any, live: LiveServer) -> Iterator[Any]:
    pages: list[Page] = []

    def open_one() -> Page:
        pages.append(Page(browser, live))
        return pages[-1]

    yield open_one
    for page in pages:
        assert page.errors == [], f"uncaught errors in the page: {page.errors}"
        page.close()
