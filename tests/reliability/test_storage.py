"""A data directory that cannot be written: read-only or full, at start-up or while serving.

At start-up `packcache serve` stops with one clear error naming the directory (exit status 3,
uvicorn's start-up failure). While serving, a request that cannot be stored gets 503 with code
`storage_error` (websocket: the same error, then close 1013); videos completed before stay
listed and served byte for byte, and once there is room again the server goes on. When the
disk fills during a generation, that request fails with `storage_error` and the process lives
(an MP4 writer whose write failed closes without crashing it).

The filesystems are small tmpfs mounts made for each test (root only, as CI runs): `ro` for a
read-only directory (root ignores file modes, not a read-only mount), a filler file for a full
one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.reliability.conftest import ROOT, SMALL, Served, tmpfs
from tests.server.test_stream import request

STARTUP_FAILURE = 3  # uvicorn's exit status when the app's start-up fails
LONGER: dict[str, Any] = {"size": "64x64", "latent_frames": 6, "steps": 2}  # about a second


def fill(path: Path) -> None:
    """Write zeros into `path/filler` until the filesystem is full."""
    subprocess.run(["dd", "if=/dev/zero", f"of={path / 'filler'}", "bs=64k"], capture_output=True)


@pytest.mark.parametrize("state", ["read-only", "full"])
def test_an_unusable_data_dir_stops_startup_clearly(
    state: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "mnt", "4m", read_only=state == "read-only") as mnt:
        if state == "full":
            fill(mnt)
        served = serve(data_dir=mnt)
        assert served.wait_exit(timeout=120) == STARTUP_FAILURE
        output = served.output()
    reason = "Read-only file system" if state == "read-only" else "No space left on device"
    assert f"cannot write to the data directory {mnt / 'videos'}: {reason}" in output, output


def stream_refusal(served: Served) -> tuple[dict[str, Any], int | None]:
    """One websocket request refused before it starts: its error message and close code."""
    with connect(served.ws_url) as ws:
        ws.send(request(**SMALL))
        reply = json.loads(ws.recv(timeout=60))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    return reply, ws.close_code


def test_a_full_disk_fails_requests_clearly_and_keeps_earlier_videos(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        served = serve(data_dir=mnt).wait_ready()
        done = [served.create(seed=i).json()["id"] for i in range(2)]
        assert {served.wait_done(v)["status"] for v in done} == {"completed"}
        videos = {v: served.client.get(f"/v1/videos/{v}/content").content for v in done}

        fill(mnt)
        refused = served.create()
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "storage_error" and "disk is full" in error["message"]
        reply, code = stream_refusal(served)
        assert reply["type"] == "error" and reply["error"]["code"] == "storage_error"
        assert code == 1013
        for video_id, content in videos.items():  # still listed, still served, byte for byte
            assert served.client.get(f"/v1/videos/{video_id}/content").content == content
        listed = served.client.get("/v1/videos").json()["data"]
        assert [v["id"] for v in listed] == done[::-1]
        assert served.client.get("/ready").status_code == 200

        (mnt / "filler").unlink()  # room again: the server goes on without a restart
        again = served.create().json()
        assert served.wait_done(again["id"])["status"] == "completed"
        served.stop()
    assert "unhandled error" not in served.output()


def stream_to_end(served: Served, started: threading.Event, out: dict[str, Any]) -> None:
    """A websocket request; sets `started` when it starts; `out` gets its last JSON message
    and the close code."""
    with connect(served.ws_url) as ws:
        ws.send(request(**LONGER))
        while True:
            message = ws.recv(timeout=60)
            kind = json.loads(message)["type"] if isinstance(message, str) else "frame"
            if kind == "started":
                started.set()
            elif kind in ("completed", "error"):
                out["final"] = json.loads(message)
                break
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    out["code"] = ws.close_code


@pytest.mark.parametrize("store", ["elsewhere", "same-disk"])
def test_the_disk_fills_during_generation(
    store: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """The MP4 writer fails mid-video (and, with the database on the same disk, so does the
    record): both requests fail with `storage_error`, the process lives on, nothing hangs."""
    args = ["--store-url", f"sqlite:///{tmp_path / 'jobs.sqlite3'}"] if store == "elsewhere" else []
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        served = serve(*args, data_dir=mnt).wait_ready()
        earlier = served.create().json()["id"]
        assert served.wait_done(earlier)["status"] == "completed"
        content = served.client.get(f"/v1/videos/{earlier}/content").content
        streamed: dict[str, Any] = {}
        started = threading.Event()
        streaming = threading.Thread(target=stream_to_end, args=(served, started, streamed))
        streaming.start()
        rest = served.create(**LONGER).json()["id"]
        assert started.wait(timeout=30)
        fill(mnt)  # the MP4s are open: they fail on a write or, buffered, when closed
        streaming.join(timeout=120)
        assert streamed["final"]["error"]["code"] == "storage_error", streamed
        assert str(mnt) not in streamed["final"]["error"]["message"]  # the reason, not a path
        assert streamed["code"] == 1011
        if store == "elsewhere":  # the record can be written: it says why
            video = served.wait_done(rest)
            assert video["status"] == "failed" and video["error"]["code"] == "storage_error"
        assert served.proc.poll() is None, served.output()  # alive: no crash in the encoder
        (mnt / "filler").unlink()
        assert served.client.get(f"/v1/videos/{earlier}/content").content == content
        again = served.create().json()["id"]
        assert served.wait_done(again)["status"] == "completed"
        served.stop()


WRITE_ON_A_FULL_DISK = """
import sys
import numpy as np
from packcache_core.video.output import Mp4Writer

writer = Mp4Writer(sys.argv[1], 12)
noise = np.random.default_rng(0).integers(0, 255, (4, 64, 128, 3), np.uint8)  # (N, H, W, 3)
try:
    for _ in range(100):
        writer.write(noise)
except OSError as e:
    print("write failed:", e.strerror)
try:
    writer.close()
except OSError as e:
    print("close failed:", e.strerror)
"""


def test_an_mp4_writer_that_failed_closes_without_crashing(tmp_path: Path) -> None:
    """A failed write (the disk filled up) then `close`: libav used to crash the process on the
    flush (SIGSEGV, status -11), taking every other request with it. Run apart for that."""
    with tmpfs(tmp_path / "mnt", "512k") as mnt:
        fill(mnt)
        script = [sys.executable, "-c", WRITE_ON_A_FULL_DISK, str(mnt / "video.part.mp4")]
        done = subprocess.run(script, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "write failed: No space left on device" in done.stdout
