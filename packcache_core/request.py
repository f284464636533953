"""One request resolver: what a user asked (REST, websocket, CLI) -> checked `VideoParams`.

What it is: `Ask` (every option a user may give; all but the prompt may be left out),
`Limits` (what a deployment allows), and `resolve`, which fills what was left out from the
model's defaults (a built-in model's card, possibly overridden by the deployment), turns seconds
or RGB frames into latent frames, checks the size, the steps and the policy, and raises
`RequestError` naming the parameter at fault. The server and `packcache generate` both call it,
so a rule (the frames formula, the size multiple, a default) has one home. What it is not:
parsing text (pydantic and argparse do that) or tokenising (`Pipeline.prepare`).

Invariant: every `VideoParams` that `resolve` returns is within its `Limits`.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass, field

from packcache_core.generate import GenerationDefaults
from packcache_core.image import MAX_RATIO, PATCH
from packcache_core.layout import T_STRIDE, latent_frames_for, rgb_frames
from packcache_core.pipeline import VideoParams
from packcache_core.policy import CachePolicy, frames_held, make_policy, open_ended_refusal
from packcache_core.record import in_force


class RequestError(ValueError):
    """A request the limits or rules refuse; `param` is the option at fault."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Ask:
    """What a user asked for; None (or empty) = the default."""

    prompt: str
    seconds: float | None = None  # duration (OpenAI's `seconds`)
    frames: int | None = None  # RGB frames, rounded up to 1 + 4k
    latent_frames: int | None = None  # conditioning frame included
    size: str | None = None  # "WxH"
    seed: int | None = None  # None: a random seed
    steps: int | None = None
    guidance_scale: float | None = None
    cache_policy: str | None = None
    policy_params: dict[str, object] = field(default_factory=dict)
    open_ended: bool = False  # no preset end: the length is only the one the prompt states
    text_slots: int = 0  # text tokens the cache holds for a prompt that may change
    text_only: bool = False  # no conditioning image: text-to-video


@dataclass(frozen=True)
class Limits:
    """What a deployment allows (the server's settings; the CLI's own bounds)."""

    fps: int = 12
    # Latent frames of one video (an extension chain included), by what grows with length:
    max_latent_frames: int = 1001  # a cache that grows with the video (`full`): memory
    max_bounded_latent_frames: int = 1001  # a bounded cache (every other policy): time only
    max_steps: int = 1000
    max_video_pixels: int = 1 << 40
    max_prompt_chars: int = 100_000

    def longest(self, policy: CachePolicy) -> int:
        """Most latent frames a video under `policy` may have."""
        grows = frames_held(policy) is None
        return self.max_latent_frames if grows else self.max_bounded_latent_frames

    def too_long(self, latent: int, policy: CachePolicy) -> str:
        """What a refusal of a `latent`-frame video under `policy` says about the limits."""
        most = self.longest(policy)
        text = (
            f"the video would have {latent} latent frames ({rgb_frames(latent)} frames); this "
            f"server allows 2 to {most} ({rgb_frames(most)} frames at {self.fps} fps) with "
            f"cache policy {policy.name!r}"
        )
        if frames_held(policy) is None and self.max_bounded_latent_frames > most:
            text += (
                f", whose cache grows with the video; a bounded policy (any other) allows "
                f"up to {self.max_bounded_latent_frames}"
            )
        return text


def _latent_frames(
    ask: Ask, defaults: GenerationDefaults, limits: Limits, policy: CachePolicy
) -> int:
    given = [n for n in ("seconds", "frames", "latent_frames") if getattr(ask, n) is not None]
    if len(given) > 1:
        raise RequestError(f"give at most one of seconds, frames, latent_frames; got {given}", None)
    if ask.seconds is not None:
        if ask.seconds <= 0:
            raise RequestError("seconds must be positive", "seconds")
        latent = latent_frames_for(limits.fps * ask.seconds)
    elif ask.frames is not None:
        latent = latent_frames_for(ask.frames)
    else:
        latent = ask.latent_frames or min(defaults.latent_frames, limits.longest(policy))
    if not 2 <= latent <= limits.longest(policy):
        raise RequestError(limits.too_long(latent, policy), given[0] if given else "latent_frames")
    return latent


