"""Websocket flow control (`frame_window`, opt-in): real uvicorn, real `websockets` clients.

On loopback the kernel's socket buffers absorb a whole stream, so without flow control a slow
reader reads every message, late; with a window the server keeps at most that many frames
unacknowledged in flight and lets the rest wait (the oldest dropped), merging progress.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.server.conftest import LiveServer
from tests.server.test_stream import request

LONG = {"latent_frames": 6, "steps": 2}  # 21 RGB frames


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Keep-alive timeout 2 s: frames that hold back the final message wait that long."""
    server = LiveServer(tmp_path_factory.mktemp("flow"), ws_ping_timeout_s=2.0).start()
    yield server
    server.stop()


def read(
    ws: ClientConnection, window: int | None, pause_s: float = 0.0, ack: bool = True
) -> list[dict[str, Any]]:
    """Every JSON message to the final one, `pause_s` per message (a slow reader); with
    `ack`, each frame is acknowledged once read."""
    log: list[dict[str, Any]] = []
    while not log or log[-1]["type"] not in ("completed", "error"):
        message = ws.recv(timeout=60)
        time.sleep(pause_s)
        if isinstance(message, bytes):
            if window is not None and ack:
                with contextlib.suppress(ConnectionClosed):  # the server may be done
                    ws.send(json.dumps({"type": "ack", "index": log[-1]["index"]}))
            continue
        log.append(json.loads(message))
    return log


def test_without_acks_at_most_the_window_is_sent(live: LiveServer) -> None:
    with connect(live.ws_url) as ws:
        ws.send(request(**LONG, frame_window=2))
        log = read(ws, window=2, ack=False)
    final = log[-1]
    assert final["type"] == "completed"
    assert [m["index"] for m in log if m["type"] == "frame"] == [0, 1]
    assert final["frames_sent"] == 2 and final["dropped"] == final["stats"]["frames"] - 2
    # Everything else overtook the frames that waited: every latent frame was reported.
    latents = [m["latent_index"] for m in log if m["type"] == "latent_frame"]
    assert latents == list(range(1, LONG["latent_frames"]))


def test_a_reader_at_10_messages_a_second_gets_the_newest_frames(live: LiveServer) -> None:
    with connect(live.ws_url) as ws:  # a fast reader without flow control: every message
        ws.send(request(**LONG, seed=5))
        fast = read(ws, window=None)
    with connect(live.ws_url) as ws:
        ws.send(request(**LONG, seed=5, frame_window=2))
        slow = read(ws, window=2, pause_s=0.1)
    assert fast[-1]["type"] == slow[-1]["type"] == "completed"
    assert fast[-1]["dropped"] == 0
    assert slow[-1]["dropped"] > 0  # frames without room waited, the oldest were dropped
    frames = [m["index"] for m in slow if m["type"] == "frame"]
    assert frames == sorted(frames) and frames[-1] == slow[-1]["stats"]["frames"] - 1
    progress = [m for m in slow if m["type"] == "progress"]
    assert len(progress) < len([m for m in fast if m["type"] == "progress"])  # merged
    assert len(slow) < len(fast)


def test_an_ack_without_a_window_changes_nothing(live: LiveServer) -> None:
    with connect(live.ws_url) as ws:
        ws.send(request(latent_frames=3, steps=1))
        ws.send(json.dumps({"type": "ack", "index": 0}))
        log = read(ws, window=None)
    assert log[-1]["type"] == "completed" and log[-1]["dropped"] == 0
    assert not [m for m in log if m["type"] == "rejected"]
