"""One command for a GPU slot: the whole product at a real shape, then the device benchmarks.

    python benchmarks/device_check.py --out device-check      # on a machine with CUDA, <= 6 min
    python benchmarks/device_check.py --dry --out /tmp/dc     # the same steps, tiny, on a CPU

What it runs, in order, each as its own process (so one failing step still leaves the others'
results), each with a time cap, none started once `--budget-s` is spent: the `gpu`-marked tests;
`product_run.py` (a checkpoint folder at the Lumos-1 1B shape, or a real `config.json`'s with
`--model-config`, and a full-width Cosmos folder, both random; `packcache serve` on them;
`full` and `packcache` streams through the API at 1, 2, 4 and 8 clients, 2 steps per frame);
`cache_policies.py` on the Lumos-1 1B and 3B shapes
(`configs.py`: 672x384, 48 x 84 latent grid) in bfloat16, 13 latent frames, 2 denoising steps per
frame, `full` / `sliding` / `packcache` (TOTAL, LAST, peak cache bytes per policy); one
attention call at the 3B shape in each way the unconditional row's unused text slots can be
hidden (`attention.py`: the right-aligned layout's two mask-free calls, which may use the
flash kernels, against one call under a mask, which may not); the `batching.py` table on the 1B
shape (1, 2, 4 requests); and `cache_policies.py` on the 1B shape
again with `--compile` (static-shape steps compiled; CUDA graphs on a GPU) against without.
Each step writes its JSON and PNG into `--out`; `device_check.json` there gathers the headline
numbers and how long each step took, rewritten after every step (a cut run keeps them).
`--dry` runs the same steps on the CPU with the `quick` config (a few latent frames, 1 step),
so CI checks that the command works end to end.

What it is not: a test with thresholds; it measures and reports. Run it once, read
`device_check.json`, put the numbers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# Seconds each step may run (a GPU slot is minutes long); `--dry` steps run in seconds.
CAPS = {"gpu_tests": 60, "product": 200, "attention": 30, "batching": 45, "compiled": 60}
POLICY_CAP = 45


def steps(out: Path, dry: bool, model_config: Path | None = None) -> list[tuple[str, list[str]]]:
    """(name, argv) of each step; a benchmark step writes `<out>/<name>.json` (and .png).
    `--dry` swaps the GPU shapes for the CPU smoke config."""
    if dry:
        models = {"quick": ["--quick", "--device", "cpu", "--frames", "3", "--steps", "1"]}
        batch = ["--quick", "--device", "cpu", "--concurrency", "1,2", "--steps", "1"]
        attention = ["--quick"]
    else:
        gpu = ["--device", "cuda", "--dtype", "bfloat16", "--frames", "13", "--steps", "2"]
        models = {name: ["--config", name, *gpu] for name in ("lumos-1b", "lumos-3b")}
        batch = ["--config", "lumos-1b", "--device", "cuda", "--dtype", "bfloat16"]
        batch += ["--concurrency", "1,2,4", "--steps", "2"]
        # One attention call of Lumos-1 3B at 672x384 (4084 tokens a frame, a 200-token
        # prompt): the full cache at the 13th latent frame, and about PackCache's. K/V heads
        # as many as query heads (the same arithmetic as its 8 shared ones): the memory-
        # efficient kernel, the one a mask allows, refuses shared K/V heads, which would time
        # the math kernel (and hold tens of GiB of scores) instead.
        attention = ["--device", "cuda", "--dtype", "bfloat16", "--heads", "24"]
        attention += ["--head-dim", "128", "--queries", "4084"]
        attention += ["--text", "203", "--keys", "53295,12455"]
    policies = ["--policies", "full,sliding,packcache", "--no-fidelity"]
    first = next(iter(models.values()))
    benches = [(f"policies_{name}", ["cache_policies.py", *args, *policies])
               for name, args in models.items()]  # fmt: skip
    benches.append(("attention", ["attention.py", *attention]))
    benches.append(("batching", ["batching.py", *batch]))
    benches.append(("compiled", ["cache_policies.py", *first, *policies, "--compile"]))
    run = [("gpu_tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"])]
    product = [sys.executable, "benchmarks/product_run.py", "--out", str(out)]
    product += ["--dry"] if dry else ["--budget-s", str(CAPS["product"] - 20)]
    product += ["--model-config", str(model_config)] if model_config else []
    run.append(("product", product))
    for name, (script, *args) in benches:
        json_path = str(out / f"{name}.json")
        run.append((name, [sys.executable, f"benchmarks/{script}", *args, "--json", json_path]))
    return run


def headline(name: str, path: Path) -> dict[str, Any]:
    """The numbers a reader wants first from one step's JSON."""
    data = json.loads(path.read_text())
    if name == "product":
        return data["phases"]
    if name == "batching":
        return {"summary": data["summary"], "rows": len(data["rows"])}
    if name == "attention":  # median seconds per call, per key count and variant
        return {
            keys: {variant: r["median_seconds"] for variant, r in res.items()}
            for keys, res in data.items()
            if isinstance(res, dict)
        }
    return {
        policy: {
            k: data["policies"][policy]["summary"].get(k)
            for k in ("total_seconds", "last_seconds", "peak_cache_bytes", "speedup_last")
        }
        for policy in data["policies"]
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for every JSON and PNG")
    p.add_argument("--dry", action="store_true", help="CPU, tiny config: checks the command")
    p.add_argument("--model-config", type=Path, help="a real Lumos-1 config.json: its shapes")
    p.add_argument("--budget-s", type=float, default=360.0, help="no step starts past it")
    args = p.parse_args(argv)
    if not args.dry:
        import torch

        if not torch.cuda.is_available():
            p.error("no CUDA device here: run with --dry to check the command on a CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"dry": args.dry, "steps": {}}
    failed = []
    begin = time.monotonic()
    for name, cmd in steps(args.out, args.dry, args.model_config):
        left = args.budget_s - (time.monotonic() - begin)
        cap = min(CAPS.get(name, POLICY_CAP), left) if not args.dry else None
        if cap is not None and cap < 10:
            report["steps"][name] = {"skipped": "out of time"}
            continue
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.monotonic()
        try:
            code = subprocess.run(cmd, cwd=ROOT, timeout=cap).returncode
        except subprocess.TimeoutExpired:
            code = 124  # what it wrote so far stays in --out
        entry: dict[str, Any] = {"seconds": round(time.monotonic() - start, 1), "exit": code}
        result = args.out / f"{name}.json"
        if code == 0 and result.exists():
            entry["results"] = headline(name, result)
        if code != 0 and not (name == "gpu_tests" and code == 5):  # 5: none collected
            failed.append(name)
        report["steps"][name] = entry
        (args.out / "device_check.json").write_text(json.dumps(report, indent=2))
    report["failed"] = failed
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v["seconds"] for k, v in report["steps"].items()}), flush=True)
    print(f"wrote {args.out / 'device_check.json'}; failed steps: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
