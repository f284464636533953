"""Paired differences between two `demo_motion.py` runs of the same requests.

    python benchmarks/paired.py --base before.json --new after.json
    python benchmarks/paired.py --base a100.json a196.json --new b100.json b196.json \
        --lanes "card text 13" --json out.json
    python benchmarks/paired.py --base sp.json --new sp.json --unit scene \
        --lanes "card switch@7 13" --new-lane "packcache:budget=3 switch@7 13"

What it computes: for each lane both runs have (or those named), each per-run metric in both
with its own 95% interval, the mean difference new - base and its interval: percentile bootstrap
(`report.bootstrap`, `--draws` draws, seed 0) over the paired runs, or with `--unit scene` over
scenes (an image lane's scene: its runs, every direction and seed, averaged first and drawn
together; equal-sized, so the mean is the runs'; a text-only run is its own scene). Runs pair
by position: files given together are joined in order (two caption ranges, say), and every pair
must be the same request (caption or scene, direction, seed), else it exits 2. `--new-lane`
compares the one lane named by `--lanes` with another lane of the new side (two policies of one
file). Per-run metrics, where a lane has them:
- `as_asked`: the share of the run's steps that move as asked;
- `colours_as_named`, `one_colour_flood` (`demo.motion.flooded` frame 0),
  `anchored_as_asked`: text-only lanes;
- `turned`: prompt-change lanes (`demo_motion.turned`).
The README's intervals that name it come from it. What it is not: a
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
from benchmarks.report import bootstrap, command_line, markdown_table, write_json
from packcache_core.demo.motion import flooded

METRICS = ("as_asked", "colours_as_named", "one_colour_flood", "anchored_as_asked", "turned")


def run_metrics(run: dict[str, Any], summary: dict[str, Any]) -> dict[str, float]:
    """The metrics of one run of a lane whose summary is `summary`."""
    out = {"as_asked": float(np.mean([s["as_asked"] for s in run["steps"]]))}
    if "colours_as_named" in run:
        out["colours_as_named"] = float(run["colours_as_named"])
    if "colour_shares" in run:
        out["one_colour_flood"] = float(flooded(run["colour_shares"]))
    if "anchored_steps" in run:
        out["anchored_as_asked"] = float(np.mean([s["as_asked"] for s in run["anchored_steps"]]))
    if "switch" in summary:
        out["turned"] = float(turned(run, summary["switch"]))
    return out


def request_of(run: dict[str, Any]) -> tuple[object, ...]:
    return (run.get("caption", run.get("image")), run["direction"], run["seed"])


def joined(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Lane name -> per run of `paths` joined in order (the lanes all files have, each with runs):
    its request, its scene (file and image, or file and run for a text-only run) and its
    metrics. Raises ValueError naming the file that is not a demo_motion JSON."""
    files = []
    for p in paths:
        data = json.loads(p.read_text())
        lanes = data.get("lanes") if isinstance(data, dict) else None
        if not isinstance(lanes, dict) or not all(
            isinstance(v, dict) and v.get("runs") for v in lanes.values()
        ):
            raise ValueError(f"{p}: not a demo_motion JSON (no lanes with runs)")
        files.append(lanes)
    names = [n for n in files[0] if all(n in f for f in files)]
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        rows = []
        for k, lanes in enumerate(files):
            lane = lanes[name]
            for i, r in enumerate(lane["runs"]):
                unit = (k, r.get("image", f"run {i}"))
                metrics = run_metrics(r, lane["summary"])
                rows.append({"request": request_of(r), "unit": unit, **metrics})
        out[name] = rows
    return out


def interval(values: np.ndarray, units: list[object], draws: int) -> list[float]:
    """95% interval of the mean of `values` (one per run), resampling whole units."""
    keys = list(dict.fromkeys(units))
    means = np.array([values[[u == k for u in units]].mean() for k in keys])
    return list(bootstrap(means, np.random.default_rng(0), draws))


