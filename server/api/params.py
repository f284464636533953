"""Request options -> `VideoParams`, checked against the server's configured limits.

What it is: `to_video_params`, which checks the model name and hands the options to the core's
one resolver (`packcache_core.request.resolve`: defaults, seconds and frames to latent frames,
size, steps, policy) with the settings' defaults and limits, raising `InvalidRequest` naming
the parameter for anything out of range; `open_upload` / `decode_upload`, the limit-checked
image decoder for uploads (header and memory estimate first, pixels after); and
`probe_video_upload` / `video_decode_bytes` / `decode_video_upload`, the same for a video to
continue (`packcache_core.video.input`; a refusal names the setting it exceeds). What
it is not: schema validation of types and static bounds (`schemas.py`) or tokenisation (the
engine's `prepare`).

Invariant: every `VideoParams` that reaches the engine is within the settings' limits.
"""

from __future__ import annotations

from PIL import Image

from packcache_core.image import ImageError, Opened, decode_rgb, open_image
from packcache_core.pipeline import VideoParams
from packcache_core.policy import policy_knobs
from packcache_core.request import Ask, RequestError, resolve
from packcache_core.video.input import (
    Clip,
    Probe,
    VideoInputError,
    decode_bytes,
    decode_clip,
    probe_video,
)
from server.api.schemas import GenerationOptions
from server.errors import InvalidRequest
from server.settings import VIDEO_LIMIT_SETTINGS, Settings

POLICY_FIELDS = tuple(policy_knobs())


def ask_of(
    opts: GenerationOptions, open_ended: bool = False, text_slots: int = 0, text_only: bool = False
) -> Ask:
    """The request's options as the core's resolver reads them (a websocket stream adds
    whether it is open-ended and the text slots it holds for a new prompt; `text_only`: no
    image came, text-to-video)."""
    knobs = {k: getattr(opts, k) for k in POLICY_FIELDS if getattr(opts, k) is not None}
    return Ask(
        prompt=opts.prompt,
        seconds=None if opts.seconds is None else float(opts.seconds),
        frames=opts.frames,
        latent_frames=opts.latent_frames,
        size=opts.size,
        seed=opts.seed,
        steps=opts.steps,
        guidance_scale=opts.guidance_scale,
        cache_policy=opts.cache_policy,
        policy_params=knobs,
        open_ended=open_ended,
        text_slots=text_slots,
        text_only=text_only,
    )


def to_video_params(
    opts: GenerationOptions,
    settings: Settings,
    open_ended: bool = False,
    text_slots: int = 0,
    text_only: bool = False,
) -> VideoParams:
    """Checked `VideoParams` for a request (raises `InvalidRequest`)."""
    if opts.model is not None and opts.model != settings.model_name:
        raise InvalidRequest(
            f"unknown model {opts.model!r}; this server serves {settings.model_name!r}",
            param="model",
            code="model_not_found",
        )
    try:
        ask = ask_of(opts, open_ended, text_slots, text_only)
        return resolve(ask, settings.generation_defaults, settings.limits)
    except RequestError as e:
        raise InvalidRequest(str(e), param=e.param) from e


def open_upload(data: bytes, settings: Settings, param: str) -> Opened:
    """An uploaded image's header, within the byte, pixel and decode-memory limits; nothing
    decoded yet (raises `InvalidRequest`)."""
    try:
        opened = open_image(data, settings.max_image_pixels, settings.max_upload_bytes)
    except ImageError as e:
        raise InvalidRequest(f"{param}: {e}", param=param) from e
    limit = settings.max_image_decode_bytes
    if opened.decode_bytes > limit:
        raise InvalidRequest(
            f"{param}: decoding this {opened.width}x{opened.height} {opened.mode} "
            f"{opened.format} image takes {opened.decode_bytes >> 20} MiB, more than the limit "
            f"of {limit >> 20} MiB (max_image_decode_bytes); send a smaller image or an 8-bit "
            "RGB one (a JPEG or PNG): the video is at most "
            f"{settings.max_video_pixels} pixels a frame",
            param=param,
            code="image_too_large",
        )
    return opened


def decode_upload(opened: Opened, param: str) -> Image.Image:
    """The RGB pixels of an image `open_upload` accepted (raises `InvalidRequest`)."""
    try:
        return decode_rgb(opened)
    except ImageError as e:
        raise InvalidRequest(f"{param}: {e}", param=param) from e


def video_refusal(e: VideoInputError, param: str) -> InvalidRequest:
    """The 400 of an input video refused: the field, what is wrong, and the setting exceeded."""
    setting = None if e.limit is None else VIDEO_LIMIT_SETTINGS[e.limit]
    if setting is None:
        return InvalidRequest(f"{param}: {e}", param=param, code="invalid_video")
    return InvalidRequest(f"{param}: {e} ({setting})", param=param, code="video_too_large")


def probe_video_upload(data: bytes, settings: Settings, param: str) -> Probe:
    """An uploaded video's header, within the byte, pixel, frame and duration limits."""
    try:
        return probe_video(data, settings.video_limits)
    except VideoInputError as e:
        raise video_refusal(e, param) from e


def video_decode_bytes(
    probe: Probe, size: tuple[int, int], most: int, settings: Settings, param: str
) -> int:
    """Memory decoding an uploaded video into a clip of `size` and at most `most` frames
    takes, within the per-input limit (raises `InvalidRequest` naming it)."""
    charge = decode_bytes(probe, *size, settings.fps, most)
    limit = settings.max_image_decode_bytes
    if charge > limit:
        raise InvalidRequest(
            f"{param}: decoding this {probe.width}x{probe.height} video into "
            f"{size[0]}x{size[1]} frames at {settings.fps} fps takes {charge >> 20} MiB, more "
            f"than the limit of {limit >> 20} MiB (max_image_decode_bytes); send a shorter or "
            "smaller video",
            param=param,
            code="video_too_large",
        )
    return charge


def decode_video_upload(
    data: bytes, settings: Settings, param: str, size: tuple[int, int], most: int
) -> Clip:
    """The frames of an uploaded video at the server's rate and `size` (raises
    `InvalidRequest`)."""
    try:
        return Clip(decode_clip(data, settings.video_limits, settings.fps, size, most))
    except VideoInputError as e:
        raise video_refusal(e, param) from e
