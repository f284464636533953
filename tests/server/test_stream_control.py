"""Controlling a running stream: prompt changes, `stop` of an open-ended video, bad messages.

Real uvicorn, real `websockets` client, `builtin:tiny-random`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.server.conftest import LiveServer, wait_until
from tests.server.test_stream import request

LONGER = {"latent_frames": 6, "steps": 2}


def messages(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every JSON message until the final one (`completed` or `error`)."""
    out = []
    while True:
        message = ws.recv(timeout=60)
        if isinstance(message, bytes):
            continue
        out.append(json.loads(message))
        if out[-1]["type"] in ("completed", "error"):
            return out


def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message = ws.recv(timeout=60)
        if isinstance(message, str) and (body := json.loads(message))["type"] == kind:
            return dict(body)


def test_prompt_change_is_acknowledged_and_kept_with_the_video(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        first = until(ws, "latent_frame")
        ws.send(json.dumps({"type": "prompt", "prompt": "a blue circle rises slowly"}))
        log = messages(ws)
    assert log[-1]["type"] == "completed"
    (ack,) = [m for m in log if m["type"] == "prompt_changed"]
    assert ack["prompt"] == "a blue circle rises slowly"
    assert ack["latent_index"] in (first["latent_index"] + 1, first["latent_index"] + 2)
    # Frames after the acknowledgement are those it names: no latent frame was reported twice.
    latents = [first["latent_index"]] + [
        m["latent_index"] for m in log if m["type"] == "latent_frame"
    ]
    assert latents == list(range(1, LONGER["latent_frames"]))
    record = server.runtime.files.request(ack["id"]).read_text()
    assert json.loads(record)["prompt_changes"] == [[ack["latent_index"], ack["prompt"]]]


def test_a_prompt_too_long_for_the_held_slots_is_rejected_and_the_video_goes_on(
    server: LiveServer,
) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        until(ws, "started")
        ws.send(json.dumps({"type": "prompt", "prompt": "x" * 1500}))
        log = messages(ws)
    (rejected,) = [m for m in log if m["type"] == "rejected"]
    assert rejected["request"] == "prompt" and rejected["error"]["code"] == "prompt_too_long"
    assert "shorten it" in rejected["error"]["message"]
    assert log[-1]["type"] == "completed"


def test_stop_ends_only_an_open_ended_video(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        until(ws, "started")
        ws.send(json.dumps({"type": "stop"}))
        log = messages(ws)
    (rejected,) = [m for m in log if m["type"] == "rejected"]
    assert rejected["request"] == "stop" and rejected["error"]["code"] == "not_open_ended"
    assert log[-1]["type"] == "completed"
    assert log[-1]["stats"]["latent_frames"] == LONGER["latent_frames"]

    with connect(server.ws_url) as ws:
        ws.send(request(open_ended=True, cache_policy="sliding", steps=1))
        until(ws, "latent_frame")
        until(ws, "latent_frame")
        ws.send(json.dumps({"type": "stop"}))
        final = messages(ws)[-1]
    assert final["type"] == "completed" and final["stats"]["latent_frames"] >= 3
    video = server.client.get(f"/v1/videos/{final['id']}").json()
    assert video["status"] == "completed" and video["frames"] == final["stats"]["frames"]


def test_an_open_ended_video_whose_client_leaves_completes(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(open_ended=True, cache_policy="packcache", steps=1))
        video_id = until(ws, "latent_frame")["id"]
    video = server.wait_done(video_id)
    assert video["status"] == "completed" and video["latent_frames"] >= 2


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"open_ended": True, "cache_policy": "full"}, "cache_policy"),
        ({"open_ended": True, "cache_policy": "sliding", "rebase": False}, "cache_policy"),
        ({"open_ended": "yes"}, "open_ended"),
    ],
)
def test_an_open_ended_request_that_cannot_stay_bounded_is_refused(
    server: LiveServer, fields: dict[str, Any], param: str
) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**fields))
        error = json.loads(ws.recv(timeout=60))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=60)
    assert error["type"] == "error" and error["error"]["param"] == param
    assert ws.close_code == 1007


@pytest.mark.parametrize(
    "message", [{"type": "prompt"}, {"type": "prompt", "prompt": ""}, {"type": "pause"}]
)
def test_a_malformed_control_message_closes_with_1007(
    server: LiveServer, message: dict[str, Any]
) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        video_id = until(ws, "started")["id"]
        ws.send(json.dumps(message))
        error = until(ws, "error")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=60)
    assert "only" in error["error"]["message"] and ws.close_code == 1007
    wait_until(lambda: video_id not in server.runtime.require_engine().job_ids(), timeout=60)
