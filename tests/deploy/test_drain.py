"""Graceful drain of a real `packcache serve` process: SIGTERM during requests.

`/ready` turns false and new requests get 503 before anything finishes; running requests
(REST and websocket) finish within `drain_timeout_s`, or stop after it, kept unfinished with
their records (code `shutdown` to a stream, close 1012) for the next start to resume; either
way every outcome is stored and the process exits 0.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from server.storage.store import SqliteJobStore
from tests.deploy.conftest import ROOT
from tests.server.conftest import free_port, png_bytes, wait_until


class Served:
    """`python -m server serve` on a free loopback port, its log in `data_dir/serve.log`."""

    def __init__(self, data_dir: Path, drain_timeout_s: float) -> None:
        self.data_dir, port = data_dir, free_port()
        self.url, self.ws_url = (
            f"http://127.0.0.1:{port}",
            f"ws://127.0.0.1:{port}/v1/videos/stream",
        )
        argv = ["serve", "--port", str(port), "--data-dir", str(data_dir)]
        argv += ["--model", "builtin:tiny-random"]
        argv += ["--drain-timeout-s", str(drain_timeout_s), "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACKCACHE_")}
        self.log = (data_dir / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *argv],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)
        wait_until(self._ready, timeout=120, interval=0.1)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return self.client.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")

    def create(self, latent_frames: int, steps: int) -> dict[str, Any]:
        form = {"prompt": "drain", "size": "64x64", "latent_frames": latent_frames, "steps": steps}
        files = {"input_reference": ("image.png", png_bytes(), "image/png")}
        data = {k: str(v) for k, v in form.items()}
        reply = self.client.post("/v1/videos", data=data, files=files)
        return {"status_code": reply.status_code, "headers": reply.headers, **reply.json()}

    def status(self, video_id: str) -> str:
        return str(self.client.get(f"/v1/videos/{video_id}").json()["status"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.client.close()
        self.log.close()


class Stream(threading.Thread):
    """A websocket request read to its end: `messages` (JSON ones) and `close_code`."""

    def __init__(self, ws_url: str, latent_frames: int, steps: int) -> None:
        super().__init__(daemon=True)
        self.ws_url, self.messages = ws_url, list[dict[str, Any]]()
        image = base64.b64encode(png_bytes()).decode()
        self.request = json.dumps(
            {"type": "generate", "prompt": "drain", "image": image, "size": "64x64"}
            | {"latent_frames": latent_frames, "steps": steps}
        )
        self.close_code: int | None = None
        self.start()

    def run(self) -> None:
        with connect(self.ws_url) as ws:
            ws.send(self.request)
            try:
                for message in ws:
                    if isinstance(message, str):
                        self.messages.append(json.loads(message))
            except ConnectionClosedError:  # a close code other than 1000
                pass
            self.close_code = ws.close_code

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.messages]


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path, drain_timeout_s=request.param)
    yield server
    server.stop()


def start_both(served: Served, latent_frames: int, steps: int) -> tuple[Stream, dict[str, Any]]:
    """A websocket and a REST request, returned once both run."""
    stream = Stream(served.ws_url, latent_frames, steps)
    video = served.create(latent_frames, steps)
    wait_until(lambda: "started" in stream.kinds(), timeout=30)
    wait_until(lambda: served.status(video["id"]) == "in_progress", timeout=30)
    return stream, video


def sigterm_and_check_refusals(served: Served, running_id: str) -> float:
    """SIGTERM; `/ready` 503 and new requests 503 while `running_id` still runs. Returns when."""
    served.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    wait_until(lambda: served.client.get("/ready").status_code == 503, timeout=2)
    assert served.client.get("/ready").json()["reason"] == "draining"
    assert served.status(running_id) == "in_progress"  # /ready turned false first
    refused = served.create(latent_frames=2, steps=1)
    assert refused["status_code"] == 503 and refused["error"]["code"] == "unavailable"
    assert int(refused["headers"]["retry-after"]) > 0
    assert served.client.get("/health").status_code == 200  # alive: no restart while draining
    return t0


@pytest.mark.parametrize("served", [60.0], indirect=True)
def test_sigterm_lets_running_requests_finish(served: Served) -> None:
    stream, video = start_both(served, latent_frames=3, steps=6)

    sigterm_and_check_refusals(served, video["id"])
    assert served.proc.wait(timeout=60) == 0, served.output()
    stream.join(timeout=10)

    assert stream.kinds()[-1] == "completed" and stream.close_code == 1000
    store = SqliteJobStore(served.data_dir / "jobs.sqlite3")
    for job_id in (video["id"], stream.messages[-1]["id"]):
        record = store.get(job_id)
        assert record is not None and record.status == "completed", record
        assert (served.data_dir / "videos" / job_id / "video.mp4").is_file()
    store.close()


@pytest.mark.parametrize("served", [0.5], indirect=True)
def test_sigterm_leaves_what_outlives_the_grace_period_resumable(served: Served) -> None:
    stream, video = start_both(served, latent_frames=12, steps=8)

    t0 = sigterm_and_check_refusals(served, video["id"])
    assert served.proc.wait(timeout=30) == 0, served.output()
    assert time.monotonic() - t0 < 10  # the grace period, a step, and the recorder's flush
    stream.join(timeout=10)

    final = stream.messages[-1]
    assert final["type"] == "error" and final["error"]["code"] == "shutdown"
    assert "resumes" in final["error"]["message"] and stream.close_code == 1012
    store = SqliteJobStore(served.data_dir / "jobs.sqlite3")
    for job_id in (video["id"], final["id"]):
        record = store.get(job_id)
        assert record is not None and record.status in ("queued", "in_progress"), record
        assert (served.data_dir / "videos" / job_id / "request.json").is_file()  # resumable
    store.close()
    assert "they resume from their last recorded frame" in served.output()
