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
    assert error["id"] is None  # no video was made: none is named
    assert ws.close_code == 1007


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "prompt"}, "invalid_prompt"),
        ({"type": "prompt", "prompt": ""}, "invalid_prompt"),
        ({"type": "prompt", "prompt": 5}, "invalid_prompt"),
        ({"type": "stop", "now": True}, "invalid_prompt"),
        ({"type": "prompt", "prompt": "y" * 2001}, "prompt_too_long"),  # max_prompt_chars
    ],
)
def test_a_bad_prompt_or_stop_message_is_rejected_and_the_video_goes_on(
    server: LiveServer, message: dict[str, Any], code: str
) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        until(ws, "started")
        ws.send(json.dumps(message))
        log = messages(ws)
    (rejected,) = [m for m in log if m["type"] == "rejected"]
    assert rejected["request"] == message["type"] and rejected["error"]["code"] == code
    assert log[-1]["type"] == "completed"


def test_a_remix_of_an_open_ended_video_is_a_video_of_its_length(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(open_ended=True, cache_policy="packcache", steps=1, seed=3))
        until(ws, "latent_frame")
        ws.send(json.dumps({"type": "prompt", "prompt": "a blue circle"}))
        until(ws, "prompt_changed")
        until(ws, "latent_frame")
        ws.send(json.dumps({"type": "stop"}))
        source = messages(ws)[-1]
    assert source["type"] == "completed"
    made = source["stats"]["latent_frames"]
    remix = server.client.post(
        f"/v1/videos/{source['id']}/remix", json={"prompt": "a red square drifting"}
    )
    assert remix.status_code == 200, remix.text
    video = server.wait_done(remix.json()["id"])
    assert video["status"] == "completed" and video["latent_frames"] == made
    record = json.loads(server.runtime.files.request(video["id"]).read_text())
    assert record["open_ended"] is False and record["prompt_changes"] == []


@pytest.mark.parametrize("message", [{"type": "pause"}, ["prompt"], "not json"])
def test_a_malformed_control_message_closes_with_1007(server: LiveServer, message: Any) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        video_id = until(ws, "started")["id"]
        ws.send(message if isinstance(message, str) else json.dumps(message))
        error = until(ws, "error")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=60)
    assert "only" in error["error"]["message"] and ws.close_code == 1007
    wait_until(lambda: video_id not in server.runtime.require_engine().job_ids(), timeout=60)
