"""`host.keep_freed_blocks` takes effect on glibc and changes no value (in a child process, so
this test process keeps glibc's defaults)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = """
import torch
from packcache_core.host import keep_freed_blocks

x = torch.randn(64, 1 << 16, generator=torch.Generator().manual_seed(0))  # 32 MiB
before = (x @ x.T).sum().item()
assert keep_freed_blocks() is True
after = (x @ x.T).sum().item()
assert before == after, (before, after)
"""


def test_keep_freed_blocks_on_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: keep_freed_blocks changes nothing there")
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


PREPARE = """
import torch
from packcache_core.host import DEFAULT_THREADS, prepare_host

torch.set_num_threads(2)
assert prepare_host("cpu").threads == DEFAULT_THREADS == torch.get_num_threads()
assert prepare_host("cpu", 3).threads == 3 == torch.get_num_threads()
try:
    prepare_host("cpu", 0)
except ValueError as e:
    assert "threads" in str(e)
else:
    raise AssertionError("0 threads accepted")
"""


def test_prepare_host_sets_the_threads_every_entry_point_uses() -> None:
    proc = subprocess.run([sys.executable, "-c", PREPARE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
