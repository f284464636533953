"""Nothing accepted is lost: a server killed with SIGKILL resumes its jobs on restart.

Real `packcache serve` processes on one data directory. Each job's record (request, image,
one file per finished latent frame with the sampler's state) is what the restarted process
carries on from; the result must be the video an uninterrupted run makes, code for code and
pixel for pixel (MP4s decoded with PyAV and compared exactly).
"""

from __future__ import annotations

import io
import signal
from pathlib import Path

import av
import numpy as np
import torch

from packcache_core.record import FrameRecord
from tests.reliability.conftest import SMALL, Served
from tests.server.conftest import wait_until

# Long enough that two jobs are mid-video when the process is killed.
LONG = SMALL | {"latent_frames": 12, "steps": 6}


def _frames(mp4: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(mp4)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _codes(data_dir: Path, job_id: str) -> list[torch.Tensor]:
    return FrameRecord(data_dir / "videos" / job_id / "frames").read().codes


def _recorded(data_dir: Path, job_id: str) -> int:
    return len(list((data_dir / "videos" / job_id / "frames").glob("*.safetensors")))


def test_kill_9_with_two_running_and_three_queued_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Served(data, tmp_path, "--max-running", "2").wait_ready()
    try:
        ids = [first.create(seed=seed, **LONG).json()["id"] for seed in range(5)]
        # Kill once two jobs have recorded frames (and are not done) while three wait.
        wait_until(lambda: sum(_recorded(data, i) >= 2 for i in ids) >= 2, timeout=120)
        statuses = [first.client.get(f"/v1/videos/{i}").json()["status"] for i in ids]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    finally:
        first.stop()
    assert sorted(statuses) == ["in_progress"] * 2 + ["queued"] * 3, statuses
    cut = {i: _recorded(data, i) for i in ids}
    assert sorted(cut.values())[-2:] >= [2, 2] and max(cut.values()) < LONG["latent_frames"] - 1

    second = Served(data, tmp_path, "--max-running", "2").wait_ready()
    try:
        generated = LONG["latent_frames"] - 1
        for i in ids:
            video = second.wait_done(i, timeout=300)
            assert video["status"] == "completed", video
            # Recorded frames were replayed, not denoised again: only the rest took steps.
            assert video["stats"]["steps"] == (generated - cut[i]) * LONG["steps"], (i, cut[i])
        resumed = {i: second.client.get(f"/v1/videos/{i}/content").content for i in ids}
        # The same requests, uninterrupted, on the same server.
        fresh = [second.create(seed=seed, **LONG).json()["id"] for seed in range(5)]
        for i in fresh:
            assert second.wait_done(i, timeout=300)["status"] == "completed"
        for old, new in zip(ids, fresh, strict=True):
            a, b = _codes(data, old), _codes(data, new)
            assert len(a) == len(b) == generated
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), old
            got = _frames(resumed[old])
            want = _frames(second.client.get(f"/v1/videos/{new}/content").content)
            assert len(got) == len(want) == 1 + 4 * generated
            assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True)), old
    finally:
        second.stop()
