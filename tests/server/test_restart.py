"""Persistence: a server restarted on the same data directory still serves completed videos,
and reports jobs a dead process left queued or running as failed."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import av
from websockets.sync.client import connect

from server.storage.store import JobRecord, SqliteJobStore, Status
from tests.server.conftest import LiveServer, wait_until
from tests.server.test_stream import request


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


def frames_recorded(live: LiveServer, video_id: str) -> int:
    return live.runtime.files.frames(video_id).count()


def test_a_job_the_server_stops_before_it_finishes_resumes_paced(tmp_path: Path) -> None:
    """A stop that leaves a job unfinished (a drain out of time, the app's end) keeps it
    resumable, paced if it was: the next server on the data completes it, paced."""
    first = LiveServer(tmp_path).start()
    try:
        with connect(first.ws_url) as ws:
            ws.send(request(latent_frames=16, steps=1, realtime=True))
            video_id = json.loads(ws.recv(timeout=60))["id"]
            wait_until(lambda: frames_recorded(first, video_id) >= 1, timeout=60)
            assert first.runtime.require_engine().job_ids() == [video_id]  # still running
            first.stop()
    finally:
        first.stop()
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    left = store.get(video_id)
    store.close()
    assert left is not None and left.status == "in_progress"  # not failed: resumable

    second = LiveServer(tmp_path)
    decodes: list[int] = []
    admit = second.runtime.decodes.admit
    second.runtime.decodes.admit = lambda charge: decodes.append(charge) or admit(charge)
    second.start()
    try:
        video = second.wait_done(video_id)
        assert video["status"] == "completed" and video["latent_frames"] == 16
        assert video["stats"]["realtime"] is True  # paced, as it was asked
        assert decodes and decodes[0] > 0  # its image decoded within the decode budget
    finally:
        second.stop()


def test_orphans_that_do_not_fit_the_queue_wait_for_room(tmp_path: Path) -> None:
    """Five unfinished jobs resumed by a server that holds two at a time: none fails."""
    first = LiveServer(tmp_path, max_running=1).start()
    try:
        ids = [first.create(latent_frames=6, steps=2, cache_policy="full").json()["id"]]
        ids += [first.create(latent_frames=2, steps=1).json()["id"] for _ in range(4)]
        wait_until(lambda: frames_recorded(first, ids[0]) >= 1, timeout=60)
    finally:
        first.stop()
    second = LiveServer(tmp_path, max_running=1, max_queued=1).start()
    try:
        assert [second.wait_done(i)["status"] for i in ids] == ["completed"] * 5
    finally:
        second.stop()


def test_with_sqlite_the_store_is_not_polled_for_deletes(tmp_path: Path) -> None:
    """Only this process writes a SQLite store: it learns of deletes from its own routes."""
    live = LiveServer(tmp_path).start()
    try:
        asked: list[list[str]] = []
        known = live.runtime.store.known
        live.runtime.store.known = lambda ids: asked.append(list(ids)) or known(ids)  # type: ignore[method-assign]
        video = live.create(latent_frames=6, steps=2).json()
        assert live.wait_done(video["id"])["status"] == "completed"
        assert asked == []
        doomed = live.create(latent_frames=12, steps=4).json()["id"]
        assert live.client.delete(f"/v1/videos/{doomed}").status_code == 200
        wait_until(lambda: doomed not in live.runtime.require_engine().job_ids(), timeout=30)
    finally:
        live.stop()
