"""How much of the next frame can the model read off the past that a cache policy keeps?

    python benchmarks/teacher_forced.py --json benchmarks/results/teacher-forced-demo.json
    python benchmarks/teacher_forced.py --policies packcache,full --mask-ratios 0.7,0 --clips 4
    python benchmarks/teacher_forced.py --quick                                  # seconds

What it measures: held-out camera paths (`make_path_clip("heldout", ...)`, pans that turn where
their caption changes) written into a real request's cache frame by frame as serving writes a
finished frame (`VideoGeneration.replay_frame`: the true codes, the history mask, the policy's
packing and rebasing), and at every latent frame t the model's prediction of frame t with all of
its tokens hidden (one forward, the conditional branch only, argmax): the share of codes right,
what the model reads of frame t off the true past before it has drawn any of it (the sampler's
first step also mixes in the unconditional branch). Two references from the true codes: freeze
(frame t - 1 again: the baseline that does nothing) and moved (frame t - 1 moved by the camera's
true step, the revealed row or column counted wrong: an oracle of copying); and per lane "held
by" (`held_oracle`: the share of frame t's codes that the cache holds somewhere, each held
frame's kept tokens moved by the camera's true motion since: what copying each code from where
the motion puts it in that cache gets right, whatever the model). Lanes: cache policies x
history mask ratios (the AR-DF write-back: Lumos-1's 0.7 hides 70% of every finished frame's
positions; 0 writes frames clean). `--coloured` takes the two-colour paths whose captions
name their colours; `--text-only` makes every request text to video, frame 0 (the true codes)
then written back as the first history frame instead of held as the conditioning frame: the
same past, with frame 0 left to the policy.
Prints a table (frames 1-3, 4-6, 7 and later, all) and writes JSON (per frame) and a PNG.

What it is not: a measure of sampled videos (`demo_motion.py` measures those from the pictures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.demo_args import (
    CARD,
    POLICY_LIST_HELP,
    add_model_options,
    lane_policy,
    load_model,
    policy_specs,
    positive_int,
    weights_record,
)
from benchmarks.report import (
    command_line,
    machine_info,
    markdown_table,
    print_machine,
    pyplot,
    save,
    save_figure,
)
from packcache_core.demo.data import FRAME_HEIGHT, FRAME_WIDTH
from packcache_core.demo.paths import PathClip, make_path_clip
from packcache_core.demo.rollout import pan_target, path_request
from packcache_core.generate import SamplingConfig, VideoGeneration
from packcache_core.host import prepare_host
from packcache_core.layout import FrameLayout
from packcache_core.pipeline import Pipeline
from packcache_core.policy import CachePolicy

FIRST_CLIP = 500  # first held-out path id of the reported runs (demo_motion: scenes 0 ..)
SECONDS = 8  # stated duration of every request
SPANS = {"1-3": (1, 3), "4-6": (4, 6), "7+": (7, 10**9), "all": (1, 10**9)}


class HeldOutPath(NamedTuple):
    clip: PathClip
    codes: torch.Tensor  # (frames, h, w)


def held_out_path(pipeline: Pipeline, index: int, frames: int, coloured: bool) -> HeldOutPath:
    """Held-out path `index`, `frames` latent frames long (of the two-colour family if
    `coloured`), and its codes (encoded once)."""
    tok = pipeline.video_tokenizer
    clip = make_path_clip("heldout", index, frames, coloured=coloured)
    return HeldOutPath(
        clip, torch.stack([tok.encode_image(f) for f in clip.latent_frames(range(frames))])
    )


@torch.no_grad()
def frame_accuracy(
    pipeline: Pipeline,
    policy: CachePolicy,
    mask_ratio: float,
    path: HeldOutPath,
    text_only: bool,
) -> tuple[list[float], list[float]]:
    """Per latent frame 1 .. frames-1 of `path`: the share of its codes the model's one-step
    prediction gets right, the true frames before it written back (`predict_frame` at
    guidance 1: the conditional branch's logits), and the share `held_oracle` finds in the
    cache. `text_only`: a text-to-video request whose frame 0 is written back like the others
    (not predicted, not scored)."""
    clip, codes = path
    frames = codes.shape[0]
    size = pipeline.defaults.size or (FRAME_WIDTH, FRAME_HEIGHT)
    request = path_request(clip, codes, SECONDS, size, text_only)
    sampling = SamplingConfig(steps=1, cfg_scale=1.0, history_mask_ratio=mask_ratio)
    gen = VideoGeneration(pipeline.model, request, sampling, policy)
    written: dict[int, int] = {}  # the tokens a frame was written back with -> latent frame

    def replay(t: int) -> None:
        before = gen.cache.frames_written
        gen.replay_frame(codes[t])
        if gen.cache.frames_written > before:  # (a video's last frame is not written back)
            written[id(gen.cache.history[-1].tokens)] = t  # every policy keeps the newest last

    if text_only:
        replay(0)
    out, found = [], []
    for t in range(1, frames):
        guess = gen.predict_frame().argmax(-1)
        out.append(float((guess == codes[t].flatten()).float().mean()))
        held = []  # (latent frame, its frame-local tokens the cache holds with content)
        for h in gen.cache.history:
            content = torch.zeros_like(gen.visible)
            content[h.local] = True  # kept by the policy ...
            held.append((written[id(h.tokens)], content & gen.visible))  # ... and not masked
        if not text_only:  # the conditioning frame, cached whole and clean
            held.append((0, torch.ones_like(gen.visible)))
        found.append(held_oracle(gen.layout, path, t, held))
        replay(t)
    gen.close()
    return out, found


def held_oracle(
    layout: FrameLayout, path: HeldOutPath, t: int, held: list[tuple[int, torch.Tensor]]
) -> float:
    """The share of frame t's codes that the cache holds somewhere: each held frame j's
    content tokens (`held`: (j, (tokens,) bool)) moved by the camera's true motion from j to t
    and checked against frame t: what copying each code from where the true motion puts it in
    the cached past gets right (new ground, and tokens the policy dropped or the history mask
    hid, count wrong; a code guessed or copied from elsewhere is not counted)."""
    codes = path.codes
    _, h, w = codes.shape
    window = torch.tensor(path.clip.moves()).cumsum(0)  # (frames, 2): the window's place
    slots = layout.code_slots()
    found = torch.zeros(h, w, dtype=torch.bool)
    for j, content in held:
        dy, dx = (int(v) for v in window[t] - window[j])
        if abs(dy) >= h or abs(dx) >= w:
            continue  # frame j shows none of frame t's ground
        # frame j moved by the camera since, as `pan_target` moves it (new ground: no code)
        moved = pan_target(codes[j], torch.full_like(codes[t], -1), (dy, dx))
        kept = pan_target(content[slots].view(h, w), found.new_zeros(h, w), (dy, dx))
        found |= kept & (moved == codes[t])
    return float(found.float().mean())


def references(path: HeldOutPath) -> dict[str, list[float]]:
    """Per latent frame 1 .. frames-1: the share of codes that freeze and moved get right."""
    codes, moves = path.codes, path.clip.moves()
    freeze, moved = [], []
    for t in range(1, codes.shape[0]):
        freeze.append(float((codes[t] == codes[t - 1]).float().mean()))
        revealed = torch.full_like(codes[t], -1)  # no code: counted wrong
        guess = pan_target(codes[t - 1], revealed, moves[t])
        moved.append(float((guess == codes[t]).float().mean()))
    return {"freeze": freeze, "moved": moved}


def span_mean(per_frame: list[float], span: tuple[int, int]) -> float | None:
    lo, hi = span
    xs = [a for t, a in enumerate(per_frame, 1) if lo <= t <= hi]
    return sum(xs) / len(xs) if xs else None


def shown(share: float | None) -> str:
    """A span's share for the table, '-' for a span the paths do not reach."""
    return "-" if share is None else f"{share:.3f}"


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, lane in results["lanes"].items():
        per = lane["per_frame"]
        style = {"ls": "--", "lw": 0.8} if name.startswith("reference") else {"marker": "."}
        ax.plot(range(1, len(per) + 1), per, label=name, **style)
    ax.set(xlabel="latent frame", ylabel="codes right, one step, true past", ylim=(0, 1))
    ax.legend(fontsize=7)
    save_figure(fig, f"{results['meta']['model']}: next frame from the cached past", path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(p)
    p.add_argument(
        "--policies",
        type=policy_specs,
        default="card,full,sliding:window=1,sliding:window=3",
        help=POLICY_LIST_HELP,
    )
    lumos = SamplingConfig.history_mask_ratio
    p.add_argument(
        "--mask-ratios",
        default=f"card,{lumos:g},0",
        help=f"'card' = the model card's; a ratio named twice runs once (Lumos-1's: {lumos:g})",
    )
    p.add_argument("--clips", type=positive_int, default=8, help="held-out paths")
    p.add_argument(
        "--frames", type=positive_int, default=25, help="latent frames per path (at least 2)"
    )
    p.add_argument(
        "--first-clip",
        type=int,
        default=FIRST_CLIP,
        help="first held-out path id (choose settings on another range than the reported one)",
    )
    p.add_argument(
        "--coloured", action="store_true", help="two-colour paths (captions name the colours)"
    )
    p.add_argument(
        "--text-only",
        action="store_true",
        help="text-to-video requests: frame 0 written back as history, not held as an anchor",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 paths of 8 frames, card and full")
    p.add_argument("--json", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    if args.frames < 2:
        p.error(f"--frames {args.frames}: a path needs at least 2 latent frames to predict one")
    if args.quick:
        args.clips, args.frames, args.policies, args.mask_ratios = 2, 8, [CARD, "full"], "card"
    prepare_host("cpu", args.threads)
    info = machine_info(torch.device("cpu"), torch.float32)
    print_machine(info)
    pipeline = load_model(p, args)
    card = pipeline.defaults
    t0 = time.perf_counter()
    paths = [
        held_out_path(pipeline, args.first_clip + i, args.frames, coloured=args.coloured)
        for i in range(args.clips)
    ]
    lanes: dict[str, Any] = {}
    for spec in args.policies:
        policy = lane_policy(spec, card)
        asked = args.mask_ratios.split(",")
        ratios = [card.sampling.history_mask_ratio if r == "card" else float(r) for r in asked]
        for ratio in dict.fromkeys(ratios):
            runs = [
                frame_accuracy(pipeline, policy, ratio, path, text_only=args.text_only)
                for path in paths
            ]
            name = f"{spec}, mask {ratio:g}"
            for lane, i in ((name, 0), (f"reference: held by {name}", 1)):
                per_frame = [sum(col) / len(col) for col in zip(*(r[i] for r in runs), strict=True)]
                lanes[lane] = {"policy": spec, "mask_ratio": ratio, "per_frame": per_frame}
                lanes[lane] |= {k: span_mean(per_frame, s) for k, s in SPANS.items()}
                print(lane, {k: shown(lanes[lane][k]) for k in SPANS}, flush=True)
    refs = [references(path) for path in paths]
    for ref in ("freeze", "moved"):
        per_frame = [sum(col) / len(col) for col in zip(*(r[ref] for r in refs), strict=True)]
        lanes[f"reference: {ref}"] = {"per_frame": per_frame}
        lanes[f"reference: {ref}"] |= {k: span_mean(per_frame, s) for k, s in SPANS.items()}
    rows = [[n, *(shown(lane[k]) for k in SPANS)] for n, lane in lanes.items()]
    print(markdown_table(["policy, history mask", *(f"frames {k}" for k in SPANS)], rows))
    took = time.perf_counter() - t0
    print(f"took {took:.1f} s, {args.clips} held-out paths of {args.frames} latent frames")
    meta = {
        "model": args.model,
        "weights": weights_record(args),
        "clips": args.clips,
        "frames": args.frames,
        "first_clip": args.first_clip,
        "coloured": args.coloured,
        "text_only": args.text_only,
        "machine": info,
        "seconds": round(took, 1),
        "command": command_line(),
    }
    save({"meta": meta, "lanes": lanes}, args.json, args.png, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
