"""Paired differences between two `demo_motion.py` runs of the same requests.

    python benchmarks/paired.py --base before.json --new after.json
    python benchmarks/paired.py --base a100.json a196.json --new b100.json b196.json \
        --lanes "card text 13" --json out.json

What it computes: for each lane both runs have (or those named), each per-run metric in both,
the mean difference new - base and a percentile-bootstrap 95% interval over the paired runs
(`report.bootstrap`, `--draws` draws, seed 0). Runs pair by position: files given together are
joined in order (two caption ranges, say), and every pair must be the same request (caption or
scene, direction, seed), else it exits 2. Per-run metrics, where a lane has them:
- `as_asked`: the share of the run's steps that move as asked;
- `colours_as_named`, `one_colour_flood` (one colour covers `FLOOD_SHARE` of frame 0 or more),
  `anchored_as_asked`: text-only lanes;
- `turned`: prompt-change lanes (`demo_motion.turned`).
This is how the README's paired intervals for the demo model are computed. What it is not: a
comparison of different requests (two seeds, two caption sets): those are not paired.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.demo_motion import turned
from benchmarks.report import bootstrap, markdown_table, write_json
from packcache_core.demo.motion import FLOOD_SHARE

METRICS = ("as_asked", "colours_as_named", "one_colour_flood", "anchored_as_asked", "turned")


def run_metrics(run: dict[str, Any], summary: dict[str, Any]) -> dict[str, float]:
    """The metrics of one run of a lane whose summary is `summary`."""
    out = {"as_asked": float(np.mean([s["as_asked"] for s in run["steps"]]))}
    if "colours_as_named" in run:
        out["colours_as_named"] = float(run["colours_as_named"])
    if "colour_shares" in run:
        out["one_colour_flood"] = float(max(run["colour_shares"].values()) >= FLOOD_SHARE)
    if "anchored_steps" in run:
        out["anchored_as_asked"] = float(np.mean([s["as_asked"] for s in run["anchored_steps"]]))
    if "switch" in summary:
        out["turned"] = float(turned(run, summary["switch"]))
    return out


def request_of(run: dict[str, Any]) -> tuple[object, ...]:
    return (run.get("caption", run.get("image")), run["direction"], run["seed"])


def joined(paths: list[Path]) -> dict[str, list[dict[str, float]]]:
    """Lane name -> per-run metrics of `paths` joined in order (the lanes all files have)."""
    files = [json.loads(p.read_text())["lanes"] for p in paths]
    names = [n for n in files[0] if all(n in f for f in files)]
    out: dict[str, list[dict[str, float]]] = {}
    for name in names:
        rows = []
        for lanes in files:
            lane = lanes[name]
            rows += [
                {"request": request_of(r), **run_metrics(r, lane["summary"])} for r in lane["runs"]
            ]
        out[name] = rows
    return out


def compare(
    base: dict[str, list[dict[str, Any]]],
    new: dict[str, list[dict[str, Any]]],
    lanes: list[str],
    draws: int,
) -> list[dict[str, Any]]:
    """One row per (lane, metric): n, both means, the mean difference and its interval."""
    rows = []
    for name in lanes:
        a, b = base[name], new[name]
        if [r["request"] for r in a] != [r["request"] for r in b]:
            raise ValueError(f"lane {name!r}: the two sides are not the same requests in order")
        for metric in METRICS:
            if metric not in a[0] or metric not in b[0]:
                continue
            x = np.array([r[metric] for r in a])
            y = np.array([r[metric] for r in b])
            lo, hi = bootstrap(y - x, np.random.default_rng(0), draws)
            rows.append(
                {
                    "lane": name,
                    "metric": metric,
                    "n": len(x),
                    "base": float(x.mean()),
                    "new": float(y.mean()),
                    "diff": float((y - x).mean()),
                    "ci95": [lo, hi],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, nargs="+", required=True, help="demo_motion JSON(s)")
    p.add_argument("--new", type=Path, nargs="+", required=True, help="the same requests, after")
    p.add_argument("--lanes", help="comma-separated lane names (default: every common lane)")
    p.add_argument("--draws", type=int, default=10_000, help="bootstrap draws")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if len(args.base) != len(args.new):
        p.error(f"--base has {len(args.base)} files and --new {len(args.new)}: pair them")
    if args.draws < 100:
        p.error(f"--draws {args.draws}: need at least 100")
    try:
        base, new = joined(args.base), joined(args.new)
    except (OSError, ValueError, KeyError) as e:
        p.error(f"cannot read a demo_motion JSON: {e}")
    common = [n for n in base if n in new]
    lanes = common if args.lanes is None else [s.strip() for s in args.lanes.split(",")]
    unknown = [n for n in lanes if n not in common]
    if unknown:
        p.error(f"lane(s) {unknown} not in both sides; lanes in both: {common}")
    try:
        rows = compare(base, new, lanes, args.draws)
    except ValueError as e:
        p.error(str(e))
    table = [
        [
            r["lane"],
            r["metric"],
            r["n"],
            f"{r['base']:.1%}",
            f"{r['new']:.1%}",
            f"{100 * r['diff']:+.1f}",
            f"{100 * r['ci95'][0]:+.1f} to {100 * r['ci95'][1]:+.1f}",
        ]
        for r in rows
    ]
    headers = ["lane", "metric", "runs", "base", "new", "new - base (points)", "95% CI"]
    print(markdown_table(headers, table))
    if args.json:
        meta = {
            "base": [str(f) for f in args.base],
            "new": [str(f) for f in args.new],
            "draws": args.draws,
            "command": " ".join(["python", *sys.argv]),
        }
        write_json(args.json, {"meta": meta, "rows": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