def parse_size(size: str | None, limits: Limits) -> tuple[int, int] | None:
    """ "WxH" -> (W, H): multiples of 32 within the pixel and aspect limits; None = default."""
    if size is None:
        return None
    w, sep, h = size.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise RequestError(f"size {size!r}: expected WxH, e.g. 128x64", "size")
    width, height = int(w), int(h)
    if width < PATCH or height < PATCH or width % PATCH or height % PATCH:
        raise RequestError(f"size {size}: both sides must be multiples of {PATCH}", "size")
    if width * height > limits.max_video_pixels:
        raise RequestError(
            f"size {size} has {width * height} pixels; this server allows at most "
            f"{limits.max_video_pixels}",
            "size",
        )
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise RequestError(f"size {size}: aspect ratio above {MAX_RATIO:g}", "size")
    return width, height


def check_prompt(prompt: str, limits: Limits) -> str:
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(
            f"prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}",
            "prompt",
        )
    return prompt


def resolve(ask: Ask, defaults: GenerationDefaults, limits: Limits) -> VideoParams:
    """Checked `VideoParams` for `ask` (raises `RequestError`)."""
    check_prompt(ask.prompt, limits)
    steps = ask.steps if ask.steps is not None else min(defaults.sampling.steps, limits.max_steps)
    if steps > limits.max_steps:
        raise RequestError(
            f"steps {steps} is above this server's limit of {limits.max_steps}", "steps"
        )
    if steps < 1:
        raise RequestError(f"steps {steps}: must be at least 1", "steps")
    guidance = defaults.sampling.cfg_scale if ask.guidance_scale is None else ask.guidance_scale
    if guidance < 0:
        raise RequestError(f"guidance_scale {guidance}: must be >= 0", "guidance_scale")
    name, params = ask.cache_policy, dict(ask.policy_params)
    if name is None:  # the default policy, with the default's parameters under the asked ones
        name, params = defaults.cache_policy, {**defaults.policy_params, **params}
    try:
        policy = make_policy(name, **params)
    except ValueError as e:
        raise RequestError(str(e), getattr(e, "param", "cache_policy")) from e
    if ask.open_ended and (why := open_ended_refusal(policy)) is not None:
        raise RequestError(why, "cache_policy")
    return VideoParams(
        prompt=ask.prompt,
        latent_frames=_latent_frames(ask, defaults, limits, policy),
        fps=limits.fps,
        size=parse_size(ask.size, limits),
        seed=secrets.randbelow(2**31) if ask.seed is None else ask.seed,
        policy=policy,
        # the card's sampling (history mask, temperature, ...) with the asked steps and guidance
        sampling=dataclasses.replace(defaults.sampling, steps=steps, cfg_scale=guidance),
        open_ended=ask.open_ended,
        text_slots=ask.text_slots,
        text_only=ask.text_only,
    )


# The official text-to-image prompt states "1 frames at 1 frames per second" (1 s at 1 fps).
IMAGE_FPS = IMAGE_SECONDS = 1


def image_size(
    size: str | None, sizes: list[tuple[int, int]], default: tuple[int, int]
) -> tuple[int, int]:
    """The (width, height) of a text-to-image request: `default` for None or "auto", else one
    of the model's `sizes` exactly (RequestError naming them otherwise)."""
    if size is None or size == "auto":
        return default
    w, sep, h = size.lower().partition("x")
    if sep and w.isdigit() and h.isdigit() and (int(w), int(h)) in sizes:
        return int(w), int(h)
    names = ", ".join(f"{a}x{b}" for a, b in sizes)
    raise RequestError(f"size {size!r}: this model makes {names} (or auto)", "size")


