"""Quality of each cache policy against a known ground truth: `builtin:demo` on held-out clips.

    python benchmarks/quality.py --json out/quality.json              # the full run
    python benchmarks/quality.py --quick                              # a smoke run, minutes
    python benchmarks/quality.py --lengths 1 --policies full --steps 8 --cfg-scale 2   # tuning

What it does: takes held-out synthetic clips (`make_clip("heldout", i)`, never seen in
training; `--pans` per pan direction and `--others` per zoom / still / object clip), and for
each clip, each policy (`full`, `sliding` with one frame, `packcache` with its defaults) and
each length (`--lengths` times the trained length from the model card, e.g. 6, 12 and 24
latent frames) generates a clip from the ground truth's first frame and the clip's caption,
through `Pipeline.prepare` like a user request, with the same seed for every policy. It prints
the machine and a markdown table, and writes a JSON file and a PNG plot.

What is measured:
- PSNR (dB, RGB, peak 255) of each generated latent frame against the ground-truth picture at
  that time, per frame index, averaged over the clips of a kind. Two references per frame:
  "repeat" is the conditioning frame (as the tokenizer reconstructs it) held still, the
  baseline a model must beat to have predicted anything; "ceiling" is the tokenizer's own
  reconstruction of the true frame, the best any codes can do.
- Motion: for pans the shift between consecutive frames of the generated clip (conditioning
  frame included) by phase correlation (`demo/motion.py`), and whether its direction is the
  one the caption asks for, with at least half of the true 8 px per latent frame. Objects the
  same after removing the still background; still clips report the shift they should not have;
  zoom has no single shift and is judged by PSNR only.
A pan moves 8 px per latent frame, so after 16 frames (horizontal) or 8 (vertical) nothing of
the conditioning frame is left in view: far beyond the trained length the PSNR against the
truth of content that entered later measures plausibility, not recall, for every policy.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from packcache_core.demo.card import load_demo, read_card
from packcache_core.demo.data import MOTIONS, PAN_DIRECTIONS, Clip, make_clip
from packcache_core.demo.motion import (
    content_shift,
    direction_of,
    expected_direction,
    moved_psnr,
    psnr,
)
from packcache_core.generate import SamplingConfig, VideoGeneration
from packcache_core.loading import build_model
from packcache_core.pipeline import BUILTIN_TARGET_SIZE, Pipeline, VideoParams
from packcache_core.policy import CachePolicy, make_policy
from packcache_core.text import ByteTextTokenizer
from packcache_core.video import load_video_tokenizer

POLICIES = ("full", "sliding", "packcache")  # each with its defaults


def parse_policy(spec: str) -> CachePolicy:
    """`name` or `name:key=value,...` (e.g. `packcache:drop_masked=false,window=6`)."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
    return make_policy(name, **params)


@dataclass(frozen=True)
class Run:
    """One generated clip and how it compares with the truth."""

    index: int  # held-out clip index
    kind: str
    direction: str | None
    caption: str
    policy: str
    factor: int  # length in multiples of the trained length
    latent_frames: int
    psnr: list[float]  # generated frame f vs truth f, f = 1 .. n-1
    repeat: list[float]  # conditioning frame vs truth f
    ceiling: list[float]  # tokenizer reconstruction of truth f vs truth f
    # Pans and still clips: generated frame f against generated frame f-1 moved by the true
    # step ("does it keep moving right?"), and the same for a clip frozen at the truth.
    consistency: list[float]
    frozen: list[float]
    shift: tuple[float, float]  # (dy, dx) px per latent frame of the generated clip
    follows: bool | None  # direction as asked (pans and objects), else None
    seconds: float  # generation wall time


def heldout_clips(pans: int, others: int, max_latent: int) -> list[tuple[int, Clip]]:
    """The first `pans` held-out clips of each pan direction and `others` of each other kind."""
    want = {("pan", d): pans for d in PAN_DIRECTIONS}
    want.update({(k, None): others for k in MOTIONS if k != "pan"})
    out: list[tuple[int, Clip]] = []
    index = 0
    while any(want.values()):
        clip = make_clip("heldout", index, max_latent)
        key = (clip.motion.kind, clip.motion.direction if clip.motion.kind == "pan" else None)
        if want.get(key, 0) > 0:
            want[key] -= 1
            out.append((index, clip))
        index += 1
    return out


def generate_codes(
    pipe: Pipeline,
    clip: Clip,
    truth0: torch.Tensor,
    n: int,
    policy: CachePolicy,
    sampling: SamplingConfig,
    seed: int,
) -> torch.Tensor:
    """(n, h, w) codes: the conditioning frame's, then the n - 1 generated ones."""
    params = VideoParams(
        prompt=clip.caption,
        latent_frames=n,
        size=(clip.width, clip.height),
        seed=seed,
        policy=policy,
        sampling=sampling,
    )
    prepared = pipe.prepare(Image.fromarray(truth0.numpy()), params)
    gen = VideoGeneration(pipe.model, prepared.request, sampling, policy, seed)
    codes = [prepared.request.first_frame]
    while not gen.done:
        result = gen.step()
        if result is not None:
            codes.append(result.codes)
    return torch.stack(codes)


