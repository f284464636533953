"""The websocket `/v1/videos/stream` with a real `websockets` client against a live server."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
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
    assert completed["stats"]["realtime"] is False and completed["stats"]["stall_s"] is None
    assert completed["id"] == video_id
    video = server.client.get(f"/v1/videos/{video_id}").json()  # recorded before `completed`
    assert video["status"] == "completed"
    assert server.client.get(f"/v1/videos/{video_id}/content").status_code == 200


def kv_bytes(server: LiveServer) -> float:
    return server.metrics()["packcache_kv_cache_bytes"]


def test_disconnect_frees_cache_within_a_step(server: LiveServer) -> None:
    """With `cancel_on_disconnect`, closing the socket cancels the job."""
    cancelled_before = server.metrics()['packcache_requests_total{status="cancelled"}']
    with connect(server.ws_url) as ws:
        ws.send(request(latent_frames=12, steps=4, cancel_on_disconnect=True))
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


def test_a_client_that_leaves_still_gets_its_video(server: LiveServer) -> None:
    """By default a fixed-length job is the server's promise: the client closes the socket
    after the first frame, and the job runs to completion with its MP4 stored."""
    with connect(server.ws_url) as ws:
        ws.send(request(latent_frames=6, steps=3))
        started = read_until(ws, "started")
        read_until(ws, "frame")
    video = server.wait_done(started["id"])
    assert video["status"] == "completed", video
    content = server.client.get(f"/v1/videos/{started['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    assert content.content[4:8] == b"ftyp"
    wait_until(lambda: server.metrics()["packcache_websocket_streams_open"] == 0, timeout=10)


def test_cancel_on_disconnect_must_be_a_bool(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(cancel_on_disconnect="yes"))
        error = read_until(ws, "completed")
    assert error["type"] == "error" and error["error"]["param"] == "cancel_on_disconnect"
    assert ws.close_code == 1007


def test_a_realtime_stream_reports_its_pace(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(realtime=True))
        completed = read_until(ws, "completed")
    assert completed["type"] == "completed"
    stats = completed["stats"]
    assert stats["realtime"] is True and stats["stall_s"] >= 0
    latent_s = 4 / server.settings.fps  # one latent frame of video
    assert 5 / server.settings.fps <= stats["max_lead_s"] <= server.settings.pace_lead_s + latent_s
    m = server.metrics()
    assert m["packcache_stream_lead_seconds_count"] == TINY["latent_frames"] - 1
    assert m["packcache_stream_stall_seconds_total"] == pytest.approx(stats["stall_s"])


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_realtime_must_be_a_bool(server: LiveServer, value: Any) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(realtime=value))
        error = read_until(ws, "completed")
    assert error["type"] == "error" and error["error"]["param"] == "realtime"
    assert ws.close_code == 1007


# -- a client that never reads: a raw socket that shakes hands, sends, then stays silent -------


def open_raw(port: int, *headers: str, path: str = "/v1/videos/stream") -> socket.socket:
    """A websocket handshake written by hand (no library answers pings for us)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket"]
    lines += ["Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    sock.sendall(("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode())
    return sock


def read_head(sock: socket.socket) -> tuple[int, bytes]:
    """The handshake answer's status and whatever followed its headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def client_frame(payload: bytes, opcode: int = 1, compressed: bool = False) -> bytes:
    """One masked frame (an all-zero mask, so the payload goes as is)."""
    first = 0x80 | (0x40 if compressed else 0) | opcode
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([first]) + length + b"\0\0\0\0" + payload


def deflated(text: str) -> bytes:
    """A permessage-deflate payload (RFC 7692: raw deflate, the final empty block removed)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -9)
    data = c.compress(text.encode()) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\0\0\xff\xff")
    return data[:-4]


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Keep-alive that gives up on a silent client within a fraction of a second."""
    live = LiveServer(
        tmp_path_factory.mktemp("impatient"), ws_ping_interval_s=0.2, ws_ping_timeout_s=0.2
    ).start()
    yield live
    live.stop()


def silent_client(server: LiveServer, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A raw client sends a request, then never reads nor answers a ping; returns its video as
    it was when keep-alive closed the stream, and as it ended."""
    prompt = f"silent {os.urandom(4).hex()}"

    def video() -> dict[str, Any] | None:
        videos = server.client.get("/v1/videos", params={"limit": 100}).json()["data"]
        return next((v for v in videos if v["prompt"] == prompt), None)

    sock = open_raw(server.port)
    try:
        assert read_head(sock)[0] == 101
        message = request(prompt=prompt, latent_frames=12, steps=4, **fields)
        sock.sendall(client_frame(message.encode()))
        wait_until(lambda: video() is not None, timeout=30)  # stored: its stream is open
        wait_until(lambda: server.runtime.open_streams == 0, timeout=30, interval=0.05)
        at_close = video()
        assert at_close is not None
        return at_close, server.wait_done(at_close["id"])
    finally:
        sock.close()


def test_a_client_that_never_reads_still_gets_a_completed_video(impatient: LiveServer) -> None:
    """Keep-alive closes the silent client's stream mid-generation; the job completes."""
    at_close, video = silent_client(impatient)
    assert at_close["status"] in ("queued", "in_progress"), at_close  # really cut mid-way
    assert video["status"] == "completed", video
    assert impatient.client.get(f"/v1/videos/{video['id']}/content").status_code == 200


def test_a_silent_client_that_opted_in_is_cancelled(impatient: LiveServer) -> None:
    _, video = silent_client(impatient, cancel_on_disconnect=True)  # cancelled: cut mid-way
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled", video


def test_an_inflated_message_is_capped_by_the_size_limit(server: LiveServer) -> None:
    """permessage-deflate: 4 MiB that compress to a few kB, over uvicorn's `ws_max_size` (2 x
    the upload limit + 1 MiB): closed with 1009 while inflating, before the route reads it."""
    limit = 2 * server.settings.max_upload_bytes + (1 << 20)
    text = json.dumps({"prompt": "a" * (limit + (1 << 20))})
    sock = open_raw(server.port, "Sec-WebSocket-Extensions: permessage-deflate")
    try:
        status, rest = read_head(sock)
        assert status == 101
        payload = deflated(text)
        assert len(payload) < len(text) // 100
        sock.sendall(client_frame(payload, compressed=True))
        data = rest
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    assert data[:2] == bytes([0x88, len(data) - 2])  # one close frame, nothing before it
    assert int.from_bytes(data[2:4], "big") == 1009
