"""`POST /v1/videos/extensions`: continuing a completed video from its record.

Real uvicorn with `builtin:tiny-random`; the by-reference forms (JSON, and a form with a
`video[id]` field) through httpx, since the `openai` SDK can only upload a file there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from packcache_core.pipeline import VideoParams
from packcache_core.policy import make_policy
from packcache_core.record import FrameRecord, request_from_json, request_to_json
from packcache_core.request import Limits, extension
from server.storage.recorder import VideoFiles
from tests.server.conftest import LiveServer, png_bytes

SOURCE: dict[str, Any] = {"latent_frames": 2, "steps": 2, "seed": 7}


def codes(server: LiveServer, video_id: str) -> list[torch.Tensor]:
    return FrameRecord(server.runtime.files.folder(video_id) / "frames").read().codes


def completed(server: LiveServer, response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    video = server.wait_done(response.json()["id"])
    assert video["status"] == "completed", video
    return video


@pytest.mark.parametrize("policy", ["packcache", "full"])
def test_extension_equals_one_uninterrupted_request(server: LiveServer, policy: str) -> None:
    """2 latent frames extended by 2 are the 4 of one request (both state 1 second)."""
    source = completed(server, server.create(**SOURCE, cache_policy=policy))
    body = {"video": {"id": source["id"]}, "prompt": "a red square drifting", "latent_frames": 2}
    extended = completed(server, server.client.post("/v1/videos/extensions", json=body))
    whole = completed(server, server.create(**SOURCE | {"latent_frames": 4}, cache_policy=policy))
    assert extended["latent_frames"] == 4 and extended["frames"] == whole["frames"] == 13
    got, want = codes(server, extended["id"]), codes(server, whole["id"])
    assert len(got) == len(want) == 3
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert torch.equal(got[0], codes(server, source["id"])[0])  # the source's frame, replayed
    mp4 = server.client.get(f"/v1/videos/{extended['id']}/content")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"


def test_extension_as_a_form_with_a_new_prompt(server: LiveServer) -> None:
    source = completed(server, server.create(**SOURCE))
    form = {"video[id]": source["id"], "prompt": "a blue circle", "seconds": "1"}
    extended = completed(server, server.client.post("/v1/videos/extensions", data=form))
    # one second at 12 fps: 12 more RGB frames, 3 latent frames
    assert extended["latent_frames"] == 2 + 3 and extended["prompt"] == "a red square drifting"
    request = json.loads(server.runtime.files.request(extended["id"]).read_text())
    assert request["prompt_changes"] == [[2, "a blue circle"]]
    assert torch.equal(codes(server, extended["id"])[0], codes(server, source["id"])[0])


def test_extension_errors(server: LiveServer) -> None:
    post = server.client.post
    source = completed(server, server.create(**SOURCE))
    ref = {"video": {"id": source["id"]}, "prompt": "on"}
    running = server.create(latent_frames=12, steps=4).json()["id"]
    cases: list[tuple[Any, int, str]] = [
        (
            post("/v1/videos/extensions", json=ref | {"video": {"id": running}, "seconds": "1"}),
            409,
            "video",
        ),
        (
            post(
                "/v1/videos/extensions",
                json=ref | {"video": {"id": "video_" + "0" * 32}, "seconds": "1"},
            ),
            404,
            "video_id",
        ),
        (post("/v1/videos/extensions", json=ref), 400, "seconds"),  # no length
        (
            post("/v1/videos/extensions", json=ref | {"seconds": "1", "latent_frames": 2}),
            400,
            "seconds",
        ),
        (post("/v1/videos/extensions", json=ref | {"latent_frames": 1000}), 400, "latent_frames"),
        (post("/v1/videos/extensions", json={"prompt": "on", "seconds": "1"}), 400, "video"),
        (post("/v1/videos/extensions", json=ref | {"seconds": "1", "size": "64x64"}), 400, "size"),
        (
            post(
                "/v1/videos/extensions",
                files={"video": ("a.mp4", b"\0" * 64)},
                data={"prompt": "on", "seconds": "1"},
            ),
            400,
            "video",
        ),
        (
            post(
                "/v1/videos/extensions", content=b"video=1", headers={"content-type": "text/plain"}
            ),
            400,
            "",
        ),
    ]
    failed = dataclasses.replace(
        server.runtime.store.get(source["id"]), id="video_" + "f" * 32, status="failed"
    )
    server.runtime.store.create(failed)
    url = "/v1/videos/extensions"
    cases.append((post(url, json=ref | {"video": {"id": failed.id}, "seconds": "1"}), 409, "video"))
    for response, status, param in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["message"] and (error["param"] or "") == param, error
    server.client.delete(f"/v1/videos/{running}")


def test_two_prompts_for_one_frame_keep_the_order_sent(tmp_path: Path) -> None:
    """Generation follows the last prompt sent for a frame; the record and an extension do
    too (they sorted the texts: 'zebra' after 'apple' won, whatever the order sent)."""
    files = VideoFiles(tmp_path / "videos")
    params = VideoParams("a red square", 4, size=(64, 64), policy=make_policy("packcache"))
    files.save_request("v", params, b"image")
    files.add_prompt_change("v", 2, "zebra stripes")
    files.add_prompt_change("v", 2, "apple tree")  # sent later: the one that takes effect
    saved = request_from_json(json.loads(files.request("v").read_text()))
    assert saved.prompt_changes == ((2, "apple tree"),)
    assert saved.prompt_at(3) == "apple tree"
    # Continuing with the text the source did not follow is a change; with its own, none.
    other = extension(saved, 3, "zebra stripes", 2, Limits())
    assert other.prompt_changes == ((2, "apple tree"), (4, "zebra stripes"))
    assert extension(saved, 3, "apple tree", 2, Limits()).prompt_changes == ((2, "apple tree"),)
    # A record written before (both changes kept) reads as what took effect.
    both = [[2, "zebra stripes"], [2, "apple tree"]]
    assert request_from_json(request_to_json(params) | {"prompt_changes": both}) == saved


def create_for(server: LiveServer, seconds: str, policy: str) -> Any:
    """POST /v1/videos as the OpenAI SDK sends it: `seconds`, no frame count."""
    form = {"prompt": "a red square", "size": "64x64", "steps": "1", "seconds": seconds}
    files = {"input_reference": ("in.png", png_bytes(), "image/png")}
    return server.client.post("/v1/videos", data=form | {"cache_policy": policy}, files=files)


@pytest.mark.parametrize("seconds", ["4", "8", "12", "16", "20"])
def test_every_seconds_the_sdk_offers_is_accepted_with_a_bounded_policy(
    server: LiveServer, seconds: str
) -> None:
    reply = create_for(server, seconds, "sliding")
    assert reply.status_code == 200, reply.text
    assert reply.json()["latent_frames"] == 3 * int(seconds) + 1
    server.client.delete(f"/v1/videos/{reply.json()['id']}")  # accepted is what is tested


def test_full_keeps_the_memory_bound_length_limit_and_says_so(server: LiveServer) -> None:
    reply = create_for(server, "8", "full")  # 25 latent frames
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "seconds" and "grows with the video" in error["message"]
    assert "up to 121" in error["message"]  # what a bounded policy allows


def test_a_bounded_extension_chain_is_held_to_the_bounded_limit(server: LiveServer) -> None:
    source = completed(server, server.create(**SOURCE, cache_policy="sliding"))
    ref = {"video": {"id": source["id"]}, "prompt": "on"}
    longer = server.client.post("/v1/videos/extensions", json=ref | {"seconds": "8"})
    assert longer.status_code == 200, longer.text  # 2 + 24 latent frames
    server.client.delete(f"/v1/videos/{longer.json()['id']}")
    too_long = server.client.post("/v1/videos/extensions", json=ref | {"latent_frames": 120})
    assert too_long.status_code == 400
    assert "extended video would have 122" in too_long.json()["error"]["message"]