def run_clip(
    pipe: Pipeline,
    index: int,
    clip: Clip,
    policy: str,
    factor: int,
    trained: int,
    sampling: SamplingConfig,
    seed: int,
) -> Run:
    n = factor * trained
    truth = clip.latent_frames(n)  # (n, H, W, 3) uint8
    vt = pipe.video_tokenizer
    t0 = time.perf_counter()
    codes = generate_codes(pipe, clip, truth[0], n, parse_policy(policy), sampling, seed + index)
    seconds = time.perf_counter() - t0
    frames = vt.decode(codes)[:: vt.temporal_stride]  # (n, H, W, 3): one per latent frame
    truth_codes = torch.stack([vt.encode_image(f) for f in truth])
    recon = vt.decode(truth_codes)[:: vt.temporal_stride]
    kind = clip.motion.kind
    shift = content_shift(frames, moving_object=kind == "object")
    follows = None
    if kind in ("pan", "object"):
        follows = direction_of(shift) == expected_direction(clip.motion)
    consistency, frozen = [], []
    if kind in ("pan", "still"):
        step = clip.motion.content_step()
        consistency = [moved_psnr(frames[f - 1], frames[f], step) for f in range(1, n)]
        frozen = [moved_psnr(recon[f - 1], recon[f - 1], step) for f in range(1, n)]
    return Run(
        index,
        kind,
        clip.motion.direction,
        clip.caption,
        policy,
        factor,
        n,
        [psnr(frames[f], truth[f]) for f in range(1, n)],
        [psnr(frames[0], truth[f]) for f in range(1, n)],
        [psnr(recon[f], truth[f]) for f in range(1, n)],
        consistency,
        frozen,
        shift,
        follows,
        seconds,
    )


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def summarize(runs: list[Run]) -> dict[str, dict[str, object]]:
    """Per (factor, policy, kind): mean PSNR per frame index and overall, references, motion."""
    groups: dict[tuple[int, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.factor, r.policy, r.kind), []).append(r)
    out: dict[str, dict[str, object]] = {}
    for (factor, policy, kind), rs in sorted(groups.items()):
        per_frame = {
            name: [
                _mean([getattr(r, name)[f] for r in rs]) for f in range(len(getattr(rs[0], name)))
            ]
            for name in ("psnr", "repeat", "ceiling", "consistency", "frozen")
        }
        judged = [r.follows for r in rs if r.follows is not None]
        out[f"{factor}x/{policy}/{kind}"] = {
            "factor": factor,
            "policy": policy,
            "kind": kind,
            "clips": len(rs),
            "latent_frames": rs[0].latent_frames,
            "psnr": _mean(per_frame["psnr"]),
            "repeat": _mean(per_frame["repeat"]),
            "ceiling": _mean(per_frame["ceiling"]),
            "consistency": _mean(per_frame["consistency"]),
            "frozen": _mean(per_frame["frozen"]),
            "per_frame": per_frame,
            "direction_accuracy": _mean([float(j) for j in judged]) if judged else None,
            "mean_abs_shift": _mean([max(abs(r.shift[0]), abs(r.shift[1])) for r in rs]),
            "seconds_per_clip": _mean([r.seconds for r in rs]),
        }
    return out


def table(summary: dict[str, dict[str, object]]) -> str:
    head = (
        "| length | policy | kind | clips | PSNR gen | PSNR repeat | PSNR ceiling | gen - repeat "
        "| direction | mean shift px | consistency | frozen | s/clip |\n|" + "---|" * 13
    )
    rows = [head]
    for s in summary.values():
        acc = s["direction_accuracy"]
        rows.append(
            f"| {s['factor']}x ({s['latent_frames']}) | {s['policy']} | {s['kind']} | {s['clips']} "
            f"| {s['psnr']:.2f} | {s['repeat']:.2f} | {s['ceiling']:.2f} "
            f"| {s['psnr'] - s['repeat']:+.2f} | {'-' if acc is None else f'{acc:.0%}'} "  # type: ignore[operator]
            f"| {s['mean_abs_shift']:.1f} | {s['consistency']:.2f} | {s['frozen']:.2f} "
            f"| {s['seconds_per_clip']:.1f} |"
        )
    return "\n".join(rows)


