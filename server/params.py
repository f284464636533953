"""Request options -> `VideoParams`, checked against the server's configured limits.

What it is: `to_video_params`, which applies defaults (steps, clip length, policy), turns
OpenAI's `seconds` and our `frames` into latent frames, parses `size`, builds the cache policy,
and raises `InvalidRequest` naming the parameter for anything out of range; and
`decode_image`, the limit-checked image decoder for uploads. What it is not: schema validation
of types and static bounds (`schemas.py`) or tokenisation (the engine's `prepare`).

Invariant: every `VideoParams` that reaches the engine is within the settings' limits.
"""

from __future__ import annotations

import math
import secrets

from PIL import Image

from packcache_core.generate import SamplingConfig
from packcache_core.image import MAX_RATIO, PATCH, ImageError, load_image
from packcache_core.pipeline import VideoParams
from packcache_core.policy import CachePolicy, make_policy
from server.errors import InvalidRequest
from server.schemas import GenerationOptions
from server.settings import Settings

POLICY_FIELDS = ("window", "rho", "budget", "b_min", "drop_masked")


def latent_frames_of(opts: GenerationOptions, settings: Settings) -> int:
    """Latent frames from `seconds`, `frames` or `latent_frames` (at most one), else the default."""
    given = [n for n in ("seconds", "frames", "latent_frames") if getattr(opts, n) is not None]
    if len(given) > 1:
        raise InvalidRequest(f"give at most one of seconds, frames, latent_frames; got {given}")
    if opts.seconds is not None:
        seconds = float(opts.seconds)
        if seconds <= 0:
            raise InvalidRequest("seconds must be positive", param="seconds")
        latent = math.ceil((settings.fps * seconds - 1) / 4) + 1
    elif opts.frames is not None:
        latent = math.ceil((opts.frames - 1) / 4) + 1
    else:
        latent = opts.latent_frames or settings.latent_frames
    if not 2 <= latent <= settings.max_latent_frames:
        most = settings.max_latent_frames
        raise InvalidRequest(
            f"the clip would have {latent} latent frames ({1 + 4 * (latent - 1)} frames); "
            f"this server allows 2 to {most} ({1 + 4 * (most - 1)} frames at {settings.fps} fps)",
            param=given[0] if given else "latent_frames",
        )
    return latent


def parse_size(size: str | None, settings: Settings) -> tuple[int, int] | None:
    """ "WxH" -> (W, H), multiples of 32 within the pixel and aspect limits."""
    if size is None:
        return None
    width, height = (int(v) for v in size.split("x"))
    if width < PATCH or height < PATCH or width % PATCH or height % PATCH:
        raise InvalidRequest(f"size {size}: both sides must be multiples of {PATCH}", param="size")
    if width * height > settings.max_video_pixels:
        raise InvalidRequest(
            f"size {size} has {width * height} pixels; this server allows at most "
            f"{settings.max_video_pixels}",
            param="size",
        )
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise InvalidRequest(f"size {size}: aspect ratio above {MAX_RATIO:g}", param="size")
    return width, height


def policy_of(opts: GenerationOptions, settings: Settings) -> CachePolicy:
    name = opts.cache_policy or settings.default_policy
    params = dict(settings.default_policy_params) if opts.cache_policy is None else {}
    params.update({k: getattr(opts, k) for k in POLICY_FIELDS if getattr(opts, k) is not None})
    try:
        return make_policy(name, **params)
    except ValueError as e:
        raise InvalidRequest(str(e), param="cache_policy") from e


def to_video_params(opts: GenerationOptions, settings: Settings) -> VideoParams:
    """Checked `VideoParams` for a request (raises `InvalidRequest`)."""
    if len(opts.prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"prompt has {len(opts.prompt)} characters; the limit is {settings.max_prompt_chars}",
            param="prompt",
        )
    if opts.model is not None and opts.model != settings.model_name:
        raise InvalidRequest(
            f"unknown model {opts.model!r}; this server serves {settings.model_name!r}",
            param="model",
            code="model_not_found",
        )
    steps = opts.steps or settings.steps
    if steps > settings.max_steps:
        raise InvalidRequest(
            f"steps {steps} is above this server's limit of {settings.max_steps}", param="steps"
        )
    guidance = settings.guidance_scale
    if opts.guidance_scale is not None:
        guidance = opts.guidance_scale
    return VideoParams(
        prompt=opts.prompt,
        latent_frames=latent_frames_of(opts, settings),
        fps=settings.fps,
        size=parse_size(opts.size, settings),
        seed=secrets.randbelow(2**31) if opts.seed is None else opts.seed,
        policy=policy_of(opts, settings),
        sampling=SamplingConfig(steps=steps, cfg_scale=guidance),
    )


def decode_image(data: bytes, settings: Settings, param: str) -> Image.Image:
    """An uploaded image, decoded within the byte and pixel limits (raises `InvalidRequest`)."""
    try:
        return load_image(data, settings.max_image_pixels, settings.max_upload_bytes)
    except ImageError as e:
        raise InvalidRequest(f"{param}: {e}", param=param) from e
