"""`packcache generate` against the server on a busy CPU: the same request, per-frame time.

    python benchmarks/threads.py --json benchmarks/results/threads-cpu.json
    python benchmarks/threads.py --quick          # CI smoke run: one round, no busy load

What it does: starts `packcache serve` (default settings) on a free loopback port and keeps
`--busy` processes spinning on the CPU (default: one per core) for the whole run, as a shared
machine does. Then, for `--rounds` rounds, in alternating order, it makes the same request both
ways: `packcache generate` as a child process (its own per-latent-frame figure, from the line it
prints) and `POST /v1/videos` to the server (the server's `stats.generation_s` over the latent
frames it generated). Both use the built-in model's card defaults (size, length, steps) and the
same seed. Each `--threads` value (default "default,2") adds a `generate --threads N` lane; the
default lane passes no flag, which is what a user runs. Output: a table of median seconds per
latent frame and the ratio to the server, `--json`, and the machine's load average.

Why: on a CPU shared with other work, OpenMP threads wait on each other at every op's barrier
(see `packcache_core/host.py`); every entry point now sets its threads in `prepare_host`, so
`generate` and the server are expected to run at the same speed. The issue's target: generate
within 1.5x of the server's per-frame time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from benchmarks.serve_load import start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "server" / "api" / "static" / "sample.png"
PROMPT = "the camera pans slowly to the right"
PER_FRAME = re.compile(r"\(([\d.]+) s per latent frame")


def spin() -> None:
    while True:
        pass


def generate(model: str, seed: int, threads: str, out: Path) -> float:
    """`packcache generate` in a child process; its mean seconds per latent frame."""
    cmd = [sys.executable, "-m", "server", "generate", "--model", model, "--image", str(IMAGE)]
    cmd += ["--prompt", PROMPT, "--seed", str(seed), "--device", "cpu", "-o", str(out)]
    if threads != "default":
        cmd += ["--threads", threads]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    found = PER_FRAME.search(done.stderr)
    assert found, done.stderr
    return float(found.group(1))


def serve_once(base: str, seed: int) -> float:
    """The same request through the server; seconds per generated latent frame."""
    files = {"input_reference": ("sample.png", IMAGE.read_bytes(), "image/png")}
    video = httpx.post(
        base + "/v1/videos", data={"prompt": PROMPT, "seed": str(seed)}, files=files, timeout=60
    ).json()
    while video["status"] in ("queued", "in_progress"):
        time.sleep(0.1)
        video = httpx.get(f"{base}/v1/videos/{video['id']}", timeout=60).json()
    assert video["status"] == "completed", video
    stats = video["stats"]
    return float(stats["generation_s"]) / (stats["latent_frames"] - 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin:demo")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, default=mp.cpu_count(), help="spinning processes")
    p.add_argument("--threads", default="default,2", help="generate lanes: comma list")
    p.add_argument("--quick", action="store_true", help="one round, no busy processes")
    p.add_argument("--json", type=Path)
    p.add_argument("--start-timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    rounds, busy = (1, 0) if args.quick else (args.rounds, args.busy)
    lanes = [t.strip() for t in args.threads.split(",") if t.strip()]
    spinners = [mp.Process(target=spin, daemon=True) for _ in range(busy)]
    times: dict[str, list[float]] = {"server": [], **{f"generate {t}": [] for t in lanes}}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        server_args = argparse.Namespace(
            model=args.model, device="cpu", max_running=1, start_timeout=args.start_timeout
        )
        proc, base = start_server(server_args, tmp)
        for s in spinners:
            s.start()
        try:
            for r in range(rounds):
                order = ["server", *lanes] if r % 2 == 0 else [*lanes[::-1], "server"]
                for lane in order:
                    if lane == "server":
                        times["server"].append(serve_once(base, r))
                    else:
                        mp4 = Path(tmp) / f"{r}-{lane}.mp4"
                        times[f"generate {lane}"].append(generate(args.model, r, lane, mp4))
                    loads.append(report.load_now())
                print(f"round {r + 1}/{rounds} done", flush=True)
        finally:
            for s in spinners:
                s.terminate()
            stop_server(proc)
    server = statistics.median(times["server"])
    rows = [
        [lane, len(ts), report.fmt(statistics.median(ts)), f"{statistics.median(ts) / server:.2f}x"]
        for lane, ts in times.items()
    ]
    print(f"busy processes: {busy}, load average during the run: {loads}")
    print(report.markdown_table(["lane", "runs", "s per latent frame (median)", "vs server"], rows))
    results = {
        "model": args.model,
        "busy_processes": busy,
        "load_avg": loads,
        "seconds_per_frame": times,
        "ratio_to_server": {lane: statistics.median(ts) / server for lane, ts in times.items()},
    }
    if args.json:
        report.write_json(args.json, results)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
