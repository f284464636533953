"""Faults inside the server: a request whose generation raises, an engine thread that dies.

A failing request fails alone, with `generation_error`, while the others finish. An engine loop
that dies still gives every request a final outcome, refuses new ones at once (503), turns
`/ready` and `/health` false, and `packcache serve` exits with status 1 so an orchestrator
restarts it; the restarted process serves the videos completed before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from packcache_core.pipeline import Pipeline
from tests.reliability.conftest import SMALL, Served
from tests.reliability.inject import ENGINE_DEATH, STEP_ERROR, faulty
from tests.server.conftest import LiveServer, png_bytes, wait_until
from tests.server.test_stream import request


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Pipeline, "start", faulty(Pipeline.start))


def stream(server: LiveServer, prompt: str) -> tuple[list[dict[str, Any]], int | None]:
    """One websocket request to its end: its JSON messages and the close code."""
    with connect(server.ws_url) as ws:
        ws.send(request(prompt=prompt, **SMALL | {"latent_frames": 3}))
        messages: list[dict[str, Any]] = []
        while not messages or messages[-1]["type"] not in ("completed", "error"):
            message = ws.recv(timeout=60)
            if isinstance(message, str):
                messages.append(json.loads(message))
        with pytest.raises(ConnectionClosed):  # the server closes first, with its own code
            ws.recv(timeout=30)
    return messages, ws.close_code


def test_a_failing_request_fails_alone(faults: None, tmp_path: Path) -> None:
    server = LiveServer(tmp_path, max_running=4).start()
    try:
        prompts = ["fine 1", STEP_ERROR, "fine 2", "fine 3"]
        with ThreadPoolExecutor(6) as pool:
            rest = list(pool.map(lambda p: server.create(prompt=p, latent_frames=3), prompts))
            streams = list(pool.map(lambda p: stream(server, p), ["fine ws", STEP_ERROR]))
        videos = {r.json()["prompt"]: server.wait_done(r.json()["id"]) for r in rest}
        failed = videos.pop(STEP_ERROR)
        assert failed["status"] == "failed" and failed["error"]["code"] == "generation_error"
        assert "injected: fault: step error" in failed["error"]["message"]
        assert {v["status"] for v in videos.values()} == {"completed"}
        (fine, fine_code), (bad, bad_code) = streams
        assert fine[-1]["type"] == "completed" and fine_code == 1000
        assert bad[-1]["error"]["code"] == "generation_error" and bad_code == 1011
        metrics = server.metrics()
        assert metrics['packcache_requests_total{status="failed"}'] == 2
        assert metrics['packcache_requests_total{status="completed"}'] == 4
        assert metrics["packcache_kv_cache_bytes"] == 0
        assert server.client.get("/ready").status_code == 200
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the point
def test_a_dead_engine_finishes_every_request_and_refuses_new_ones(
    faults: None, tmp_path: Path
) -> None:
    server = LiveServer(tmp_path, max_running=1).start()
    try:
        first = server.create(prompt="runs first", latent_frames=6, steps=4).json()
        dying = server.create(prompt=ENGINE_DEATH, latent_frames=3).json()
        waiting = server.create(prompt="waits behind it", latent_frames=3).json()
        assert waiting["status"] == "queued"
        wait_until(lambda: server.client.get("/health").status_code == 503, timeout=30)
        reason = server.client.get("/ready").json()["reason"]
        assert "engine thread died" in reason and "InjectedFault" in reason, reason
        assert server.runtime.exit_code == 1  # `packcache serve` exits with it (next test)
        assert server.wait_done(first["id"])["status"] == "completed"
        dead = server.wait_done(dying["id"])
        assert dead["status"] == "failed" and dead["error"]["code"] == "generation_error"
        left = server.wait_done(waiting["id"])
        assert left["status"] == "failed" and left["error"]["code"] == "shutdown"
        with httpx.Client(base_url=server.url, timeout=5) as quick:  # refused, never hanging
            files = {"input_reference": ("in.png", png_bytes())}
            after = quick.post("/v1/videos", data={"prompt": "too late"}, files=files)
        assert after.status_code == 503 and after.json()["error"]["code"] == "unavailable"
        listed = server.client.get("/v1/videos").json()["data"]
        assert [v["status"] for v in listed] == ["failed", "failed", "completed"]
        assert server.client.get(f"/v1/videos/{first['id']}/content").status_code == 200
    finally:
        server.stop()


def test_packcache_serve_exits_when_its_engine_dies(serve: Callable[..., Served]) -> None:
    served = serve("--max-running", "1", inject=True).wait_ready()
    done = served.create(prompt="completed before", latent_frames=3).json()
    assert served.wait_done(done["id"])["status"] == "completed"
    video = served.client.get(f"/v1/videos/{done['id']}/content").content
    dying = served.create(prompt=ENGINE_DEATH, latent_frames=3).json()
    status = served.wait_exit(timeout=60)
    assert status == 1, served.output()
    assert "engine thread died" in served.output()

    again = serve("--max-running", "1", data_dir=served.data_dir).wait_ready()
    assert again.client.get(f"/v1/videos/{done['id']}/content").content == video
    dead = again.client.get(f"/v1/videos/{dying['id']}").json()
    assert dead["status"] == "failed" and dead["error"]["code"] == "generation_error"
