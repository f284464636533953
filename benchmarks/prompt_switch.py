"""Does a video follow a prompt changed mid-stream? "pans left", then "pans right".

What it measures: on a trained built-in model, held-out scenes (the first frame of each clip),
several seeds, a fixed-length run whose prompt is "the camera pans left" until latent frame
`switch` and "the camera pans right" from it on (the text slots rewritten in place:
`VideoGeneration.change_prompt`). From the picture of each latent frame (its last RGB frame; a
pan moves 8 px between them) the dominant shift is measured (`demo.motion.content_shift`) over
the frames before the switch and over `--after` frames from the switch on (with the frame
before it). A camera panning right moves the content left.

Lanes, same scenes and seeds: `switch, re-cache` (left, then right, the conditioning frame and
the history forwarded again under the new text: the default), `switch, history kept` (their
keys as the old text made them), `right` (right from the start: what following the prompt
looks like on this model), `left` (never switched: what ignoring the change looks like).
Reported: the share of clips whose measured direction after the switch frame is the camera's
right pan, with a 95% Wilson interval, and the same before it.

    python benchmarks/prompt_switch.py --model builtin:demo-long --clips 8 --seeds 2 \
        --json benchmarks/results/prompt-switch-demo-long.json

What it is not: a test (`tests/` asserts the mechanics; this measures what a model does).
"""

from __future__ import annotations

import argparse
import dataclasses
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
    p.add_argument("--after", type=int, default=4, help="latent frames measured from the switch on")
    p.add_argument("--guidance", type=float, help="CFG scale (default: the model card's)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--quick", action="store_true", help="builtin:demo, --policy (its card's), 2 clips, 1 seed"
    )
    args = p.parse_args()
    if args.quick:
        args.model, args.clips, args.seeds = "builtin:demo", 2, 1
    prepare_host("cpu", args.threads)
    pipeline = Pipeline.load(args.model)
    card = pipeline.defaults
    latent = args.latent_frames or card.latent_frames
    switch = args.switch or latent // 2
    sampling = card.sampling
    if args.guidance is not None:
        sampling = dataclasses.replace(sampling, cfg_scale=args.guidance)
    policy = policy_from_spec(args.policy)
    load_start, started = os.getloadavg(), time.perf_counter()
    # lane -> (prompt at the start, prompt from `switch` on, re-cache the history on the change)
    lanes = {
        "switch, re-cache": (LEFT, RIGHT, True),
        "switch, history kept": (LEFT, RIGHT, False),
        "right": (RIGHT, RIGHT, True),
        "left": (LEFT, LEFT, True),
    }
    rows: dict[str, list[dict[str, object]]] = {lane: [] for lane in lanes}
    for index in range(args.clips):
        image = scene(args.model, index)
        for seed in range(args.seeds):
            for lane, (start, then, recache) in lanes.items():
                params = VideoParams(
                    start,
                    latent_frames=latent,
                    size=card.size,
                    seed=seed,
                    policy=policy,
                    sampling=sampling,
                    prompt_changes=((switch, then),) if then != start else (),
                    recache=recache,
                )
                pics = run(pipeline, image, params)
                rows[lane].append(
                    {
                        "clip": index,
                        "seed": seed,
                        "before": direction_of(content_shift(pics[:switch])),
                        # from the last frame of the old prompt (the turn included) ...
                        "from": direction_of(content_shift(pics[switch - 1 : switch + args.after])),
                        # ... and from the first frame of the new one
                        "after": direction_of(
                            content_shift(pics[switch : switch + args.after + 1])
                        ),
                    }
                )
    summary = {}
    print(
        f"{args.model}, policy {args.policy}, guidance {sampling.cfg_scale:g}, {latent} latent "
        f"frames, switch at {switch}, "
        f"{args.after} frames measured, {args.clips} clips x {args.seeds} seeds, load {load_start}"
    )
    print(
        "| lane | prompt before -> after | camera right from the switch [95% CI] "
        "| camera right after its first frame [95% CI] | camera left before | no motion after |"
    )
    print("|---|---|---|---|---|---|")
    for lane, results in rows.items():
        n = len(results)
        share = {k: sum(r[k] == CONTENT[RIGHT] for r in results) for k in ("from", "after")}
        left_before = sum(r["before"] == CONTENT[LEFT] for r in results) / n
        still = sum(r["after"] is None for r in results) / n
        ci = {k: wilson(v, n) for k, v in share.items()}
        start, then, _ = lanes[lane]
        summary[lane] = {
            "n": n,
            "right_from_switch": share["from"] / n,
            "right_from_switch_ci": ci["from"],
            "right_after_first": share["after"] / n,
            "right_after_first_ci": ci["after"],
            "left_before": left_before,
            "still_after": still,
        }
        cells = [
            f"{share[k]}/{n} = {share[k] / n:.2f} [{ci[k][0]:.2f}, {ci[k][1]:.2f}]"
            for k in ("from", "after")
        ]
        print(
            f"| {lane} | {start!r} -> {then!r} | {cells[0]} | {cells[1]} | {left_before:.2f} "
            f"| {still:.2f} |"
        )
    out = {
        "model": args.model,
        "policy": args.policy,
        "latent_frames": latent,
        "switch": switch,
        "after": args.after,
        "guidance": sampling.cfg_scale,
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
