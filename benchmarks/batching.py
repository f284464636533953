"""Batched against interleaved denoising steps: aggregate throughput of R concurrent requests.

    python benchmarks/batching.py --quick                          # CI smoke run, seconds
    python benchmarks/batching.py --json out/batching.json         # paper-shaped on CPU, long
    python benchmarks/batching.py --device cuda --json out/batching-gpu.json   # the same on a GPU

What it does: builds one random-weight model (`configs.py`, default `paper-shaped`), one
conditioning image and one prompt, and for each concurrency R (`--concurrency`, default 1, 2, 4,
8) two sets of R requests for the same clip, seeds 0 .. R-1, PackCache policy: one stepped
*interleaved* (a tick is one `step()` of every request in turn: the server with `max_batch` 1),
one *batched* (a tick is one `batch.tick`, the server's step loop, over every request: prefills
alone, the denoising steps of all of them in one forward; the server's default). All R
requests arrive at once and run to the end. The two sets advance in lockstep, one tick of each
per round, the order alternating every round, so that on a shared machine a slow period falls
on both.

What is measured: the wall time of every tick (synchronised on CUDA), and inside it, as
`cache_policies.py` does, the time in attention (every SDPA call), the whole forward, the output
head, sampling (`guided_draw` + `remask`) and packing. Reported per R: aggregate latent frames
per second (all requests' generated latent frames over the sum of their ticks, prefill
included) for both modes and their ratio (the speedup); the median time of a denoising tick
(every request does one denoising step: R forwards interleaved, one batched) and its ratio; and
whether both modes produced the same tokens for every request (they must). The profile of the
largest R says where the time goes in each mode. Output: a markdown table, `--json`, and a PNG
(`--plot`, default next to the JSON).

Steps: a tick costs the same at any step of a frame, so a few steps per frame (`--steps`,
default the config's: 4 for `paper-shaped`) and 2 generated frames (`--frames 3`, the
conditioning frame included) show the steady state; the write-back forward at each frame's end
and the prefill run alone in both modes.

Threads and memory: CPU runs default to one intra-op thread (`--threads`), as
`cache_policies.py` does (why is in its docstring); batching does not change how many threads a
tick may use. They also tune glibc's malloc to keep freed blocks (`host.keep_freed_blocks`, as
`packcache serve` does on a CPU; `--malloc default` leaves glibc's defaults): without it a
batched forward's larger temporaries are mapped afresh, page fault by page fault, every layer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cache_policies import DTYPES, resolve
from benchmarks.configs import CONFIGS, BenchConfig, conditioning
from benchmarks.instrument import PHASES, Stopwatch, sync
from benchmarks.report import (
    fmt,
    load_now,
    machine_info,
    markdown_table,
    print_machine,
    pyplot,
    save,
    save_figure,
)
from packcache_core.batch import tick
from packcache_core.builtin import random_state_dict
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.host import prepare_host
from packcache_core.loading import build_model
from packcache_core.model import LumosTransformer
from packcache_core.policy import POLICIES, make_policy

MODES = ("interleaved", "batched")
TARGET = 1.5  # issue 10: batched >= 1.5x interleaved at 4 requests, paper-shaped, CPU


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="paper-shaped")
    p.add_argument("--quick", action="store_true", help="the `quick` config (CI smoke run)")
    p.add_argument("--concurrency", default="1,2,4,8", help="comma list of request counts")
    p.add_argument("--frames", type=int, default=3, help="latent frames incl. the conditioning")
    p.add_argument("--steps", type=int, help="denoising steps per frame (default: the config's)")
    p.add_argument("--policy", default="packcache", choices=list(POLICIES))
    p.add_argument("--device", help="cpu or cuda (default: the config's)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: the config's")
    p.add_argument("--threads", type=int, help="CPU intra-op threads (default 1 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="weights and prompt")
    p.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                   help="CPU: keep freed blocks (host.py) or glibc's defaults")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, help="PNG path (default: the JSON path with .png)")
    args = p.parse_args(argv)
    if args.quick:
        args.config = "quick"
    args.concurrency = [int(s) for s in args.concurrency.split(",") if s.strip()]
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency needs request counts >= 1")
    return args


class Fleet:
    """R requests stepped in one mode; their ticks' times, phases and generated codes."""

    def __init__(self, mode: str, gens: list[VideoGeneration]) -> None:
        self.mode, self.gens = mode, gens
        self.ticks: list[float] = []  # wall seconds per tick
        self.denoising: list[float] = []  # ticks in which every request took a denoising step
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.codes: list[list[torch.Tensor]] = [[] for _ in gens]

    @property
    def done(self) -> bool:
        return all(g.done for g in self.gens)

    def tick(self, watch: Stopwatch, device: torch.device) -> None:
        active = [i for i, g in enumerate(self.gens) if not g.done]
        denoising = all(not self.gens[i].needs_prefill for i in active)
        watch.lane = self.mode
        sync(device)
        t0 = time.perf_counter()
        if self.mode == "batched":
            results = [o.result for o in tick([self.gens[i] for i in active])]
        else:
            results = [self.gens[i].step() for i in active]
        sync(device)
        seconds = time.perf_counter() - t0
        watch.lane = None
        for k, v in watch.take(self.mode).items():
            self.phases[k] += v
        self.ticks.append(seconds)
        if denoising and len(active) == len(self.gens):
            self.denoising.append(seconds)
        for i, r in zip(active, results, strict=True):
            if r is not None:
                self.codes[i].append(r.codes)

    def close(self) -> None:
        for g in self.gens:
            g.close()