def resolve_image(
    prompt: str, size: tuple[int, int], defaults: GenerationDefaults, limits: Limits
) -> VideoParams:
    """Checked `VideoParams` of one text-to-image generation: text-to-video of one latent
    frame, stated as the official `inference_t2i.py` states it (1 s at 1 fps), with the
    model's sampling defaults and a random seed; no frame is written back, so the cache
    policy is `full` (it holds the text and the one frame)."""
    check_prompt(prompt, limits)
    if not prompt.strip():
        raise RequestError("prompt is empty", "prompt")
    steps = min(defaults.sampling.steps, limits.max_steps)
    return VideoParams(
        prompt=prompt,
        latent_frames=1,
        fps=IMAGE_FPS,
        size=size,
        seed=secrets.randbelow(2**31),
        policy=make_policy("full"),
        sampling=dataclasses.replace(defaults.sampling, steps=steps),
        stated_seconds=IMAGE_SECONDS,
        text_only=True,
    )


def added_latent_frames(seconds: float | None, latent_frames: int | None, limits: Limits) -> int:
    """Latent frames an extension adds: `latent_frames`, or those covering `seconds` of video
    at the server's rate (each latent frame is T_STRIDE more RGB frames); one of them."""
    if (seconds is None) == (latent_frames is None):
        raise RequestError("give one of seconds, latent_frames", "seconds")
    if latent_frames is not None:
        return latent_frames
    assert seconds is not None
    if seconds <= 0:
        raise RequestError("seconds must be positive", "seconds")
    return math.ceil(limits.fps * seconds / T_STRIDE)


def extension(
    source: VideoParams,
    made: int,
    prompt: str,
    more: int,
    limits: Limits,
    length_param: str = "seconds",
) -> VideoParams:
    """The request of a video that continues `source`, which made `made` generated latent
    frames, by `more`, following `prompt` from the first new frame. It keeps the source's
    settings, seed and stated duration, so the source's recorded frames replay exactly and
    the new ones are those one uninterrupted request of the whole length would draw.
    `length_param`: the field `more` came from, named by an error."""
    check_prompt(prompt, limits)
    total = source.first_index + made + more
    if more < 1:
        raise RequestError("an extension adds at least one latent frame", length_param)
    if total > limits.longest(source.policy):
        why = limits.too_long(total, source.policy).replace("the video", "the extended video")
        raise RequestError(why, length_param)
    changes = tuple((i, text) for i, text in in_force(source.prompt_changes) if i <= made)
    if prompt != dataclasses.replace(source, prompt_changes=changes).prompt_at(made):
        changes = (*changes, (made + 1, prompt))
    return dataclasses.replace(
        source,
        latent_frames=total,
        open_ended=False,
        stated_seconds=source.seconds,
        prompt_changes=changes,
    )


def remixed(source: VideoParams, prompt: str, made: int, limits: Limits) -> VideoParams:
    """The request of a remix of `source`, which made `made` generated latent frames: its
    image and settings (seed included) with `prompt` throughout, as long as the source
    video (an open-ended source's remix is a fixed-length video of the length it reached;
    refused, naming the limit, when that is longer than this server allows)."""
    check_prompt(prompt, limits)
    if not source.open_ended:
        return dataclasses.replace(source, prompt=prompt, prompt_changes=())
    latent = max(2, source.first_index + made)
    if latent > limits.longest(source.policy):
        why = limits.too_long(latent, source.policy).replace("the video", "the remix")
        raise RequestError(f"{why}: the open-ended source ran that long", "video_id")
    return dataclasses.replace(
        source,
        prompt=prompt,
        prompt_changes=(),
        open_ended=False,
        latent_frames=latent,
        stated_seconds=source.seconds,  # the duration its prompt stated
    )


def continuation(
    base: VideoParams, given: int, more: int, limits: Limits, length_param: str = "seconds"
) -> VideoParams:
    """The request of a video that continues an uploaded clip of 1 + `given` latent frames
    (its first the conditioning frame, the others cached as given frames) by `more`, with
    `base`'s prompt, settings and seed (an open-ended `base` runs on until stopped); the
    prompt states the whole video's duration.
    `length_param`: the field `more` came from, named by an error."""
    if more < 1:
        raise RequestError("a continuation adds at least one latent frame", length_param)
    total = 1 + given + more
    if total > limits.longest(base.policy):
        why = limits.too_long(total, base.policy).replace("the video", "the continued video")
        raise RequestError(f"{why}; send a shorter video or ask for less", length_param)
    return dataclasses.replace(base, latent_frames=total, given_frames=given, prompt_changes=())
