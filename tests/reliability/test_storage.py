"""A data directory that cannot be written: read-only or full, at start-up or while serving.

At start-up `packcache serve` stops with one clear error naming the directory (exit status 3,
uvicorn's start-up failure). The filesystems are small tmpfs mounts made for each test (root
only, as CI runs): `ro` for a read-only directory (root ignores file modes, not a read-only
mount), a filler file for a full one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.conftest import Served, tmpfs

STARTUP_FAILURE = 3  # uvicorn's exit status when the app's start-up fails


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
