"""Controlling a running stream: prompt changes, `stop` of an open-ended video, bad messages.

Real uvicorn, real `websockets` client, `builtin:tiny-random`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    message = rejected["error"]["message"]
    assert "shorten it" in message and "1500 characters" in message  # tokens and characters
    assert "stream_prompt_tokens = 256" in message  # the limit that applies, named
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
        ({"type": "stop", "now": True}, "invalid_message"),
        ({"type": "cancel", "now": True}, "invalid_message"),
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
    if "now" in message:  # the field at fault is named
        assert rejected["error"]["param"] == "now"
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


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "pause"}, "invalid_message"),
        (["prompt"], "invalid_message"),
        ("not json", "invalid_message"),
        (b"\x89PNG", "invalid_message"),
        ("x" * 30_000, "message_too_large"),  # over 12 * max_prompt_chars + 1024
    ],
)
def test_a_malformed_or_oversized_control_message_is_rejected_and_the_video_kept(
    server: LiveServer, message: Any, code: str
) -> None:
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        until(ws, "started")
        ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
        log = messages(ws)
    (rejected,) = [m for m in log if m["type"] == "rejected"]
    assert rejected["request"] is None and rejected["error"]["code"] == code
    assert log[-1]["type"] == "completed"
    assert server.client.get(f"/v1/videos/{log[-1]['id']}").json()["status"] == "completed"


def test_a_long_non_ascii_prompt_is_answered_and_the_video_kept(server: LiveServer) -> None:
    """1,600 characters outside the BMP (within max_prompt_chars) escape to 19,200 in JSON:
    the message is read, the prompt refused for the text slots, and the video goes on."""
    prompt = "\U0001f600" * 1600
    with connect(server.ws_url) as ws:
        ws.send(request(**LONGER))
        until(ws, "started")
        ws.send(json.dumps({"type": "prompt", "prompt": prompt}))  # ASCII-escaped
        log = messages(ws)
    (rejected,) = [m for m in log if m["type"] == "rejected"]
    assert rejected["request"] == "prompt" and rejected["error"]["code"] == "prompt_too_long"
    assert log[-1]["type"] == "completed"
    assert server.client.get(f"/v1/videos/{log[-1]['id']}").json()["status"] == "completed"


def test_a_flood_of_prompts_is_bounded_and_stop_overtakes_it(server: LiveServer) -> None:
    """40 prompt messages then `stop`: the excess is rejected at once, each prompt is
    answered exactly once, and the record keeps only the changes that took effect."""
    n = 40
    with connect(server.ws_url) as ws:
        ws.send(request(open_ended=True, cache_policy="sliding", steps=1))
        until(ws, "latent_frame")
        for i in range(n):
            ws.send(json.dumps({"type": "prompt", "prompt": f"a blue circle number {i}"}))
        ws.send(json.dumps({"type": "stop"}))
        log = messages(ws)
    assert log[-1]["type"] == "completed"
    changed = [m for m in log if m["type"] == "prompt_changed"]
    rejected = [m for m in log if m["type"] == "rejected"]
    assert len(changed) + len(rejected) == n  # every prompt answered once
    assert any(m["error"]["code"] == "too_many_prompts" for m in rejected)
    record = json.loads(server.runtime.files.request(log[-1]["id"]).read_text())
    assert record["prompt_changes"] == [[m["latent_index"], m["prompt"]] for m in changed]
    indexes = [m["latent_index"] for m in changed]
    assert indexes == sorted(set(indexes))  # at most one change per frame


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One request at a time: a second one waits in the queue."""
    live = LiveServer(
        tmp_path_factory.mktemp("single"), max_running=1, max_bounded_latent_frames=4
    ).start()
    yield live
    live.stop()


def queued_behind_a_long_video(live: LiveServer, ws: ClientConnection, **fields: Any) -> str:
    """Start a long video on `live` (returns its id), then a request on `ws` that queues."""
    blocker = live.create(latent_frames=12, steps=4, cache_policy="full")
    assert blocker.status_code == 200, blocker.text
    wait_until(lambda: live.runtime.require_engine().stats.running == 1, timeout=60)
    ws.send(request(**fields))
    assert until(ws, "queued")["position"] >= 1
    return str(blocker.json()["id"])


def test_a_queued_stream_reads_cancel_behind_a_prompt(single: LiveServer) -> None:
    with connect(single.ws_url) as ws:
        blocker = queued_behind_a_long_video(single, ws, **LONGER, cache_policy="full")
        ws.send(json.dumps({"type": "prompt", "prompt": "a blue circle"}))
        ws.send(json.dumps({"type": "cancel"}))
        log = messages(ws)
    assert [m["type"] for m in log][-1] == "error" and log[-1]["error"]["code"] == "cancelled"
    assert "started" not in [m["type"] for m in log]  # cancelled while it waited
    assert "client" in log[-1]["error"]["message"]
    single.runtime.require_engine().cancel(blocker)


def test_an_open_ended_stream_stopped_before_its_first_frame_keeps_no_video(
    single: LiveServer,
) -> None:
    with connect(single.ws_url) as ws:
        blocker = queued_behind_a_long_video(
            single, ws, open_ended=True, cache_policy="sliding", steps=1
        )
        ws.send(json.dumps({"type": "stop"}))
        log = messages(ws)
    final = log[-1]
    assert final["type"] == "error" and final["error"]["code"] == "stopped_before_first_frame"
    assert "started" not in [m["type"] for m in log]
    video = single.wait_done(final["id"])
    assert video["status"] == "failed"
    assert video["error"]["code"] == "stopped_before_first_frame"
    single.runtime.require_engine().cancel(blocker)


def test_a_remix_longer_than_the_limit_is_refused_naming_it(single: LiveServer) -> None:
    """An open-ended source that ran past max_bounded_latent_frames (4 here) is not remixed
    cut short without a word: 400, naming the limit."""
    with connect(single.ws_url) as ws:
        ws.send(request(open_ended=True, cache_policy="sliding", steps=1))
        for _ in range(4):
            until(ws, "latent_frame")
        ws.send(json.dumps({"type": "stop"}))
        source = messages(ws)[-1]
    assert source["type"] == "completed" and source["stats"]["latent_frames"] >= 5
    remix = single.client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a blue one"})
    assert remix.status_code == 400, remix.text
    error = remix.json()["error"]
    assert "allows 2 to 4" in error["message"] and "open-ended source" in error["message"]
