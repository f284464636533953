"""Shared by the reliability tests: a real `packcache serve` process and the figures they check.

What it is: `Served`, `packcache serve` (optionally with faults injected, see `inject.py`) as a
child process on a free loopback port, its output kept in a log file, with `psutil` readings of
its memory and open files; `Tally`, the client's count of what it submitted and how each
request ended; and `tmpfs`, a small filesystem mounted for a test (a full or read-only data
directory). What it is not: the in-process server most server tests use
(`tests/server/conftest.py`'s `LiveServer`, reused here where a process is not needed).

Invariant: every process, socket and mount a test makes is gone when the test ends, and every
request loop is bounded in count and time and talks only to 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import psutil
import pytest
import torch

from packcache_core.record import FrameRecord
from tests.server.conftest import TINY, free_port, png_bytes, wait_until

ROOT = Path(__file__).resolve().parents[2]
# The smallest useful request: 64x64, 2 latent frames (5 RGB frames), 1 step per frame.
SMALL: dict[str, Any] = TINY | {"latent_frames": 2, "steps": 1}


# Long enough that two jobs are mid-video when the process is killed.
LONG = SMALL | {"latent_frames": 12, "steps": 6}


def assert_same_video(served: Served, data_dir: Path, a: str, b: str) -> None:
    """Jobs `a` and `b` made the same latent codes (their records) and the same MP4 frames."""
    codes_a, codes_b = recorded_codes(data_dir, a), recorded_codes(data_dir, b)
    assert len(codes_a) == len(codes_b) > 0
    assert all(torch.equal(x, y) for x, y in zip(codes_a, codes_b, strict=True)), (a, b)
    got, want = (
        decoded_frames(served.client.get(f"/v1/videos/{i}/content").content) for i in (a, b)
    )
    assert len(got) == len(want) == 1 + 4 * len(codes_a)
    assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True)), (a, b)


def decoded_frames(mp4: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(mp4)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def recorded_codes(data_dir: Path, job_id: str) -> list[torch.Tensor]:
    return FrameRecord(data_dir / "videos" / job_id / "frames").read().codes


def recorded_frames(data_dir: Path, job_id: str) -> int:
    return FrameRecord(data_dir / "videos" / job_id / "frames").count()


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


class Served:
    """`packcache serve ARGS` as a child process; `url`, `ws_url`, `client`, `ps`, `output()`."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *args: str,
        inject: bool = False,
        api_key: str | None = None,
        **env: str,
    ) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/videos/stream"
        self.log_path = log_dir / f"serve-{self.port}.log"  # never on a filesystem under test
        module = "tests.reliability.inject" if inject else "server"
        argv = [sys.executable, "-m", module, "serve", "--port", str(self.port)]
        argv += ["--data-dir", str(data_dir), "--log-level", "info"]
        argv += ["--model", "builtin:tiny-random", *args]  # later flags win
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PACKCACHE_")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=clean | env, stdout=log, stderr=subprocess.STDOUT
            )
        self.ps = psutil.Process(self.proc.pid)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.url, timeout=60, headers=headers)

    def wait_ready(self, timeout: float = 120) -> Served:
        wait_until(self._ready, timeout=timeout, interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.output()}"
        try:
            return self.client.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def create(self, image: bytes | None = None, **fields: Any) -> httpx.Response:
        form = {k: str(v) for k, v in ({"prompt": "a red square"} | SMALL | fields).items()}
        files = {"input_reference": ("in.png", png_bytes() if image is None else image)}
        return self.client.post("/v1/videos", data=form, files=files)

    def wait_done(self, video_id: str, timeout: float = 60) -> dict[str, Any]:
        video: dict[str, Any] = {}

        def done() -> bool:
            video.update(self.client.get(f"/v1/videos/{video_id}").json())
            return video["status"] in ("completed", "failed")

        wait_until(done, timeout=timeout, interval=0.05)
        return video

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def fds(self) -> int:
        return int(self.ps.num_fds())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """`serve(*args, data_dir=None, inject=False, api_key=None, **env)` starts a `Served`;
    all stop at the end."""
    started: list[Served] = []

    def start(*args: str, data_dir: Path | None = None, **kw: Any) -> Served:
        served = Served(data_dir or tmp_path / f"data{len(started)}", tmp_path, *args, **kw)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


class Tally:
    """What a load generator submitted and how each request ended, by outcome."""

    def __init__(self) -> None:
        self.submitted = 0
        self.outcomes: Counter[str] = Counter()

    def add(self, outcome: str) -> None:
        self.submitted += 1
        self.outcomes[outcome] += 1

    def accounted(self) -> int:
        return sum(self.outcomes.values())


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A fresh tmpfs of `size` at `path` (root only); unmounted however the test ends."""
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root (CI runs as root)"
        pytest.fail(reason) if in_ci() else pytest.skip(reason)
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        pytest.fail(reason) if in_ci() else pytest.skip(reason)
    try:
        yield path
    finally:
        _unmount(path)


def _unmount(path: Path) -> None:
    for _ in range(50):  # a child that still holds a file keeps it busy for a moment
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(path)], check=True)  # gone once released