def plot(summary: dict[str, dict[str, object]], path: Path) -> None:
    """Pans: PSNR against the truth (top) and frame-to-frame consistency (bottom) per frame,
    one column per length, one line per policy, references dashed and dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pans = [s for s in summary.values() if s["kind"] == "pan"]
    factors = sorted({int(s["factor"]) for s in pans})  # type: ignore[call-overload]
    rows = (
        ("psnr", "PSNR vs truth, dB", ("repeat", "ceiling")),
        ("consistency", "frame f vs f-1 moved, dB", ("frozen",)),
    )
    fig, axes = plt.subplots(2, len(factors), figsize=(5 * len(factors), 7), squeeze=False)
    for col, factor in enumerate(factors):
        group = [s for s in pans if s["factor"] == factor]
        for row, (key, label, refs) in enumerate(rows):
            ax = axes[row][col]
            for s in group:
                y = s["per_frame"][key]  # type: ignore[index]
                ax.plot(range(1, len(y) + 1), y, marker="o", ms=3, label=str(s["policy"]))
            for ref, style in zip(refs, ("k--", "k:"), strict=False):
                y = group[0]["per_frame"][ref]  # type: ignore[index]
                ax.plot(range(1, len(y) + 1), y, style, label=ref)
            ax.set(title=f"pans, {factor}x trained length", xlabel="latent frame", ylabel=label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def load_pipeline(model: str, tokenizer: str, demo_folder: Path | None) -> Pipeline:
    """`Pipeline.load(model, tokenizer)`, or the demo model from another folder (a training
    run's checkpoint) with the same tokenizers and its own card's defaults."""
    if demo_folder is None:
        return Pipeline.load(model, tokenizer)
    cfg, state = load_demo(demo_folder)
    lm = build_model(cfg, state, "cpu", torch.float32)
    vt = load_video_tokenizer(tokenizer)
    return Pipeline(
        lm, vt, ByteTextTokenizer(), BUILTIN_TARGET_SIZE, read_card(demo_folder).defaults
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin:demo")
    p.add_argument("--tokenizer", default="builtin:patch-small")
    p.add_argument("--demo-folder", type=Path, help="demo.json + demo.safetensors to use instead")
    p.add_argument("--lengths", default="1,2,4", help="multiples of the trained length")
    p.add_argument(
        "--policies",
        default=";".join(POLICIES),
        help="';'-separated, each `name` or `name:key=value,...` (policy parameters)",
    )
    p.add_argument("--pans", type=int, default=8, help="clips per pan direction")
    p.add_argument("--others", type=int, default=4, help="clips per zoom / still / object")
    p.add_argument("--long-pans", type=int, help="clips per pan direction beyond 1x")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model card's)")
    p.add_argument("--cfg-scale", type=float, help="guidance (default: the model card's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1 suits shared CPUs)")
    p.add_argument("--quick", action="store_true", help="1 clip per kind, 1x and 2x")
    p.add_argument("--json", type=Path, help="write the runs and the summary here")
    p.add_argument("--plot", type=Path, help="PNG path (default: the JSON path with .png)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.pans, args.others, args.lengths = 1, 1, "1,2"
    pipe = load_pipeline(args.model, args.tokenizer, args.demo_folder)
    d = pipe.defaults
    sampling = SamplingConfig(
        steps=args.steps or d.sampling.steps,
        cfg_scale=d.sampling.cfg_scale if args.cfg_scale is None else args.cfg_scale,
    )
    factors = [int(f) for f in args.lengths.split(",")]
    policies = args.policies.split(";")
    clips = heldout_clips(args.pans, args.others, max(factors) * d.latent_frames)
    long_pans = args.pans if args.long_pans is None else args.long_pans
    print(
        f"# {args.model} on {platform.machine()} {platform.processor() or ''}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s); trained length "
        f"{d.latent_frames}; {sampling.steps} steps, cfg {sampling.cfg_scale}",
        flush=True,
    )
    runs: list[Run] = []
    for factor in factors:
        seen: dict[str, int] = {}
        for index, clip in clips:
            key = f"{clip.motion.kind}/{clip.motion.direction}"
            seen[key] = seen.get(key, 0) + 1
            if factor > 1 and clip.motion.kind == "pan" and seen[key] > long_pans:
                continue
            for policy in policies:
                r = run_clip(
                    pipe, index, clip, policy, factor, d.latent_frames, sampling, args.seed
                )
                runs.append(r)
                print(
                    f"{factor}x {policy:9s} #{index:3d} {r.caption!r}: PSNR "
                    f"{_mean(r.psnr):.2f} (repeat {_mean(r.repeat):.2f}) shift {r.shift} "
                    f"follows {r.follows} {r.seconds:.1f}s",
                    flush=True,
                )
    summary = summarize(runs)
    print(table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": args.model,
            "demo_folder": str(args.demo_folder) if args.demo_folder else None,
            "trained_latent_frames": d.latent_frames,
            "sampling": asdict(sampling),
            "factors": factors,
            "policies": policies,
            "seed": args.seed,
            "machine": {
                "platform": platform.platform(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        }
        payload = {"meta": meta, "summary": summary, "runs": [asdict(r) for r in runs]}
        args.json.write_text(json.dumps(payload, indent=1))
        plot(summary, args.plot or args.json.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