def fleet(model: LumosTransformer, cfg: BenchConfig, mode: str, n: int, policy: str) -> Fleet:
    prompt, codes = conditioning(cfg)
    request = VideoRequest(prompt, codes, cfg.latent_frames)
    sampling = SamplingConfig(steps=cfg.steps)
    gens = [VideoGeneration(model, request, sampling, make_policy(policy), s) for s in range(n)]
    return Fleet(mode, gens)


def measure(
    model: LumosTransformer, cfg: BenchConfig, n: int, policy: str, watch: Stopwatch
) -> dict[str, Any]:
    """Both modes with `n` requests, in lockstep; one row of the results."""
    fleets = [fleet(model, cfg, mode, n, policy) for mode in MODES]
    rnd = 0
    while not all(f.done for f in fleets):
        for f in fleets if rnd % 2 == 0 else fleets[::-1]:
            if not f.done:
                f.tick(watch, model.device)
        rnd += 1
    frames = n * (cfg.latent_frames - 1)
    row: dict[str, Any] = {"requests": n, "latent_frames": frames}
    for f in fleets:
        total = sum(f.ticks)
        forward = f.phases["forward"]
        row[f.mode] = {
            "seconds": total,
            "frames_per_second": frames / total,
            "tick_median_seconds": statistics.median(f.denoising) if f.denoising else None,
            "ticks": len(f.ticks),
            "profile": {k: v / total for k, v in f.phases.items()},
            "rest_of_forward_share": (forward - f.phases["attention"]) / total,
        }
        f.close()
    inter, batched = (row[m] for m in MODES)
    row["speedup"] = batched["frames_per_second"] / inter["frames_per_second"]
    if inter["tick_median_seconds"] and batched["tick_median_seconds"]:
        row["tick_speedup"] = inter["tick_median_seconds"] / batched["tick_median_seconds"]
    row["same_tokens"] = all(
        len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        for a, b in zip(fleets[0].codes, fleets[1].codes, strict=True)
    )
    return row


def warm_up(model: LumosTransformer, cfg: BenchConfig, policy: str) -> None:
    """One prefill and one step of each mode, so first-call costs stay out of the numbers."""
    for mode in MODES:
        f = fleet(model, cfg, mode, 2, policy)
        for _ in range(2):
            if mode == "batched":
                tick(f.gens)
            else:
                for g in f.gens:
                    g.step()
        f.close()


