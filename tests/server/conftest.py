"""Live servers for the server tests: real uvicorn on 127.0.0.1 with `builtin:tiny-random`.

What it is: `LiveServer` (create_app + uvicorn.Server in a background thread on a free port,
waited on until /ready), the module-wide `server` fixture most tests share, and small
helpers (images, metrics, polling). What it is not: a fake: the engine, store, recorder and
routes are the real ones.

Invariant: every server gets a fresh data directory (unless a test passes one) and a fresh
metrics registry, and is shut down (lifespan included) when its test module ends.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from server.api.main import create_app
from server.entry.cli import uvicorn_config
from server.settings import Settings

# Tiny requests: 64x64 frames, 3 latent frames (9 RGB frames), 2 steps per frame.
TINY: dict[str, Any] = {"size": "64x64", "latent_frames": 3, "steps": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real server in this process; `url`, `ws_url`, `client` (httpx) and `runtime`."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        self.port = free_port()
        overrides.setdefault("model", "builtin:tiny-random")  # unless a test asks for another
        self.settings = Settings(
            data_dir=data_dir, host="127.0.0.1", port=self.port, log_level="warning", **overrides
        )
        self.registry = CollectorRegistry()
        self.app = create_app(self.settings, self.registry)
        self.uvicorn = uvicorn.Server(uvicorn_config(self.app, self.settings))  # as served
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/videos/stream"
        self.runtime = self.app.state.runtime

    def start(self, timeout: float = 120.0) -> LiveServer:
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=60)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.client.get("/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on {self.url} not ready: {self.runtime.failure}")

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=60)
        self.client.close()

    def metrics(self) -> dict[str, float]:
        """Every sample as {'name{label="v",...}': value}; labels sorted."""
        text = self.client.get("/metrics").text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def wait_done(self, video_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll GET /v1/videos/{id} until completed or failed."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            video: dict[str, Any] = self.client.get(f"/v1/videos/{video_id}").json()
            if video["status"] in ("completed", "failed"):
                return video
            time.sleep(0.1)
        raise TimeoutError(f"{video_id} did not finish in {timeout} s")

    def create(self, image: bytes | None = None, **fields: Any) -> httpx.Response:
        data = {"prompt": "a red square drifting", **TINY, **fields}
        image = png_bytes() if image is None else image
        files = {"input_reference": ("image.png", image, "image/png")}
        form = {k: str(v) for k, v in data.items()}
        return self.client.post("/v1/videos", data=form, files=files)


def png_bytes(width: int = 96, height: int = 64) -> bytes:
    image = Image.new("RGB", (width, height), (200, 40, 40))
    for x in range(0, width, 8):  # some texture, so codes differ across the frame
        image.putpixel((x, x % height), (20, 200, 90))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Seconds until `condition()` held; raises TimeoutError after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module, default settings, its own data directory."""
    live = LiveServer(tmp_path_factory.mktemp("data")).start()
    yield live
    live.stop()
