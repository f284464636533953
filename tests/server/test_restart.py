"""Persistence: a server restarted on the same data directory still serves completed videos,
and reports jobs a dead process left queued or running as failed."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av

from server.storage.store import JobRecord, SqliteJobStore, Status
from tests.server.conftest import LiveServer


def orphan(job_id: str, status: Status) -> JobRecord:
    return JobRecord(
        id=job_id,
        status=status,
        created_at=time.time(),
        model="builtin:tiny-random",
        prompt="left behind",
        size="64x64",
        seconds="1",
        frames=13,
        latent_frames=4,
        fps=12,
        seed=0,
        steps=2,
        cache_policy="packcache",
    )


def frames_in(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_restart_keeps_completed_videos(tmp_path: Path) -> None:
    first = LiveServer(tmp_path).start()
    try:
        video = first.create().json()
        assert first.wait_done(video["id"])["status"] == "completed"
        before = first.client.get(f"/v1/videos/{video['id']}/content").content
    finally:
        first.stop()

    # What a killed process leaves: records still queued / running, a partial file.
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    queued, running = "video_" + "a" * 32, "video_" + "b" * 32
    store.create(orphan(queued, "queued"))
    store.create(orphan(running, "in_progress"))
    store.close()
    partial = tmp_path / "videos" / running / "video.part.mp4"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a video")

    second = LiveServer(tmp_path).start()
    try:
        again = second.client.get(f"/v1/videos/{video['id']}").json()
        assert again["status"] == "completed" and again["stats"]["frames"] == 9
        after = second.client.get(f"/v1/videos/{video['id']}/content").content
        assert after == before and frames_in(after) == 9
        for job_id in (queued, running):
            left = second.client.get(f"/v1/videos/{job_id}").json()
            assert left["status"] == "failed"
            assert left["error"]["code"] == "server_restarted"
            assert "could not resume it (its saved request is gone)" in left["error"]["message"]
        assert not partial.exists()
        listed = [v["id"] for v in second.client.get("/v1/videos").json()["data"]]
        assert set(listed) == {video["id"], queued, running}
    finally:
        second.stop()
