"""The data directory holds only what a route can serve, for as long as `retention_s` says.

A cancelled, timed-out or deleted job leaves no folder under `videos/` (only completed videos
have content to download); a finished video's `expires_at` is `completed_at + retention_s`,
and once it has passed the sweep (every `retention_sweep_s`) deletes its record and files, so
it answers 404. Real uvicorn in this process (`LiveServer`), REST with httpx and the websocket
with the `websockets` client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.server.conftest import LiveServer, wait_until
from tests.server.test_stream import read_until, request

LONG: dict[str, Any] = {"latent_frames": 21, "steps": 50}  # many seconds on the tiny model


@pytest.fixture
def live(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """A server with the settings an indirect parameter gives (else the defaults)."""
    server = LiveServer(tmp_path / "data", **getattr(request, "param", {})).start()
    yield server
    server.stop()


def folders(server: LiveServer) -> list[str]:
    return sorted(p.name for p in (server.settings.data_dir / "videos").iterdir())


@pytest.mark.parametrize("live", [{"retention_s": 1.0, "retention_sweep_s": 0.1}], indirect=True)
def test_a_video_expires_then_answers_404_and_its_files_are_gone(live: LiveServer) -> None:
    video_id = live.create().json()["id"]
    video = live.wait_done(video_id)
    assert video["status"] == "completed"
    assert video["expires_at"] == video["completed_at"] + 1

    wait_until(lambda: live.client.get(f"/v1/videos/{video_id}").status_code == 404, timeout=30)
    gone = live.client.get(f"/v1/videos/{video_id}/content")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "video_not_found"
    assert video_id not in [v["id"] for v in live.client.get("/v1/videos").json()["data"]]
    assert folders(live) == []


@pytest.mark.parametrize("live", [{"retention_s": 0.0, "retention_sweep_s": 0.1}], indirect=True)
def test_retention_zero_keeps_videos_forever(live: LiveServer) -> None:
    video = live.wait_done(live.create().json()["id"])
    assert video["status"] == "completed" and video["expires_at"] is None
    assert live.runtime.expire() == []  # what a sweep would do: nothing
    assert live.client.get(f"/v1/videos/{video['id']}/content").status_code == 200


def test_the_default_retention_is_a_week(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    try:
        video = server.wait_done(server.create().json()["id"])
        assert video["expires_at"] == video["completed_at"] + 7 * 24 * 3600
    finally:
        server.stop()


def test_a_cancelled_stream_leaves_no_files(live: LiveServer) -> None:
    with connect(live.ws_url) as ws:
        ws.send(request(**LONG))
        video_id = read_until(ws, "started")["id"]
        read_until(ws, "latent_frame")  # frames (and the thumbnail) have been written
        ws.send(json.dumps({"type": "cancel"}))
        final = read_until(ws, "completed")  # `error`: sent once the files are final
    assert final["type"] == "error" and final["error"]["code"] == "cancelled"
    video = live.client.get(f"/v1/videos/{video_id}").json()
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"
    assert folders(live) == []
    content = live.client.get(f"/v1/videos/{video_id}/content", params={"variant": "thumbnail"})
    assert content.status_code == 409


@pytest.mark.parametrize("live", [{"request_timeout_s": 1.5}], indirect=True)
def test_a_timed_out_job_leaves_no_files(live: LiveServer) -> None:
    video = live.wait_done(live.create(**LONG).json()["id"])
    assert video["status"] == "failed" and video["error"]["code"] == "timeout"
    assert video["progress"] > 0  # it ran, so it had written frames
    assert folders(live) == []


def test_a_job_deleted_while_running_leaves_no_files(live: LiveServer) -> None:
    video_id = live.create(**LONG).json()["id"]
    wait_until(lambda: live.client.get(f"/v1/videos/{video_id}").json()["progress"] > 0, timeout=60)
    assert live.client.delete(f"/v1/videos/{video_id}").status_code == 200
    wait_until(lambda: folders(live) == [], timeout=30)
    assert live.client.get(f"/v1/videos/{video_id}").status_code == 404
