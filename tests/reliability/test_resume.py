"""Nothing accepted is lost: a server killed with SIGKILL resumes its jobs on restart.

Real `packcache serve` processes on one data directory. Each job's record (request, image,
one file per finished latent frame with the sampler's state) is what the restarted process
carries on from; the result must be the video an uninterrupted run makes, code for code and
pixel for pixel (MP4s decoded with PyAV and compared exactly).
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.reliability.conftest import (
    LONG,
    Served,
    assert_same_video,
    recorded_codes,
    recorded_frames,
)
from tests.server.conftest import wait_until


def test_kill_9_with_two_running_and_three_queued_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Served(data, tmp_path, "--max-running", "2").wait_ready()
    try:
        ids = [first.create(seed=seed, **LONG).json()["id"] for seed in range(5)]
        # Kill once two jobs have recorded frames (and are not done) while three wait.
        wait_until(lambda: sum(recorded_frames(data, i) >= 2 for i in ids) >= 2, timeout=120)
        statuses = [first.client.get(f"/v1/videos/{i}").json()["status"] for i in ids]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    finally:
        first.stop()
    assert sorted(statuses) == ["in_progress"] * 2 + ["queued"] * 3, statuses
    cut = {i: recorded_frames(data, i) for i in ids}
    assert sorted(cut.values())[-2:] >= [2, 2] and max(cut.values()) < LONG["latent_frames"] - 1

    second = Served(data, tmp_path, "--max-running", "2").wait_ready()
    try:
        generated = LONG["latent_frames"] - 1
        for i in ids:
            video = second.wait_done(i, timeout=300)
            assert video["status"] == "completed", video
            # Recorded frames were replayed, not denoised again: only the rest took steps.
            assert video["stats"]["steps"] == (generated - cut[i]) * LONG["steps"], (i, cut[i])
        # The same requests, uninterrupted, on the same server.
        fresh = [second.create(seed=seed, **LONG).json()["id"] for seed in range(5)]
        for i in fresh:
            assert second.wait_done(i, timeout=300)["status"] == "completed"
        for old, new in zip(ids, fresh, strict=True):
            assert len(recorded_codes(data, old)) == generated
            assert_same_video(second, data, old, new)
    finally:
        second.stop()