def compare(
    pairs: list[tuple[str, list[dict[str, Any]], str, list[dict[str, Any]]]],
    unit: str,
    draws: int,
) -> list[dict[str, Any]]:
    """One row per (lane pair, metric): runs, both means with their intervals, the mean
    difference new - base and its interval."""
    rows = []
    for base_name, a, new_name, b in pairs:
        if [r["request"] for r in a] != [r["request"] for r in b]:
            raise ValueError(
                f"lanes {base_name!r} and {new_name!r}: the two sides are not the same requests "
                "in order"
            )
        units = [r["unit"] if unit == "scene" else i for i, r in enumerate(a)]
        for metric in METRICS:
            if not all(metric in r for r in a + b):  # (older JSONs lack some columns)
                continue
            x = np.array([r[metric] for r in a])
            y = np.array([r[metric] for r in b])
            rows.append(
                {
                    "lane": base_name if base_name == new_name else f"{base_name} -> {new_name}",
                    "metric": metric,
                    "n": len(x),
                    "units": len(set(units)),
                    "base": float(x.mean()),
                    "base_ci95": interval(x, units, draws),
                    "new": float(y.mean()),
                    "new_ci95": interval(y, units, draws),
                    "diff": float((y - x).mean()),
                    "ci95": interval(y - x, units, draws),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, nargs="+", required=True, help="demo_motion JSON(s)")
    p.add_argument("--new", type=Path, nargs="+", required=True, help="the same requests, after")
    p.add_argument("--lanes", nargs="+", help="lane names (default: every lane in both)")
    p.add_argument("--new-lane", help="the new side's lane to set against the one --lanes names")
    p.add_argument("--unit", choices=("run", "scene"), default="run", help="bootstrap unit")
    p.add_argument("--draws", type=int, default=10_000, help="bootstrap draws")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if len(args.base) != len(args.new):
        p.error(f"--base has {len(args.base)} files and --new {len(args.new)}: pair them")
    if args.draws < 100:
        p.error(f"--draws {args.draws}: need at least 100")
    try:
        base, new = joined(args.base), joined(args.new)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        p.error(f"cannot read a demo_motion JSON: {e}")
    if args.new_lane is not None:
        if args.lanes is None or len(args.lanes) != 1:
            p.error("--new-lane needs exactly one lane in --lanes")
        if args.lanes[0] not in base or args.new_lane not in new:
            p.error(f"lanes of --base: {list(base)}; of --new: {list(new)}")
        pairs = [(args.lanes[0], base[args.lanes[0]], args.new_lane, new[args.new_lane])]
    else:
        common = [n for n in base if n in new]
        unknown = [n for n in args.lanes or [] if n not in common]
        if unknown:
            p.error(f"lane(s) {unknown} not in both sides; lanes in both: {common}")
        pairs = [(n, base[n], n, new[n]) for n in args.lanes or common]
        if not pairs:
            p.error("the two sides have no lane in common")
    try:
        rows = compare(pairs, args.unit, args.draws)
    except ValueError as e:
        p.error(str(e))

    def pct(x: float, ci: list[float]) -> str:
        return f"{x:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"

    table = [
        [
            r["lane"],
            r["metric"],
            f"{r['n']} ({r['units']})",
            pct(r["base"], r["base_ci95"]),
            pct(r["new"], r["new_ci95"]),
            f"{100 * r['diff']:+.1f} [{100 * r['ci95'][0]:+.1f}, {100 * r['ci95'][1]:+.1f}]",
        ]
        for r in rows
    ]
    headers = ["lane", "metric", f"runs ({args.unit}s)", "base", "new", "new - base, points"]
    print(markdown_table(headers, table))
    if args.json:
        meta = {
            "base": [str(f) for f in args.base],
            "new": [str(f) for f in args.new],
            "draws": args.draws,
            "unit": args.unit,
            "command": command_line(),
        }
        try:
            write_json(args.json, {"meta": meta, "rows": rows})
        except OSError as e:
            p.error(f"cannot write --json {args.json}: {e}")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
