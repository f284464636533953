"""Smoke test of `benchmarks/quality.py`: a small run as a subprocess, then its JSON and PNG.

Numbers are the script's to print; only their presence and consistency are checked here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers import run_repo_script


def test_quality_writes_a_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    args = ["--pans", "1", "--others", "0", "--lengths", "1,2", "--steps", "2"]
    args += ["--policies", "full;packcache", "--json", str(out)]
    proc = run_repo_script("benchmarks/quality.py", *args)
    assert "| length | policy | kind |" in proc.stdout
    data = json.loads(out.read_text())
    trained = data["meta"]["trained_latent_frames"]
    assert set(data["summary"]) == {f"{f}x/{p}/pan" for f in (1, 2) for p in ("full", "packcache")}
    assert len(data["runs"]) == 4 * 2 * 2  # four pan directions, two policies, two lengths
    for s in data["summary"].values():
        n = s["factor"] * trained
        assert s["latent_frames"] == n and s["clips"] == 4
        for key in ("psnr", "repeat", "ceiling", "consistency"):
            assert len(s["per_frame"][key]) == n - 1
            assert all(math.isfinite(v) for v in s["per_frame"][key])
        assert 0.0 <= s["direction_accuracy"] <= 1.0
    assert out.with_suffix(".png").stat().st_size > 10_000
