"""The websocket `/v1/videos/stream` with a real `websockets` client against a live server."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

from PIL import Image
from websockets.sync.client import ClientConnection, connect

from tests.server.conftest import TINY, LiveServer, png_bytes, wait_until


def request(**fields: Any) -> str:
    image = base64.b64encode(png_bytes()).decode()
    return json.dumps({"prompt": "a red square drifting", "image": image, **TINY, **fields})


def receive(ws: ClientConnection) -> tuple[float, dict[str, Any] | bytes]:
    message = ws.recv(timeout=60)
    body = message if isinstance(message, bytes) else json.loads(message)
    return time.monotonic(), body


def read_until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        _, body = receive(ws)
        if isinstance(body, dict) and body["type"] in (kind, "error"):
            return body


def test_frames_in_order_first_frame_early(server: LiveServer) -> None:
    latent, steps = 4, 3
    with connect(server.ws_url) as ws:
        ws.send(request(latent_frames=latent, steps=steps))
        log = []
        while not log or not isinstance(log[-1][1], dict) or log[-1][1]["type"] != "completed":
            log.append(receive(ws))
    kinds = [b["type"] if isinstance(b, dict) else "binary" for _, b in log]
    assert kinds[:4] == ["queued", "started", "frame", "binary"]
    started, completed = log[1][1], log[-1][1]
    assert isinstance(started, dict) and isinstance(completed, dict)
    video_id = started["id"]
    headers = [(t, b) for t, b in log if isinstance(b, dict) and b["type"] == "frame"]
    n_frames = 1 + 4 * (latent - 1)
    assert [h["index"] for _, h in headers] == list(range(n_frames))
    assert [h["latent_index"] for _, h in headers] == [0] + [i for i in (1, 2, 3) for _ in range(4)]
    for i, (_, body) in enumerate(log):  # every header is followed by its image
        if isinstance(body, dict) and body["type"] == "frame":
            image = log[i + 1][1]
            assert isinstance(image, bytes) and len(image) == body["bytes"]
            assert Image.open(io.BytesIO(image)).size == (64, 64)

    # One latent_frame per generated latent frame, right after its last RGB frame.
    latents = [(i, b) for i, (_, b) in enumerate(log) if isinstance(b, dict)]
    latents = [(i, b) for i, b in latents if b["type"] == "latent_frame"]
    assert [b["latent_index"] for _, b in latents] == [1, 2, 3]
    for i, b in latents:
        assert b["id"] == video_id and b["latency_s"] > 0
        assert 0 < b["cache_bytes_used"] <= started["cache_bytes"]
        last_header = max(
            j for j, (_, h) in enumerate(log[:i]) if isinstance(h, dict) and h["type"] == "frame"
        )
        header = log[last_header][1]
        assert isinstance(header, dict) and header["latent_index"] == b["latent_index"]

    t_start, t_end = log[1][0], log[-1][0]
    t_first_generated = headers[1][0]
    assert t_first_generated - t_start < 0.6 * (t_end - t_start)  # about 1/3 in, not at the end
    assert completed["frames_sent"] == n_frames and completed["dropped"] == 0
    assert completed["stats"]["frames"] == n_frames
    assert completed["stats"]["steps"] == (latent - 1) * steps
    assert completed["id"] == video_id
    video = server.client.get(f"/v1/videos/{video_id}").json()  # recorded before `completed`
    assert video["status"] == "completed"
    assert server.client.get(f"/v1/videos/{video_id}/content").status_code == 200


def kv_bytes(server: LiveServer) -> float:
    return server.metrics()["packcache_kv_cache_bytes"]


def test_disconnect_frees_cache_within_a_step(server: LiveServer) -> None:
    cancelled_before = server.metrics()['packcache_requests_total{status="cancelled"}']
    with connect(server.ws_url) as ws:
        ws.send(request(latent_frames=12, steps=4))
        started = read_until(ws, "started")
        progress = [read_until(ws, "progress") for _ in range(3)]
        assert kv_bytes(server) == started["cache_bytes"] > 0
        t0 = time.monotonic()
        steps = [p["steps_done"] for p in progress]
    # Leaving the block closed the socket.
    freed_after = wait_until(lambda: kv_bytes(server) == 0, timeout=10)
    step_s = server.metrics()['packcache_denoise_step_seconds_sum{policy="packcache"}'] / max(
        1, server.metrics()['packcache_denoise_step_seconds_count{policy="packcache"}']
    )
    assert steps[-1] < 11 * 4  # it really was cut short
    assert freed_after <= 2 * step_s + 0.5, (freed_after, step_s)
    assert time.monotonic() - t0 < 5
    after = server.metrics()['packcache_requests_total{status="cancelled"}']
    assert after == cancelled_before + 1
    video = server.wait_done(started["id"])
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"


def test_cancel_message(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(latent_frames=12, steps=4))
        read_until(ws, "started")
        ws.send(json.dumps({"type": "cancel"}))
        error = read_until(ws, "completed")
        assert error["type"] == "error" and error["error"]["code"] == "cancelled"
    assert ws.close_code == 1000
    assert kv_bytes(server) == 0
