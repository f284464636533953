"""Full vs sliding vs PackCache on the same clip: per-frame speed, memory and fidelity.

    python benchmarks/cache_policies.py --quick                      # CI smoke run, seconds
    python benchmarks/cache_policies.py --config paper-shaped --json out/paper.json
    python benchmarks/cache_policies.py --config lumos-3b --device cuda --json out/3b.json

What it does: builds one random-weight model (`configs.py`), one conditioning image and one
prompt, and generates the same clip with `full`, `sliding` and `packcache` in one process, in
lockstep (one `step()` of each policy per round, see `lanes.py`), with the same seed. It prints
the machine, device, dtype and torch version, then a markdown table per latent frame (wall
time, attention share, cache tokens and bytes per branch, packing time, fidelity) and a summary
(TOTAL and LAST speedups over `full`, peak cache bytes, packing overhead, where the time goes),
and writes a JSON file (`--json`) and a PNG plot (`--plot`, default next to the JSON).

What is measured, and how:
- Frame time: wall time of the frame's own steps (T denoising steps, the write-back forward
  and packing), synchronised on CUDA. TOTAL = prefill + all frames; LAST = the last frame.
  On a machine shared with other jobs the summary adds "shared rest" speedups: each frame's
  non-attention time (the same work for every policy) replaced by its mean over the policies,
  which removes the noise between lanes and keeps what differs. "Attention only" is Amdahl's
  bound at full's measured attention share: 1 / ((1 - a) + a r), r the attention time ratio.
- Attention share: time inside `scaled_dot_product_attention` (every call, timed with CUDA
  events or `perf_counter`) over the frame's wall time. The same instrumentation times the
  forward, the output head, sampling (`guided_draw` + `remask`) and packing
  (`KVCache.commit_frame`, synchronised before it on CUDA), so the profile adds up.
- Cache: `CacheStats` after each frame: tokens attended per branch and K+V bytes per branch
  (used, and allocated capacity). Peak cache bytes are for both branches.
- Fidelity, with the same seed and noise as `full`:
  * free-running: each policy draws from the same generator stream as `full` (same seed), so
    any difference in its frames comes from its logits. Per frame: token agreement with full's
    codes, and PSNR of the decoded frames (`builtin:patch`) against full's.
  * teacher-forced: a second copy of each policy replays full's randomness through a
    `SamplerNoise` (`instrument.ForcedNoise`): at every step it receives full's uniforms and
    full's draws, and full's probability for each drawn code, so it keeps exactly full's tokens
    and writes full's frames into its own (packed) cache. Its logits are therefore computed on
    the same token history as full's, and we report per frame the mean KL(full || policy) of
    the CFG code distributions over its slot draws (every 4th slot of every step, a fixed
    subset, to keep the run short), and the draw agreement: how often the
    policy's own inverse-CDF draw at full's uniform lands on full's code. The run checks that
    each forced frame equals full's (`forced_exact`). `--no-fidelity` skips these lanes (the
    run is then about half as long).

Against the official code (`--official PATH`, a checkout of alibaba-damo-academy/Lumos at
lumos-1/lumos-1, and transformers 4.44-4.48): after our lanes, the same process runs the
official generation loop on our weights and tokens (`official.py` says how it is timed) and
adds its per-frame, TOTAL and LAST seconds and our speedups over it to the tables and JSON.

Steps: speedups are per denoising step (every step of a frame has the same cost), so CPU runs
use a few steps per frame (`paper-shaped`: 4) instead of Lumos-1's 50; `--steps` changes it.
With fewer steps the write-back forward (no head, no sampling) weighs a little more in a frame.

The `paper-shaped` config. In the paper's setting (Lumos-1 3B, 672x384, 13 latent frames, full
cache) attention is about 75% of the time of a denoising step at the end of the clip. What
sets that share on any machine is how attention's cost (query frame x every cached key x
width x layers) compares with what does not grow with the cache: the projections and MLP
(query frame x width^2 x layers), and the output head and sampler over 64000 codes (query
frame x codes, independent of depth). A 24 x 40 latent grid (988 tokens per frame, 13 frames =
12.9K keys at the last frame) with width 256 and 16 layers of 4 heads (head_dim 64) puts the
fixed head + sampler cost and the per-layer work in that ratio on a CPU: the run prints the
measured share of `full` at its last frame (`attention_share_full_last`): 72-73% on the
development VM (2 EPYC cores, 1 thread, T = 2 and 4; README.md has the latest runs). The
prompt is 64 tokens, about 5% of a frame, as a long caption is of a 4084-token frame.

Threads: on a CPU shared with other jobs, OpenMP parallel regions wait for descheduled threads
at every small op, which inflates the non-attention ops (many short kernels) far more than
attention (few long ones). CPU runs therefore default to one intra-op thread (`--threads`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import official
from benchmarks.configs import CONFIGS, BenchConfig, conditioning
from benchmarks.instrument import PHASES, ForcedNoise, RecordingNoise, Stopwatch, Tape
from benchmarks.lanes import Lane, run_lanes
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
from packcache_core.builtin import random_state_dict
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.host import prepare_host
from packcache_core.layout import FrameLayout
from packcache_core.loading import build_model
from packcache_core.model import LumosTransformer
from packcache_core.policy import POLICIES, CachePolicy, PackCachePolicy, make_policy
from packcache_core.sampling import GeneratorNoise
from packcache_core.video import load_video_tokenizer

LANES = ("full", "sliding", "packcache")  # compared by default; any registered policy may run
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PAPER = {"speedup_total": 2.18, "speedup_last": 3.66, "attention_share": 0.75}  # H200, 48 frames


@dataclass(frozen=True)
class NoHistory:
    """A measuring lane, not a policy to serve: anchors and the frame being made, no history at
    all. Its speed is the floor any cache policy can reach on this model."""

    name: str = "no-history"
    rebase: bool = True
    uses_scores: bool = False

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        return [None for _ in frames]


LANE_POLICIES = (*POLICIES, NoHistory.name)


def lane_policy(name: str) -> CachePolicy:
    return NoHistory() if name == NoHistory.name else make_policy(name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="paper-shaped")
    p.add_argument("--quick", action="store_true", help="the `quick` config (CI smoke run)")
    p.add_argument("--frames", type=int, help="latent frames incl. the conditioning one")
    p.add_argument("--steps", type=int, help="denoising steps per frame")
    p.add_argument("--device", help="cpu or cuda (default: the config's)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: the config's")
    p.add_argument("--threads", type=int, help="CPU intra-op threads (default 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--policies",
        default=",".join(LANES),
        help=f"comma list of {', '.join(LANE_POLICIES)}; full first",
    )
    p.add_argument("--no-fidelity", action="store_true", help="skip the teacher-forced lanes")
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the transformer pass (LumosTransformer.compile_steps; CUDA graphs on a "
        "GPU); attention is then not timed apart",
    )
    p.add_argument(
        "--official",
        type=Path,
        metavar="PATH",
        help="also run the official Lumos-1 loop from this checkout (lumos-1/lumos-1 of "
        "alibaba-damo-academy/Lumos) on the same weights and tokens (`official.py`)",
    )
    p.add_argument(
        "--official-shared-draws",
        action="store_true",
        help="give the official loop our draws (same tokens as full) instead of its "
        "torch.multinomial",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, help="PNG path (default: the JSON path with .png)")
    args = p.parse_args(argv)
    if args.quick:
        args.config = "quick"
    args.policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    if args.policies[0] != "full" or not set(args.policies) <= set(LANE_POLICIES):
        p.error(f"--policies must start with full and use {', '.join(LANE_POLICIES)}")
    if args.official is not None:
        try:  # fail before the long run, naming what is missing
            official.check_checkout(args.official)
        except official.OfficialCheckoutError as e:
            p.error(str(e))
    return args


def resolve(args: argparse.Namespace) -> tuple[BenchConfig, torch.device, torch.dtype]:
    base = CONFIGS[args.config]
    device = torch.device(args.device or base.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"config {base.name!r} wants CUDA, which this machine lacks (--device cpu)"
        )
    dtype = DTYPES[args.dtype] if args.dtype else base.dtype
    cfg = dataclasses.replace(
        base,
        latent_frames=args.frames or base.latent_frames,
        steps=args.steps or base.steps,
        device=str(device),
        dtype=dtype,
    )
    return cfg, device, dtype


def make_lanes(
    model: LumosTransformer, cfg: BenchConfig, policies: list[str], fidelity: bool, seed: int
) -> tuple[list[Lane], Tape]:
    prompt, codes = conditioning(cfg, seed)
    request = VideoRequest(prompt, codes, cfg.latent_frames)
    sampling = SamplingConfig(steps=cfg.steps)
    device, tape = model.device, Tape()

    def generator() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    lanes = []
    for name in policies:
        noise = RecordingNoise(generator(), tape) if name == "full" else GeneratorNoise(generator())
        gen = VideoGeneration(model, request, sampling, lane_policy(name), seed, noise)
        lanes.append(Lane(name, gen))
    if fidelity:
        for name in policies[1:]:
            forced = ForcedNoise(tape)
            gen = VideoGeneration(model, request, sampling, lane_policy(name), seed, forced)
            lanes.append(Lane(f"{name}@forced", gen, forced))
    return lanes, tape


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def attach_fidelity(lanes: dict[str, Lane], first: torch.Tensor) -> None:
    """Per frame of each non-full policy: token agreement, PSNR, and the forced lane's KL."""
    tok = load_video_tokenizer("builtin:patch")
    full = lanes["full"]
    ref_rgb = tok.decode(torch.stack([first, *full.codes]))  # (1 + 4n, H, W, 3)
    for name, lane in lanes.items():
        if name == "full" or "@" in name:
            continue
        rgb = tok.decode(torch.stack([first, *lane.codes]))
        forced = lanes.get(f"{name}@forced")
        for i, row in enumerate(lane.frames):
            ours, ref = lane.codes[i], full.codes[i]
            row["token_agreement"] = float((ours == ref).float().mean())
            span = slice(1 + 4 * i, 5 + 4 * i)
            row["psnr_db"] = psnr(rgb[span], ref_rgb[span])
            if forced is not None:
                row["kl"] = forced.frames[i]["kl"]
                row["draw_agreement"] = forced.frames[i]["draw_agreement"]
                row["forced_exact"] = bool(torch.equal(forced.codes[i], ref))


