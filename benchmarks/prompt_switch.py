"""Does a video follow a prompt changed mid-stream? "pans left", then "pans right".

What it measures: on a trained built-in model, held-out scenes (the first frame of each clip),
several seeds, a fixed-length run whose prompt is "the camera pans left" until latent frame
`switch` and "the camera pans right" from it on (the text slots rewritten in place, history
and conditioning frame kept: `VideoGeneration.change_prompt`). From the picture of each latent
frame (its last RGB frame; a pan moves 8 px between them) the dominant shift is measured
(`demo.motion.content_shift`) over the frames before the switch and over those from the
frame before the switch to the end. A camera panning right moves the content left.

Lanes, same scenes and seeds: `switch` (left, then right), `right` (right from the start: what
following the prompt looks like on this model), `left` (never switched: what ignoring the
change looks like). Reported: the share of clips whose measured direction after the switch
frame is the camera's right pan, with a 95% Wilson interval, and the same before it.

    python benchmarks/prompt_switch.py --model builtin:demo-long --clips 8 --seeds 2 \
        --json benchmarks/results/prompt-switch-demo-long.json

What it is not: a test (`tests/` asserts the mechanics; this measures what a model does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from PIL import Image

from packcache_core.demo.data import make_clip
from packcache_core.demo.long import make_long_clip
from packcache_core.demo.motion import content_shift, direction_of
from packcache_core.host import prepare_host
from packcache_core.pipeline import Pipeline, VideoParams
from packcache_core.policy import policy_from_spec

LEFT, RIGHT = "the camera pans left", "the camera pans right"
# content direction of each camera pan (the camera moving right moves the picture left)
CONTENT = {LEFT: "right", RIGHT: "left"}


def scene(model: str, index: int) -> Image.Image:
    """The first frame of held-out clip `index` of the model's own data."""
    clip = make_long_clip("heldout", index) if model.endswith("demo-long") else None
    frame = clip.rgb_frames(1)[0] if clip else make_clip("heldout", index).rgb_frames(1)[0]
    return Image.fromarray(frame.numpy())


def run(pipeline: Pipeline, image: Image.Image, params: VideoParams) -> torch.Tensor:
    """uint8 (latent_frames, H, W, 3): the picture of each latent frame."""
    video = pipeline.start(pipeline.prepare(image, params))
    pictures = [video.first_rgb()[-1]]
    while not video.done:
        if (out := video.step()) is not None:
            pictures.append(out.rgb[-1])
    return torch.stack(pictures)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:demo-long")
    p.add_argument("--policy", default="packcache", help="a policy spec, e.g. sliding:window=1")
    p.add_argument("--latent-frames", type=int, help="default: the model card's")
    p.add_argument(
        "--switch", type=int, help="first latent frame of the new prompt (default: middle)"
    )
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    prepare_host("cpu", args.threads)
    pipeline = Pipeline.load(args.model)
    card = pipeline.defaults
    latent = args.latent_frames or card.latent_frames
    switch = args.switch or latent // 2
    policy = policy_from_spec(args.policy)
    load_start, started = os.getloadavg(), time.perf_counter()
    # lane -> (prompt at the start, prompt from `switch` on)
    lanes = {"switch": (LEFT, RIGHT), "right": (RIGHT, RIGHT), "left": (LEFT, LEFT)}
    rows: dict[str, list[dict[str, object]]] = {lane: [] for lane in lanes}
    for index in range(args.clips):
        image = scene(args.model, index)
        for seed in range(args.seeds):
            for lane, (start, then) in lanes.items():
                params = VideoParams(
                    start,
                    latent_frames=latent,
                    size=card.size,
                    seed=seed,
                    policy=policy,
                    sampling=card.sampling,
                    prompt_changes=((switch, then),) if then != start else (),
                    text_slots=64,
                )
                pics = run(pipeline, image, params)
                before = direction_of(content_shift(pics[:switch]))
                after = direction_of(content_shift(pics[switch - 1 :]))
                rows[lane].append({"clip": index, "seed": seed, "before": before, "after": after})
    summary = {}
    print(
        f"{args.model}, policy {args.policy}, {latent} latent frames, switch at {switch}, "
        f"{args.clips} clips x {args.seeds} seeds, load {load_start}"
    )
    print(
        "| lane | prompt before -> after | camera right after the switch | [95% CI] "
        "| camera left before | no motion after |"
    )
    print("|---|---|---|---|---|---|")
    for lane, results in rows.items():
        n = len(results)
        right = sum(r["after"] == CONTENT[RIGHT] for r in results)
        left_before = sum(r["before"] == CONTENT[LEFT] for r in results)
        still = sum(r["after"] is None for r in results)
        lo, hi = wilson(right, n)
        start, then = lanes[lane]
        summary[lane] = {
            "n": n,
            "right_after": right / n,
            "ci": [lo, hi],
            "left_before": left_before / n,
            "still_after": still / n,
        }
        print(
            f"| {lane} | {start!r} -> {then!r} | {right}/{n} = {right / n:.2f} | "
            f"[{lo:.2f}, {hi:.2f}] | {left_before / n:.2f} | {still / n:.2f} |"
        )
    out = {
        "model": args.model,
        "policy": args.policy,
        "latent_frames": latent,
        "switch": switch,
        "clips": args.clips,
        "seeds": args.seeds,
        "threads": args.threads,
        "load_avg": load_start,
        "load_avg_end": os.getloadavg(),
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "rows": rows,
    }
    print(f"{out['seconds']:.0f} s, load at the end {out['load_avg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
