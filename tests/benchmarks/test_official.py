"""The official-loop lane of `cache_policies.py` (`benchmarks/official.py`).

What it is: a check that `--official` with a folder that is not a Lumos-1 checkout fails before
the run with a message naming what is missing (needs nothing), and, where a checkout is given
in PACKCACHE_OFFICIAL_LUMOS (the folder lumos-1/lumos-1 of alibaba-damo-academy/Lumos) and
transformers 4.44-4.48 is importable, a tiny run of the lane: the official loop on our weights
and tokens, with our draws, keeps `full`'s tokens. CI has no checkout, so that test skips there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_repo_script

SCRIPT = str(ROOT / "benchmarks" / "cache_policies.py")
TRANSFORMERS = "transformers 4.44-4.48"  # `pip install '.[official]'`


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_official_path_that_is_not_a_checkout_fails_naming_what_is_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("")
    proc = run_cli("--official", str(tmp_path))
    assert proc.returncode == 2  # argparse's usage error, before any lane runs
    assert "not a Lumos-1 checkout" in proc.stderr
    assert "inference_solver_vid.py" in proc.stderr
    assert "model/chameleon/modeling_chameleon_mm_rope.py" in proc.stderr
    assert "model/__init__.py" not in proc.stderr.split("missing:")[1]  # it exists
    assert "| frame |" not in proc.stdout


def test_official_path_that_does_not_exist_fails(tmp_path: Path) -> None:
    proc = run_cli("--official", str(tmp_path / "absent"))
    assert proc.returncode == 2
    assert f"--official {tmp_path / 'absent'}: not a folder" in proc.stderr


def _checkout() -> Path:
    """The checkout from PACKCACHE_OFFICIAL_LUMOS, or skip (no checkout or no transformers)."""
    env = os.environ.get("PACKCACHE_OFFICIAL_LUMOS")
    if not env:
        pytest.skip("PACKCACHE_OFFICIAL_LUMOS is not set (a Lumos-1 checkout; CI has none)")
    try:
        import transformers
    except ImportError:
        pytest.skip(f"transformers is not installed (the lane needs {TRANSFORMERS})")
    version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    if not (4, 44) <= version < (4, 49):
        pytest.skip(f"transformers {transformers.__version__}; the lane needs {TRANSFORMERS}")
    return Path(env)  # a wrong path given on purpose fails the run below, it does not skip


def test_official_lane_keeps_full_tokens_with_shared_draws(tmp_path: Path) -> None:
    checkout = _checkout()
    out = tmp_path / "official.json"
    run_repo_script(
        "benchmarks/cache_policies.py",
        "--quick", "--frames", "3", "--no-fidelity", "--policies", "full,packcache",
        "--official", str(checkout), "--official-shared-draws", "--json", str(out),
        timeout=600,
    )  # fmt: skip
    res = json.loads(out.read_text())["official"]
    frames = res["frames"]
    assert [f["index"] for f in frames] == [1, 2]
    assert all(f["seconds"] > 0 for f in frames)
    s = res["summary"]
    assert s["shared_draws"] is True
    assert s["total_seconds"] == pytest.approx(sum(f["seconds"] for f in frames))
    assert s["last_seconds"] == frames[-1]["seconds"]
    assert set(s["speedup_total"]) == set(s["speedup_last"]) == {"full", "packcache"}
    # Same weights, tokens, seed and draws: the official loop generates full's frames (up to
    # a rare flip from float rounding between the two models' logits).
    assert s["mean_token_agreement_full"] >= 0.95
