"""Does the built-in model keep moving as asked, for as long as a video runs?

    python benchmarks/demo_motion.py --json benchmarks/results/demo-motion.json
    python benchmarks/demo_motion.py --model builtin:demo-base --json /tmp/base.json  # before
    python benchmarks/demo_motion.py --quick                                          # minutes

What it measures, from outside the model (the decoded pictures only), on held-out scenes (the
first frame of held-out clips `make_clip("heldout", i)`, never trained on) asked to pan left and
right, with the server's default request (the model card's sampling, size and policy; other
policies as extra lanes):
- Per latent-frame step, the shift between the pictures of consecutive latent frames (each
  latent frame's last RGB frame; phase correlation, `demo.motion.content_shift`). A step moves
  "as asked" when its shift along the asked axis is at least half a pan step (4 px) the asked
  way (a camera panning left moves the picture right). At 6, 13, 25 and 37 latent frames (the
  card's length, and the SDK's 4, 8 and 12 s at 12 fps), and in an open-ended video of 200
  latent frames (with the cache's bytes and the process RSS along it).
- "Not a moving smear": each picture against the previous one moved by the measured step
  (`moved_psnr`), beside the same measure on the tokenizer's round trip of a true pan of the
  same scene; frame 0 against the tokenizer's round trip of the input image.
- A prompt change mid-video ("pans left" to "pans right", and back): the step into the first
  frame under the new prompt must move the new way by about one step, and no step above 1.5
  pan steps (a jump, not a turn). Under the card's policy, others with `--switch-policies`.
- Text to video, no image: held-out captions of two-colour scenes ("red and blue, the camera
  pans left", `make_path_clip(coloured=True)`). Frame 0's colours (`demo.motion.colour_shares`:
  k-means in RGB, each cluster named by the nearest named colour, the two largest) against the
  caption's two; the same check on the tokenizer's round trip of the true scene is printed
  beside it (what a perfect model would score), and how often one named colour covers at least
  `demo.motion.FLOOD_SHARE` of frame 0 (each run records its colours' shares). Then the asked
  pan, step by step. Under the card's policy, and others with `--text-policies`. With
  `--text-anchored`, each text-only video again as image to video from the frame 0 it drew (its
  codes held as the conditioning frame: an anchor that no policy evicts, where text to video
  holds it as history), same caption, seed and policy: what losing frame 0 from the cache costs.
Writes JSON (every step's shift) and a PNG of shift against frame index; prints tables and the
load average. What it is not: a test (`tests/core/test_demo_model.py` checks a short video).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

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
from packcache_core.batch import tick
from packcache_core.demo.data import PAN_STEP, Motion, make_clip
from packcache_core.demo.motion import (
    FLOOD_SHARE,
    asked_shift,
    colour_shares,
    content_shift,
    flooded,
    moved_psnr,
    psnr,
    two_colours,
)
from packcache_core.demo.paths import PathClip, make_path_clip
from packcache_core.generate import GenerationDefaults, SamplingConfig
from packcache_core.host import prepare_host
from packcache_core.pipeline import Pipeline, Prepared, VideoParams, VideoRun
from packcache_core.policy import CachePolicy, parse_typed

CAPTION = "the camera pans {d}"
# the picture's motion per latent frame when the camera pans that way (dx in px)
CONTENT_DX = {"left": PAN_STEP, "right": -PAN_STEP}
DIRECTIONS = ("left", "right")
SEED_STRIDE = 1000  # seed k of a scene: scene + k * SEED_STRIDE (k = 0: the scene's index)


@dataclasses.dataclass(frozen=True)
class Job:
    image: int | None  # held-out clip whose first frame is the input; None: text to video
    direction: str
    params: VideoParams
    switch: int | None = None  # latent frame from which the other direction is asked
    anchor: torch.Tensor | None = None  # (h, w) codes: image to video from them (`prepare`)


def scene(index: int) -> Image.Image:
    return Image.fromarray(make_clip("heldout", index).rgb_frames(1)[0].numpy())


def colour_clip(index: int, direction: str) -> PathClip:
    """Held-out two-colour scene `index`, its first segment panning `direction`."""
    return make_path_clip("heldout", index, 2, first=direction, coloured=True)


SAMPLING_FIELDS = typing.get_type_hints(SamplingConfig)


def sampling_changes(text: str) -> dict[str, object]:
    """ "name=value,..." -> {field of SamplingConfig: value of its type} (argparse type)."""
    out: dict[str, object] = {}
    for item in text.split(","):
        name, eq, value = (x.strip() for x in item.partition("="))
        if not eq or name not in SAMPLING_FIELDS:
            raise argparse.ArgumentTypeError(
                f"{item!r}: want name=value with a name of {', '.join(SAMPLING_FIELDS)}"
            )
        try:
            out[name] = parse_typed(name, value, SAMPLING_FIELDS[name])
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return out


def prepare(pipeline: Pipeline, job: Job) -> Prepared:
    if job.anchor is not None:  # image to video from these very codes (their picture's
        # encoding is other codes: the tokenizer's round trip is not idempotent)
        picture = pipeline.video_tokenizer.decode(job.anchor[None])[0]
        params = dataclasses.replace(job.params, text_only=False)
        prepared = pipeline.prepare(Image.fromarray(picture.numpy()), params)
        request = dataclasses.replace(prepared.request, first_frame=job.anchor)
        return dataclasses.replace(prepared, request=request)
    return pipeline.prepare(None if job.image is None else scene(job.image), job.params)


def run_all(
    pipeline: Pipeline, jobs: list[Job], stop_at: int | None = None
) -> list[dict[str, Any]]:
    """Every job's pictures (one per latent frame) and the codes of the first frame it made,
    all advanced together by `batch.tick`; an open-ended job is stopped once it has `stop_at`
    latent frames."""
    runs: list[VideoRun] = []
    pictures: list[list[torch.Tensor]] = []
    first_input: list[torch.Tensor] = []
    first_codes: list[torch.Tensor | None] = [None] * len(jobs)  # each video's first frame made
    for job in jobs:
        prepared = prepare(pipeline, job)
        run = pipeline.start(prepared)
        runs.append(run)
        pictures.append(list(run.first_rgb()[-1:]))  # none yet for text to video
        first_input.append(prepared.image)
    memory: list[tuple[int, int, int]] = []  # (latent frames, cache bytes, RSS kB)
    while live := [i for i, r in enumerate(runs) if not r.done]:
        for i, outcome in zip(live, tick([runs[i] for i in live]), strict=True):
            assert outcome.error is None, outcome.error
            if outcome.result is None:
                continue
            pictures[i].append(outcome.result.rgb[-1])
            if first_codes[i] is None:
                first_codes[i] = outcome.result.result.codes
            n = len(pictures[i])
            if i == 0 and (n % 10 == 0 or n == 2):
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                memory.append((n, outcome.result.result.cache.bytes_capacity, rss))
            if stop_at is not None and n >= stop_at:
                runs[i].stop()
    for r in runs:
        r.close()
    return [
        {"pictures": torch.stack(p), "input": x, "first_codes": c, "memory": memory}
        for p, x, c in zip(pictures, first_input, first_codes, strict=True)
    ]


def steps(job: Job, pictures: torch.Tensor) -> list[dict[str, Any]]:
    """Per step into latent frame t (t = 1 ..): shift, the asked way, and moved PSNR."""
    out = []
    for t in range(1, pictures.shape[0]):
        asked = job.direction
        if job.switch is not None and t >= job.switch:
            asked = "right" if job.direction == "left" else "left"
        dy, dx = content_shift(pictures[t - 1 : t + 1])
        ok = asked_shift(pictures[t - 1], pictures[t], asked) >= PAN_STEP / 2
        step = (round(dy), round(dx))
        fits = max(abs(step[0]), abs(step[1])) < min(pictures.shape[1:3]) // 2 - PAN_STEP
        out.append(
            {
                "t": t,
                "asked": asked,
                "dy": dy,
                "dx": dx,
                "as_asked": bool(ok),
                "moved_psnr": moved_psnr(pictures[t - 1], pictures[t], step) if fits else None,
            }
        )
    return out


def true_pan_psnr(pipeline: Pipeline, image: int, direction: str, n: int) -> float:
    """Mean moved PSNR of the tokenizer's round trip of a true pan of the scene (the same
    measure, with the true step)."""
    clip = make_clip("heldout", image)
    pan = dataclasses.replace(clip, motion=Motion("pan", direction))
    tok = pipeline.video_tokenizer
    frames = [tok.decode(tok.encode_image(f)[None])[0] for f in pan.latent_frames(n)]
    step = (0, CONTENT_DX[direction])
    return float(np.mean([moved_psnr(a, b, step) for a, b in itertools.pairwise(frames)]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    all_steps = [s for r in runs for s in r["steps"]]
    psnrs = [s["moved_psnr"] for s in all_steps if s["moved_psnr"] is not None]
    return {
        "runs": len(runs),
        "steps": len(all_steps),
        "as_asked": float(np.mean([s["as_asked"] for s in all_steps])),
        "moved_psnr": float(np.mean(psnrs)) if psnrs else None,
        "frame0_psnr": float(np.mean([r["frame0_psnr"] for r in runs])),
        "round_trip_vs_input_psnr": float(np.mean([r["frame0_vs_input_psnr"] for r in runs])),
    }


def video_jobs(
    card: GenerationDefaults,
    policy: CachePolicy,
    frames: int,
    args: argparse.Namespace,
    open_ended: bool = False,
    switch: int | None = None,
) -> list[Job]:
    """Held-out scenes x seeds x directions, each a default request (the card's sampling and
    size) under `policy`; with a prompt change to the other direction at `switch`."""
    images = args.open_images if open_ended else args.images
    seeds = args.switch_seeds if switch is not None else 1
    jobs = []
    for image, k in itertools.product(
        range(args.first_image, args.first_image + images), range(seeds)
    ):
        for d in DIRECTIONS:
            other = "right" if d == "left" else "left"
            changes = () if switch is None else ((switch, CAPTION.format(d=other)),)
            params = VideoParams(
                CAPTION.format(d=d),
                latent_frames=card.latent_frames if open_ended else frames,
                size=card.size,
                seed=image + SEED_STRIDE * k,
                policy=policy,
                sampling=card.sampling,
                open_ended=open_ended,
                prompt_changes=changes,
                text_slots=200 if switch is not None else 0,
            )
            jobs.append(Job(image, d, params, switch))
    return jobs


def turned(run: dict[str, Any], switch: int) -> bool:
    """A run with a prompt change at latent frame `switch` turns: the step into the first frame
    under the new prompt moves the new way, and none of it and the next two jumps (above 1.5
    pan steps)."""
    steps = run["steps"][switch - 1 : switch + 2]
    return bool(steps[0]["as_asked"]) and max(abs(x["dx"]) for x in steps) <= 1.5 * PAN_STEP


def lane(
    pipeline: Pipeline,
    policy: CachePolicy,
    frames: int,
    args: argparse.Namespace,
    open_ended: bool = False,
    switch: int | None = None,
) -> dict[str, Any]:
    jobs = video_jobs(pipeline.defaults, policy, frames, args, open_ended, switch)
    runs: list[dict[str, Any]] = []
    results = run_all(pipeline, jobs, frames if open_ended else None)
    tok = pipeline.video_tokenizer
    for job, res in zip(jobs, results, strict=True):
        x = res["input"]
        round_trip = tok.decode(tok.encode_image(x)[None])[0]
        runs.append(
            {
                "image": job.image,
                "direction": job.direction,
                "seed": job.params.seed,
                "steps": steps(job, res["pictures"]),
                "frame0_psnr": psnr(res["pictures"][0], round_trip),
                "frame0_vs_input_psnr": psnr(round_trip, x),
            }
        )
    out: dict[str, Any] = {"summary": summarise(runs), "runs": runs}
    if open_ended:
        out["memory"] = results[0]["memory"]
    if switch is not None:
        out["summary"]["turns"] = float(np.mean([turned(r, switch) for r in runs]))
        out["summary"]["switch"] = switch
    return out


def text_jobs(
    card: GenerationDefaults, policy: CachePolicy, frames: int, args: argparse.Namespace
) -> tuple[list[PathClip], list[Job]]:
    """Held-out two-colour captions (their clips) and a text-only request for each."""
    first = args.first_image
    clips = [colour_clip(i, DIRECTIONS[i % 2]) for i in range(first, first + args.text_captions)]
    jobs = [
        Job(
            None,
            DIRECTIONS[i % 2],
            VideoParams(
                clip.captions[0],
                latent_frames=frames,
                size=card.size,
                seed=i,
                policy=policy,
                sampling=card.sampling,
                text_only=True,
            ),
        )
        for i, clip in enumerate(clips)
    ]
    return clips, jobs


def text_lane(
    pipeline: Pipeline, policy: CachePolicy, frames: int, args: argparse.Namespace
) -> tuple[dict[str, Any], torch.Tensor]:
    """Text to video on held-out two-colour captions: frame 0's colours, then the pan; and the
    first frames of every video (for a contact sheet). With `args.text_anchored`, each video
    again from the frame 0 it drew held as an anchor (`--text-anchored`)."""
    clips, jobs = text_jobs(pipeline.defaults, policy, frames, args)
    tok = pipeline.video_tokenizer
    runs = []
    results = run_all(pipeline, jobs)
    anchored: list[dict[str, Any]] = [{} for _ in jobs]
    if args.text_anchored:
        again = [
            dataclasses.replace(job, anchor=res["first_codes"])
            for job, res in zip(jobs, results, strict=True)
        ]
        redone = run_all(pipeline, again)
        anchored = [
            {"anchored_steps": steps(job, res["pictures"])}
            for job, res in zip(again, redone, strict=True)
        ]
    for i, (job, clip, res) in enumerate(zip(jobs, clips, results, strict=True)):
        truth = tok.decode(tok.encode_image(clip.latent_frame(0))[None])[0]
        assert clip.colours is not None
        want = set(clip.colours)
        shares, true_shares = colour_shares(res["pictures"][0]), colour_shares(truth)
        got = two_colours(shares)
        runs.append(
            {
                "caption": clip.captions[0],
                "direction": job.direction,
                "seed": i,
                "colours": got,
                "colour_shares": {k: round(v, 3) for k, v in shares.items()},
                "colours_as_named": set(got) == want,
                "round_trip_colours_as_named": set(two_colours(true_shares)) == want,
                "round_trip_colour_shares": {k: round(v, 3) for k, v in true_shares.items()},
                "steps": steps(job, res["pictures"]),
                **anchored[i],
            }
        )
    all_steps = [s for r in runs for s in r["steps"]]
    summary = {
        "runs": len(runs),
        "steps": len(all_steps),
        "as_asked": float(np.mean([s["as_asked"] for s in all_steps])),
        "colours_as_named": float(np.mean([r["colours_as_named"] for r in runs])),
        "round_trip_colours_as_named": float(
            np.mean([r["round_trip_colours_as_named"] for r in runs])
        ),
        **{
            f"{prefix}one_colour_floods": float(
                np.mean([flooded(r[f"{prefix}colour_shares"]) for r in runs])
            )
            for prefix in ("", "round_trip_")
        },
        "anchored_as_asked": float(
            np.mean([s["as_asked"] for a in anchored for s in a["anchored_steps"]])
        )
        if args.text_anchored
        else None,
    }
    sheet = torch.stack([r["pictures"][: min(frames, 6)] for r in results])  # (n, f, H, W, 3)
    return {"summary": summary, "runs": runs}, sheet


def contact_sheet(videos: torch.Tensor, path: Path) -> None:
    """uint8 (rows, frames, H, W, 3) -> a PNG: one video per row, its frames left to right."""
    n, f, H, W, _ = videos.shape
    grid = videos.permute(0, 2, 1, 3, 4).reshape(n * H, f * W, 3)
    Image.fromarray(grid.numpy()).save(path)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    lanes = results["lanes"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, res in lanes.items():
        if not name.startswith("card") or "open" in name:
            continue
        for r in res["runs"]:
            sign = 1 if r["direction"] == "left" else -1
            axes[0].plot(
                [s["t"] for s in r["steps"]],
                [sign * s["dx"] for s in r["steps"]],
                lw=0.6,
                alpha=0.5,
                color="C0" if "37" in name else "C1",
            )
    axes[0].axhline(PAN_STEP, color="k", ls="--", lw=1, label="one pan step")
    axes[0].axhline(PAN_STEP / 2, color="grey", ls=":", lw=1, label="as asked: above")
    axes[0].set(
        title="default request, 37 and 6 latent frames",
        xlabel="latent frame",
        ylabel="shift the asked way (px)",
    )
    axes[0].legend(fontsize=8)
    for name, res in lanes.items():
        if "open" not in name:
            continue
        for r in res["runs"]:
            sign = 1 if r["direction"] == "left" else -1
            axes[1].plot(
                [s["t"] for s in r["steps"]],
                [sign * s["dx"] for s in r["steps"]],
                lw=0.6,
                alpha=0.6,
            )
    axes[1].axhline(PAN_STEP, color="k", ls="--", lw=1)
    axes[1].axhline(PAN_STEP / 2, color="grey", ls=":", lw=1)
    axes[1].set(
        title="open-ended stream, default policy",
        xlabel="latent frame",
        ylabel="shift the asked way (px)",
    )
    save_figure(fig, f"{results['meta']['model']}: motion as asked, held-out scenes", path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(p)
    p.add_argument(
        "--sampling",
        type=sampling_changes,
        default={},
        help="card sampling settings to change, e.g. temperature=0.7,cfg_scale=2 (a dev run)",
    )
    p.add_argument(
        "--policies",
        type=policy_specs,
        default="card,full,sliding:window=1",
        help=POLICY_LIST_HELP,
    )
    p.add_argument("--lengths", default="6,13,25,37", help="latent frames")
    p.add_argument(
        "--images", type=positive_int, default=8, help="held-out scenes (x 2 directions)"
    )
    p.add_argument(
        "--first-image",
        type=int,
        default=0,
        help="index of the first held-out scene and caption (the reported set starts at 0; "
        "choose settings on another range, e.g. 100, a dev set)",
    )
    p.add_argument("--open-frames", type=int, default=200)
    p.add_argument("--open-images", type=positive_int, default=4)
    p.add_argument("--switch", type=int, default=7, help="latent frame of the prompt change")
    p.add_argument(
        "--switch-seeds",
        type=positive_int,
        default=1,
        help="sampling seeds per scene and direction in the prompt-change lane (more runs)",
    )
    p.add_argument(
        "--switch-policies",
        type=policy_specs,
        default=CARD,
        help="policies of the prompt-change lanes, as --policies",
    )
    p.add_argument(
        "--text-captions", type=int, default=16, help="held-out two-colour captions, text only"
    )
    p.add_argument("--text-frames", type=int, default=13)
    p.add_argument(
        "--text-anchored",
        action="store_true",
        help="each text-only video again, from the frame 0 it drew held as an anchor (module doc)",
    )
    p.add_argument(
        "--text-policies",
        type=policy_specs,
        default="card",
        help="policies of the text-only lanes, as --policies",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 scenes, 6 and 13 frames, 40 open")
    p.add_argument("--json", type=Path)
    p.add_argument("--png", type=Path)
    p.add_argument(
        "--sheet", type=Path, help="contact sheet PNG: default videos, image then text only"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.open_images, args.open_frames, args.lengths = 2, 1, 40, "6,13"
        args.text_captions = 4
    prepare_host("cpu", args.threads)
    info = machine_info(torch.device("cpu"), torch.float32)
    print_machine(info)
    pipeline = load_model(p, args)
    if args.sampling:
        sampling = dataclasses.replace(pipeline.defaults.sampling, **args.sampling)
        pipeline.defaults = dataclasses.replace(pipeline.defaults, sampling=sampling)
    card = pipeline.defaults
    card_policy = lane_policy(CARD, card)
    lengths = [int(x) for x in args.lengths.split(",")]
    switch_len = max(13, args.switch + 3)
    # every lane's first request planned now: a policy that cannot serve it fails here, not
    # after the lanes before it have run
    for spec in dict.fromkeys([*args.policies, *args.switch_policies, *args.text_policies]):
        if spec == CARD:
            continue
        policy = lane_policy(spec, card)
        firsts = []
        if spec in args.policies:
            firsts.append(video_jobs(card, policy, lengths[-1], args)[0])
        if spec in args.switch_policies:
            firsts.append(video_jobs(card, policy, switch_len, args, switch=args.switch)[0])
        if spec in args.text_policies and args.text_captions:
            firsts.append(text_jobs(card, policy, args.text_frames, args)[1][0])
        for job in firsts:
            try:
                pipeline.plan(prepare(pipeline, job))
            except ValueError as e:
                p.error(f"{spec} cannot serve {job.params.latent_frames} latent frames: {e}")
    t0 = time.perf_counter()
    lanes: dict[str, Any] = {}
    for spec in args.policies:
        policy = lane_policy(spec, card)
        for n in lengths if spec == CARD else lengths[-1:]:
            lanes[f"{spec} {n}"] = lane(pipeline, policy, n, args)
            print(f"{spec} {n}: {lanes[f'{spec} {n}']['summary']}", flush=True)
    if args.open_frames:
        lanes[f"card open {args.open_frames}"] = lane(
            pipeline, card_policy, args.open_frames, args, open_ended=True
        )
    for spec in args.switch_policies:
        policy = lane_policy(spec, card)
        name = f"{spec} switch@{args.switch} {switch_len}"
        lanes[name] = lane(pipeline, policy, switch_len, args, switch=args.switch)
        print(f"{name}: {lanes[name]['summary']}", flush=True)
    sheet = None
    for spec in args.text_policies if args.text_captions else []:
        policy = lane_policy(spec, card)
        name = f"{spec} text {args.text_frames}"
        lanes[name], videos = text_lane(pipeline, policy, args.text_frames, args)
        sheet = videos if spec == CARD else sheet  # the contact sheet shows the default
        print(f"{name}: {lanes[name]['summary']}", flush=True)
    scenes = range(args.first_image, args.first_image + args.images)
    reference = float(
        np.mean([true_pan_psnr(pipeline, i, d, 6) for i in scenes for d in DIRECTIONS])
    )

    def cell(s: dict[str, Any], key: str, fmt: str) -> str:
        return format(s[key], fmt) if s.get(key) is not None else "-"

    rows = []
    for name, res in lanes.items():
        s = res["summary"]
        rows.append(
            [
                name,
                s["runs"],
                s["steps"],
                cell(s, "as_asked", ".1%"),
                cell(s, "anchored_as_asked", ".1%"),
                cell(s, "moved_psnr", ".1f"),
                f"{reference:.1f}",
                cell(s, "frame0_psnr", ".1f"),
                cell(s, "round_trip_vs_input_psnr", ".1f"),
                cell(s, "turns", ".0%"),
                cell(s, "colours_as_named", ".0%"),
                cell(s, "round_trip_colours_as_named", ".0%"),
                cell(s, "one_colour_floods", ".0%"),
                cell(s, "round_trip_one_colour_floods", ".0%"),
            ]
        )
    head = [
        "lane (policy, latent frames)",
        "runs",
        "steps",
        "moved as asked",
        "same, frame 0 as anchor",
        "moved PSNR (dB)",
        "true pan, round trip",
        "frame 0 vs round trip",
        "round trip vs input",
        "turns",
        "colours as named",
        "same, true scene",
        f"one colour >= {FLOOD_SHARE:.0%}",
        "same, true scene",
    ]
    print(markdown_table(head, rows))
    if args.sheet:
        jobs = [
            Job(
                i,
                d,
                VideoParams(
                    CAPTION.format(d=d),
                    card.latent_frames,
                    size=card.size,
                    seed=i,
                    policy=card_policy,
                    sampling=card.sampling,
                ),
            )
            for i, d in enumerate(DIRECTIONS)
        ]
        videos = torch.stack([r["pictures"][:6] for r in run_all(pipeline, jobs)])
        if sheet is not None:
            n = min(videos.shape[1], sheet.shape[1])  # frames per row: the shorter video's
            videos = torch.cat([videos[:, :n], sheet[:4, :n]])
        contact_sheet(videos, args.sheet)
        print(f"contact sheet: {args.sheet}")
    meta = {
        "machine": info,
        "model": args.model,
        "weights": weights_record(args),
        "card_policy": {"name": card.cache_policy, "params": card.policy_params},
        "sampling": dataclasses.asdict(card.sampling),
        "true_pan_moved_psnr": reference,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_avg_end": list(os.getloadavg()),
        "command": command_line(),
    }
    print(f"took {meta['seconds']} s, load average {meta['load_avg_end']}")
    save({"meta": meta, "lanes": lanes}, args.json, args.png, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
