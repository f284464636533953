"""`packcache generate`: one image-to-video clip from the command line, written to an MP4.

What it is: argument parsing and checking, a progress bar per latent frame, the MP4 written
frame by frame as latent frames finish, and a closing summary (per-frame latency, cache bytes,
total time). What it is not: the server; it loads the model itself and runs one request.

Invariant: a bad argument or unreadable input ends in one line on stderr and a non-zero exit,
never a traceback; a failed run leaves no partial output file behind.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from server.settings import Settings

if TYPE_CHECKING:  # heavy imports happen inside the command, after argument checks
    import torch
    from PIL import Image

    from packcache_core.pipeline import VideoParams

MAX_FRAMES = 4001  # 1001 latent frames; PackCache keeps memory flat, time grows linearly


class UsageError(Exception):
    """A problem with the arguments or inputs, reported as one line."""


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    from packcache_core.policy import POLICIES, policy_knobs

    a = parser.add_argument
    a(
        "--image",
        type=Path,
        default=None,
        help="conditioning image (JPEG, PNG, WebP, ...); leave it out for text-to-video",
    )
    a("--prompt", required=True, help="what should happen in the video")
    a(
        "--frames",
        type=int,
        default=None,
        help="RGB frames to generate (rounded up to 1 + 4k: 4 frames per latent frame) "
        "[the built-in model's card (demo: 21), 9 other built-ins, 25 real]",
    )
    a(
        "--cache-policy",
        default=None,
        choices=list(POLICIES),
        metavar="P",
        help=f"KV cache policy, one of {', '.join(POLICIES)} [the model card's: packcache]",
    )
    a(
        "--policy-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"cache policy parameter, repeatable; one of {', '.join(policy_knobs())}",
    )
    a("--seed", type=int, default=0, help="sampling seed; same seed, same video [0]")
    a("--model", default="builtin:demo", help="checkpoint folder or builtin:<name> [builtin:demo]")
    a(
        "--tokenizer",
        default=None,
        help="Cosmos DV4x8x8 folder or builtin:<name> "
        "[a built-in model's own; required with a checkpoint folder]",
    )
    a("--text-tokenizer", default=None, help="Chameleon tokenizer.json (real checkpoints)")
    a(
        "--steps",
        type=int,
        default=None,
        help="denoising steps per frame [the built-in model's card, 8 other built-ins, 50 real]",
    )
    a(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance scale [the built-in model's card, else 15]",
    )
    a(
        "--size",
        default=None,
        metavar="WxH",
        help="output size, multiples of 32 (default: the built-in model's card, else Lumos-1's "
        "bucket for the image, or its text-to-video size without one)",
    )
    a("--fps", type=int, default=12, help="frames per second [12]")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N [auto]")
    a(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="auto: bfloat16 on CUDA, float32 on CPU",
    )
    a("--threads", type=int, help=Settings.model_fields["threads"].description)
    a("-o", "--output", required=True, type=Path, help="MP4 file to write")


def _policy_params(pairs: list[str]) -> dict[str, object]:
    from packcache_core.policy import parse_knob

    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--policy-param {pair!r}: expected KEY=VALUE")
        try:
            params[key.strip()] = parse_knob(key.strip(), raw)
        except ValueError as e:
            raise UsageError(f"--policy-param {pair!r}: {e}") from e
    return params


def _check(args: argparse.Namespace) -> tuple[VideoParams, Image.Image | None]:
    """Validate everything cheap before loading a model; returns (VideoParams, image or None
    for text-to-video). The rules and defaults are the server's: the core's one resolver
    (`request.resolve`)."""
    from packcache_core.builtin import model_defaults
    from packcache_core.image import ImageError, load_image
    from packcache_core.layout import latent_frames_for
    from packcache_core.request import Ask, Limits, RequestError, resolve

    if not 1 <= args.fps <= 120:
        raise UsageError(f"--fps {args.fps}: must be between 1 and 120")
    if args.output.suffix.lower() != ".mp4":
        raise UsageError(f"-o {args.output}: the output must be an .mp4 file")
    if not args.output.parent.is_dir():
        raise UsageError(f"-o {args.output}: folder {args.output.parent} does not exist")
    image = None
    if args.image is not None:
        if not args.image.is_file():
            raise UsageError(f"--image {args.image}: no such file")
        try:
            image = load_image(args.image, max_pixels=100_000_000, max_bytes=200 << 20)
        except ImageError as e:
            raise UsageError(f"--image {args.image}: {e}") from e
    ask = Ask(
        prompt=args.prompt,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        cache_policy=args.cache_policy,
        policy_params=_policy_params(args.policy_param),
        text_only=image is None,
    )
    longest = latent_frames_for(MAX_FRAMES)
    limits = Limits(fps=args.fps, max_latent_frames=longest, max_bounded_latent_frames=longest)
    try:
        params = resolve(ask, model_defaults(args.model), limits)
    except RequestError as e:
        param = e.param or "frames"
        value = getattr(args, param, None)
        flag = f"--{param.replace('_', '-')}" + ("" if value is None else f" {value}")
        raise UsageError(f"{flag}: {e}") from e
    return params, image


def _device_dtype(args: argparse.Namespace) -> tuple[str, torch.dtype]:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available on this machine")
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def run_generate(args: argparse.Namespace) -> int:
    """Generate one video from a prompt (and an image, if given), and write it as MP4."""
    try:
        return _generate(args)
    except UsageError as e:
        print(f"packcache generate: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError) as e:  # model / tokenizer loading, writing
        print(f"packcache generate: error: {e}", file=sys.stderr)
        return 1


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from packcache_core.host import prepare_host
    from packcache_core.pipeline import Pipeline
    from packcache_core.video.output import Mp4Writer

    params, image = _check(args)
    device, dtype = _device_dtype(args)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be 1 or more")
    prepare_host(device, args.threads)  # as `packcache serve` does: see packcache_core/host.py
    t0 = time.perf_counter()
    pipe = Pipeline.load(args.model, args.tokenizer, args.text_tokenizer, device, dtype)
    load_s = time.perf_counter() - t0
    prepared = pipe.prepare(image, params)
    spec = pipe.plan(prepared)
    w, h = prepared.size
    print(
        f"{args.model}: {w}x{h}, {params.num_frames} frames ({params.latent_frames} latent), "
        f"{params.sampling.steps} steps, policy {params.policy.name}, cache "
        f"{spec.capacity_tokens} tokens/branch = {spec.bytes / 2**20:.1f} MiB "
        f"(loaded in {load_s:.1f} s)",
        file=sys.stderr,
    )
    run = pipe.start(prepared)
    latencies: list[float] = []
    start = time.perf_counter()
    try:
        with (
            Mp4Writer(args.output, params.fps) as writer,
            tqdm(total=run.generation.total_frames, unit="frame", file=sys.stderr) as bar,
        ):
            first = run.first_rgb()  # none for text-to-video: frame 0 is generated
            if first.shape[0]:
                writer.write(first)
            while not run.done:
                out = run.step()
                if out is None:
                    continue
                writer.write(out.rgb)
                latencies.append(out.result.seconds)
                bar.set_postfix(
                    s=f"{out.result.seconds:.2f}",
                    cache=f"{out.result.cache.bytes_used / 2**20:.1f}MiB",
                )
                bar.update()
    except BaseException:
        args.output.unlink(missing_ok=True)  # no partial file
        raise
    finally:
        run.close()
    total = time.perf_counter() - start
    print(
        f"wrote {args.output}: {writer.frames_written} frames at {params.fps} fps, "
        f"{total:.1f} s ({total / len(latencies):.2f} s per latent frame: median "
        f"{statistics.median(latencies):.2f}, max {max(latencies):.2f}); KV cache "
        f"{spec.bytes / 2**20:.1f} MiB for both branches, fixed",
        file=sys.stderr,
    )
    return 0