def tables(results: dict[str, Any]) -> str:
    head = ["requests", "interleaved frames/s", "batched frames/s", "speedup",
            "interleaved tick s", "batched tick s", "tick speedup", "same tokens"]  # fmt: skip
    rows = [
        [r["requests"], fmt(r["interleaved"]["frames_per_second"], 4),
         fmt(r["batched"]["frames_per_second"], 4), f"{r['speedup']:.2f}x",
         fmt(r["interleaved"]["tick_median_seconds"], 3),
         fmt(r["batched"]["tick_median_seconds"], 3),
         f"{r['tick_speedup']:.2f}x" if "tick_speedup" in r else "-", str(r["same_tokens"])]
        for r in results["rows"]
    ]  # fmt: skip
    last = results["rows"][-1]
    prof_head = ["mode", "attention", "rest of forward", "output head", "sampling", "packing",
                 "other"]  # fmt: skip
    prof = []
    for mode in MODES:
        m = last[mode]
        p = m["profile"]
        other = 1 - p["forward"] - p["head"] - p["sampling"] - p["pack"]
        prof.append([
            mode, f"{100 * p['attention']:.1f}%", f"{100 * m['rest_of_forward_share']:.1f}%",
            f"{100 * p['head']:.1f}%", f"{100 * p['sampling']:.1f}%",
            f"{100 * p['pack']:.2f}%", f"{100 * other:.1f}%",
        ])  # fmt: skip
    return "\n\n".join([
        markdown_table(head, rows),
        f"Where the time goes with {last['requests']} requests (share of all tick time):\n\n"
        + markdown_table(prof_head, prof),
    ])  # fmt: skip


def plot(results: dict[str, Any], path: Path) -> None:
    """Aggregate frames per second and the speedup against the number of requests."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = results["rows"]
    n = [r["requests"] for r in rows]
    for mode in MODES:
        ax1.plot(n, [r[mode]["frames_per_second"] for r in rows], marker="o", label=mode)
    ax2.plot(n, [r["speedup"] for r in rows], marker="o", label="aggregate")
    ax2.plot(n, [r.get("tick_speedup") for r in rows], marker="s", label="denoising tick")
    ax2.axhline(TARGET, color="grey", linestyle="--", label=f"target {TARGET}x (4 requests)")
    ax1.set(xlabel="concurrent requests", ylabel="latent frames / s", title="throughput")
    ax2.set(xlabel="concurrent requests", ylabel="batched / interleaved", title="speedup")
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(0, max(2.0, *(r["speedup"] for r in rows)) * 1.05)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(n)), [str(k) for k in sorted(set(n))])
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax1 else "lower center")
    c, m = results["config"], results["machine"]
    title = (f"{c['name']}: {c['latent_frames']} latent frames, T={c['steps']}, {c['policy']}, "
             f"{m['device_name']} {m['dtype']}, threads {m['threads']}"
             f"{', malloc tuned' if m['malloc_tuned'] else ''}")  # fmt: skip
    save_figure(fig, title, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg, device, dtype = resolve(args)
    tuned = prepare_host(device, args.threads, args.malloc == "tuned").malloc_tuned
    machine = machine_info(device, dtype) | {"malloc_tuned": tuned}
    print_machine(machine)
    print(f"{cfg.describe()}, {args.policy}, requests {args.concurrency}", flush=True)
    m = cfg.model
    model = build_model(m, random_state_dict(m, args.seed), device, dtype)
    watch = Stopwatch(device)
    watch.watch_model(model)
    rows = []
    try:
        with watch.installed():
            warm_up(model, cfg, args.policy)
            for n in args.concurrency:
                rows.append(measure(model, cfg, n, args.policy, watch))
                r = rows[-1]
                print(f"  {n} requests: interleaved {r['interleaved']['seconds']:.1f} s, "
                      f"batched {r['batched']['seconds']:.1f} s, speedup {r['speedup']:.2f}x, "
                      f"load {load_now()}", flush=True)  # fmt: skip
    finally:
        watch.unwatch_model(model)
    machine["load_avg_end"] = load_now()
    results: dict[str, Any] = {
        "config": cfg.shape() | {"policy": args.policy, "concurrency": args.concurrency},
        "machine": machine,
        "rows": rows,
        "summary": {
            "speedup": {str(r["requests"]): r["speedup"] for r in rows},
            "tick_speedup": {str(r["requests"]): r.get("tick_speedup") for r in rows},
            "same_tokens": all(r["same_tokens"] for r in rows),
            "target": TARGET,
        },
    }
    print()
    print(tables(results))
    save(results, args.json, args.plot, plot)
    return results


if __name__ == "__main__":
    main()
