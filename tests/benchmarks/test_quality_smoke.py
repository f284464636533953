"""Smoke test of `benchmarks/quality.py` on the shipped `builtin:demo-long`: a tiny run as a
subprocess, then its JSON (the keys the quality issue names) and PNG.

Numbers are the script's to print; only their presence, ranges and consistency are checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_repo_script


def test_quality_writes_rows_comparisons_and_a_curve(tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    args = ["--quick", "--clips", "3", "--free-clips", "1", "--curve-clips", "1"]
    proc = run_repo_script("benchmarks/quality.py", *args, "--json", str(out))
    assert "| policy | history tokens |" in proc.stdout
    data = json.loads(out.read_text())
    for factor in ("1x", "2x"):
        res = data["summary"][factor]
        window = res["sliding"]["history_tokens"]
        for name in ("full", "packcache", "packcache-eq", "sliding", "sliding-norebase", "sink"):
            row = res[name]
            assert 0.0 <= row["tf_accuracy"] <= 1.0 and 0.0 <= row["tf_accuracy_reentry"] <= 1.0
            if name not in ("full", "packcache"):  # equal memory: 1.0-1.1x the one-frame window
                assert 1.0 <= row["history_tokens"] / window <= 1.1
        # the paper's rule at budget 1 also keeps each held frame's boundary tokens (W = 3 frames)
        assert res["packcache"]["history_tokens"] > res["packcache-eq"]["history_tokens"]
        assert res["full"]["history_tokens"] > 5 * window
        pairs = {(c["a"], c["b"]) for c in res["comparisons"]}
        assert {("packcache-eq", "sliding"), ("packcache-eq", "sliding-norebase")} <= pairs
        for c in res["comparisons"]:
            assert c["ci_low"] <= c["diff"] <= c["ci_high"]
        assert (
            res["references"]["oracle"]["tf_accuracy"] >= res["references"]["freeze"]["tf_accuracy"]
        )
        assert {"sliding", "packcache", "sink"} <= set(res["curve"])
    assert out.with_suffix(".png").stat().st_size > 10_000