def flat_after_fill(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency spread over the frames whose cache size no longer changes (after the fill)."""
    steady = [f for f in frames if f["cache_tokens"] == frames[-1]["cache_tokens"]]
    # the last frame skips the write-back forward, so it is left out of the spread
    body = [f["seconds"] for f in steady[:-1]] or [frames[-1]["seconds"]]  # one frame: no spread
    mean = statistics.fmean(body)
    return {
        "from_frame": steady[0]["index"],
        "frames": len(body),
        "mean_seconds": mean,
        "cv": statistics.pstdev(body) / mean if mean else 0.0,
        "max_over_min": max(body) / min(body) if min(body) else math.inf,
    }


def summarize(lane: Lane, full: Lane) -> dict[str, Any]:
    fr = lane.frames
    frame_total = sum(f["seconds"] for f in fr)
    total = lane.prefill_seconds + frame_total
    full_total = full.prefill_seconds + sum(f["seconds"] for f in full.frames)
    last, full_last = fr[-1], full.frames[-1]
    out: dict[str, Any] = {
        "prefill_seconds": lane.prefill_seconds,
        "total_seconds": total,
        "last_seconds": last["seconds"],
        "speedup_total": full_total / total,
        "speedup_last": full_last["seconds"] / last["seconds"],
        "attention_share_last": last["attention_share"],
        "peak_cache_bytes": 2 * max(f["cache_bytes"] for f in fr),
        "cache_capacity_bytes": 2 * fr[0]["cache_capacity_bytes"],
        "pack_seconds": sum(f["pack_seconds"] for f in fr),
        "packing_overhead": sum(f["pack_seconds"] for f in fr) / frame_total,
        "packing_overhead_max_frame": max(f["pack_share"] for f in fr),
        "profile": {k: sum(f[f"{k}_seconds"] for f in fr) / frame_total for k in PHASES},
        "flat_after_fill": flat_after_fill(fr),
    }
    # Amdahl: the LAST speedup if only attention changed, at full's measured attention share.
    # Not measured when attention is not timed apart (a compiled model).
    if full_last["attention_seconds"] > 0:
        a = full_last["attention_share"]
        r = last["attention_seconds"] / full_last["attention_seconds"]
        out["speedup_last_attention_only"] = 1 / ((1 - a) + a * r)
    for key in ("kl", "draw_agreement", "token_agreement", "psnr_db"):
        vals = [f[key] for f in fr if f.get(key) is not None and math.isfinite(f[key])]
        if vals:  # PSNR of a frame identical to full's is infinite and left out of the mean
            out[f"mean_{key}"] = statistics.fmean(vals)
    if any("psnr_db" in f for f in fr):
        out["identical_frames"] = sum(1 for f in fr if f.get("psnr_db") == math.inf)
    if any("forced_exact" in f for f in fr):
        out["forced_exact"] = all(f.get("forced_exact", False) for f in fr)
    return out


def shared_rest(frames: list[list[dict[str, Any]]]) -> list[float]:
    """Per frame, the mean non-attention seconds over the policies' frame lists."""
    return [
        statistics.fmean(f["seconds"] - f["attention_seconds"] for f in rows)
        for rows in zip(*frames, strict=True)
    ]


def shared_rest_speedups(lanes: dict[str, Lane], policies: list[str]) -> dict[str, Any]:
    """TOTAL and LAST speedups with each frame's non-attention time replaced by its mean over
    the policies.

    Every policy runs the same projections, MLP, output head and sampler on the same shapes,
    so within a frame their non-attention times differ only by machine noise; sharing them
    keeps the part that really differs (attention, packing) and removes that noise."""
    frames = [lanes[n].frames for n in policies]
    total = dict.fromkeys(policies, lanes["full"].prefill_seconds)
    last: dict[str, float] = {}
    for rows, rest in zip(zip(*frames, strict=True), shared_rest(frames), strict=True):
        for n, f in zip(policies, rows, strict=True):
            total[n] += f["attention_seconds"] + rest
            last[n] = f["attention_seconds"] + rest
    return {
        "speedup_total": {n: total["full"] / total[n] for n in policies},
        "speedup_last": {n: last["full"] / last[n] for n in policies},
    }


def build_results(
    cfg: BenchConfig, machine: dict[str, Any], lanes: dict[str, Lane], policies: list[str]
) -> dict[str, Any]:
    full = lanes["full"]
    per = {n: {"frames": lanes[n].frames, "summary": summarize(lanes[n], full)} for n in policies}
    s = {n: per[n]["summary"] for n in policies}
    shared = shared_rest_speedups(lanes, policies)
    rest = shared_rest([lanes[n].frames for n in policies])
    for n in policies:
        flat = s[n]["flat_after_fill"]  # the same spread with load drift divided out
        norm = [f["seconds"] / r for f, r in zip(lanes[n].frames, rest, strict=True)]
        body = norm[flat["from_frame"] - 1 : len(norm) - 1] or norm[-1:]
        flat["cv_load_normalised"] = statistics.pstdev(body) / statistics.fmean(body)
        s[n]["speedup_total_shared_rest"] = shared["speedup_total"][n]
        s[n]["speedup_last_shared_rest"] = shared["speedup_last"][n]
    packcache = vars(PackCachePolicy()) if "packcache" in policies else None
    return {
        "config": cfg.shape() | {"packcache": packcache},
        "machine": machine,
        "policies": per,
        "summary": {
            "attention_share_full_last": s["full"]["attention_share_last"],
            "speedup_total": {n: s[n]["speedup_total"] for n in policies},
            "speedup_last": {n: s[n]["speedup_last"] for n in policies},
            "speedup_shared_rest": shared,
            "peak_cache_bytes": {n: s[n]["peak_cache_bytes"] for n in policies},
            "packing_overhead": {n: s[n]["packing_overhead"] for n in policies},
            "paper": PAPER,
        },
    }


def frame_table(results: dict[str, Any]) -> str:
    headers = [
        "frame", "policy", "seconds", "attn share", "cache tok/branch", "cache MiB/branch",
        "pack ms", "KL (forced)", "draw agree", "token agree", "PSNR dB",
    ]  # fmt: skip
    rows = []
    n = len(results["policies"]["full"]["frames"])
    for i in range(n):
        for name, pol in results["policies"].items():
            f = pol["frames"][i]
            rows.append([
                f["index"], name, f["seconds"], fmt(f["attention_share"]), f["cache_tokens"],
                f["cache_bytes"] / 2**20, f["pack_seconds"] * 1e3, fmt(f.get("kl"), 4),
                fmt(f.get("draw_agreement"), 3), fmt(f.get("token_agreement"), 3),
                f.get("psnr_db"),
            ])  # fmt: skip
    return markdown_table(headers, rows)


def summary_tables(results: dict[str, Any]) -> str:
    head = [
        "policy", "TOTAL s", "LAST s", "TOTAL x", "LAST x", "TOTAL x (shared rest)",
        "LAST x (shared rest)", "LAST x (attention only)",
        "attn share LAST", "peak cache MiB", "pack overhead",
        "flat after fill: cv (load-normalised)",
    ]  # fmt: skip
    rows, prof = [], []
    for name, pol in results["policies"].items():
        s = pol["summary"]
        flat = s["flat_after_fill"]
        rows.append([
            name, s["total_seconds"], s["last_seconds"], s["speedup_total"], s["speedup_last"],
            s["speedup_total_shared_rest"], s["speedup_last_shared_rest"],
            s.get("speedup_last_attention_only"), s["attention_share_last"],
            s["peak_cache_bytes"] / 2**20, f"{100 * s['packing_overhead']:.3f}%",
            f"from frame {flat['from_frame']}: {flat['cv']:.3f} ({flat['cv_load_normalised']:.3f})"
            if flat["frames"] > 1
            else "-",
        ])  # fmt: skip
        p = s["profile"]
        other = 1 - p["forward"] - p["head"] - p["sampling"] - p["pack"]
        prof.append([
            name, f"{100 * p['attention']:.1f}%", f"{100 * (p['forward'] - p['attention']):.1f}%",
            f"{100 * p['head']:.1f}%", f"{100 * p['sampling']:.1f}%", f"{100 * p['pack']:.2f}%",
            f"{100 * other:.1f}%",
        ])  # fmt: skip
    fid = [
        [n, fmt(s.get("mean_kl"), 4), fmt(s.get("mean_draw_agreement"), 3),
         fmt(s.get("mean_token_agreement"), 3), fmt(s.get("mean_psnr_db")),
         fmt(s.get("identical_frames")), str(s.get("forced_exact", "-"))]
        for n, s in ((n, p["summary"]) for n, p in results["policies"].items()) if n != "full"
    ]  # fmt: skip
    prof_head = ["policy", "attention", "rest of forward", "output head", "sampling", "packing",
                 "other"]  # fmt: skip
    fid_head = ["policy", "mean KL", "draw agree", "token agree", "PSNR dB (finite)",
                "identical frames", "forced exact"]  # fmt: skip
    return "\n\n".join([
        markdown_table(head, rows),
        "Where the time goes (share of all frame time):\n\n" + markdown_table(prof_head, prof),
        "Fidelity against full (mean over frames):\n\n" + markdown_table(fid_head, fid),
    ])  # fmt: skip


def plot(results: dict[str, Any], path: Path) -> None:
    """Per-frame latency, the same in units of the frame's shared non-attention time (which
    cancels machine-load drift), and cache bytes, against the frame index."""
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    pols = results["policies"]
    rest = shared_rest([p["frames"] for p in pols.values()])
    for name, pol in pols.items():
        fr = pol["frames"]
        idx = [f["index"] for f in fr]
        ax1.plot(idx, [f["seconds"] for f in fr], marker="o", label=name)
        ax2.plot(
            idx, [f["seconds"] / r for f, r in zip(fr, rest, strict=True)], marker="o", label=name
        )
        ax3.plot(idx, [f["cache_bytes"] / 2**20 for f in fr], marker="o", label=name)
    c, m = results["config"], results["machine"]
    ax1.set(xlabel="latent frame", ylabel="seconds per frame", title="per-frame latency")
    ax2.set(xlabel="latent frame", ylabel="frame time / shared non-attention time",
            title="per-frame latency, load-normalised")  # fmt: skip
    ax3.set(xlabel="latent frame", ylabel="MiB per branch", title="KV cache in use")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend()
    title = (f"{c['name']}: {c['latent_frames']} latent frames, T={c['steps']}, "
             f"{m['device_name']} {m['dtype']}")  # fmt: skip
    save_figure(fig, title, path)


def run_official_lane(
    args: argparse.Namespace,
    cfg: BenchConfig,
    model: LumosTransformer,
    lanes: dict[str, Lane],
    results: dict[str, Any],
) -> dict[str, Any]:
    """The official loop after our lanes, in the same process, on our model's tensors and the
    same request, sampling and seed; compared with our policies' results."""
    print("official loop:", flush=True)
    full = lanes["full"].gen
    run = official.run_official(
        args.official,
        cfg.model,
        model.state_dict(),
        full.request,
        full.sampling,
        args.seed,
        model.device,
        model.dtype,
        args.official_shared_draws,
    )
    return official.compare(run, results, lanes["full"].codes)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg, device, dtype = resolve(args)
    prepare_host(device, args.threads)
    machine = machine_info(device, dtype)
    print_machine(machine)
    print(f"{cfg.describe()}, policies {args.policies}", flush=True)
    m = cfg.model
    model = build_model(m, random_state_dict(m, args.seed), device, dtype)
    if args.compile:
        model.compile_steps()  # compiled at first use: the first frames include compiling
    lanes, tape = make_lanes(model, cfg, args.policies, not args.no_fidelity, args.seed)
    watch = Stopwatch(device, time_attention=not args.compile)
    watch.watch_model(model)
    try:
        run_lanes(lanes, watch, tape, device)
    finally:
        watch.unwatch_model(model)
    by_name = {lane.name: lane for lane in lanes}
    attach_fidelity(by_name, lanes[0].gen.request.first_frame)
    results = build_results(cfg, machine, by_name, args.policies)
    if args.official is not None:
        results["official"] = run_official_lane(args, cfg, model, by_name, results)
    results["machine"]["load_avg_end"] = load_now()
    if device.type == "cuda":
        results["machine"]["max_memory_allocated"] = torch.cuda.max_memory_allocated(device)
    print()
    print(frame_table(results))
    print()
    print(summary_tables(results))
    if "official" in results:
        print("\n" + official.table(results["official"]))
    share = results["summary"]["attention_share_full_last"]
    print(f"\nattention share of full at its last frame: {100 * share:.1f}% (paper: ~75%)")
    save(results, args.json, args.plot, plot)
    return results


if __name__ == "__main__":
    main()
