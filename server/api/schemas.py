"""Wire formats: the REST request/response models and the websocket messages, as pydantic models.

What it is: `GenerationOptions` (the fields shared by `POST /v1/videos` and the websocket
request, with static bounds), the OpenAI-shaped video objects, the error envelope, every
websocket message both ways, and the Images API's generation request and response. What it
is not: the limits that depend on settings (prompt length, frames, steps, pixels):
`params.py` checks those when it maps a request to `VideoParams`.

Invariant: extra fields are refused, so a misspelt option is a 400, never silently ignored.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator
from pydantic.json_schema import SkipJsonSchema

from packcache_core.policy import POLICIES, known_policy, policy_knobs
from server.engine.events import RequestStats

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]
VIDEO_ID_PATTERN = r"^video_[0-9a-f]{32}$"
VideoId = Annotated[str, Field(pattern=VIDEO_ID_PATTERN, examples=["video_" + "0" * 32])]

# Form fields arrive as text, and Python's `int()`/`float()` (which pydantic follows) also read
# `1_0` as 10, ` 5` as 5 and `+5` as 5. A number in a request is plain decimal digits: an
# optional minus, digits, and for floats a fraction and exponent. JSON numbers pass as they are,
# except a bool (or, for an integer, a float) where a number is expected.
_INT_TEXT = re.compile(r"-?[0-9]+")
_FLOAT_TEXT = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


def _plain_int(value: Any) -> Any:
    if isinstance(value, str) and not _INT_TEXT.fullmatch(value):
        raise ValueError("not an integer: decimal digits only, e.g. 10")
    if isinstance(value, bool | float):
        raise ValueError("not an integer")
    return value


def _plain_float(value: Any) -> Any:
    if isinstance(value, str) and not _FLOAT_TEXT.fullmatch(value):
        raise ValueError("not a number: decimal digits only, e.g. 0.5 or 1e-3")
    if isinstance(value, bool):
        raise ValueError("not a number")
    return value


Int = Annotated[int, BeforeValidator(_plain_int)]
"""An integer request field or parameter (every one is declared with this type)."""
Float = Annotated[float, BeforeValidator(_plain_float)]
"""A real-number request field (every one is declared with this type)."""


class _Options(BaseModel):
    """What to generate. `seconds`, `latent_frames` and `frames` are alternatives (one at most).
    The cache policy's parameters are added from the policy registry (`GenerationOptions`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=100_000, description="what should happen")
    model: str | None = Field(None, max_length=256, description="the served model name")
    seconds: str | None = Field(
        None, pattern=r"^[0-9]{1,4}(\.[0-9]{1,3})?$", description='duration, e.g. "2"'
    )
    size: str | None = Field(
        None,
        pattern=r"^[0-9]{1,5}x[0-9]{1,5}$",
        description='"WxH", multiples of 32; default: the model card\'s, else the Lumos-1 '
        "bucket of the image (without an image: the official text-to-video size)",
    )
    latent_frames: Int | None = Field(None, ge=2, le=1000, description="conditioning included")
    frames: Int | None = Field(None, ge=2, le=4000, description="RGB frames (rounded up to 1+4k)")
    seed: Int | None = Field(None, ge=0, le=2**63 - 1, description="default: random")
    steps: Int | None = Field(None, ge=1, le=1000, description="denoising steps per frame")
    guidance_scale: Float | None = Field(None, ge=0, le=100)
    cache_policy: str | None = Field(
        None, max_length=64, description=f"KV cache policy: {', '.join(POLICIES)}"
    )

    @field_validator("cache_policy")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        return None if value is None else known_policy(value)


_NUMBERS: dict[type, Any] = {int: Int, float: Float}


def _knob_fields() -> dict[str, Any]:
    """One optional request field per policy parameter, typed and bounded as the policy
    declares it (`packcache_core.policy.Knob`)."""
    fields: dict[str, Any] = {}
    for name, (kind, k) in policy_knobs().items():
        ann: Any = Literal[k.choices] if k.choices else _NUMBERS.get(kind, kind)
        bounds = {b: getattr(k, b) for b in ("ge", "gt", "le") if getattr(k, b) is not None}
        fields[name] = (ann | None, Field(None, description=k.doc, **bounds))
    return fields


if TYPE_CHECKING:  # the knob fields are read with getattr; type checkers see the base
    GenerationOptions = _Options
else:
    GenerationOptions = create_model(
        "GenerationOptions", __base__=_Options, __module__=__name__, **_knob_fields()
    )


class CreateVideoForm(GenerationOptions):
    """`POST /v1/videos` as multipart/form-data."""

    input_reference: UploadFile | None = Field(
        None,
        description="the conditioning image (PNG, JPEG, WebP), or a video (MP4, WebM, AVI) to "
        "continue: then `seconds` is the length of the new part and the result the whole "
        "video; leave it out for text-to-video (frame 0 is generated from the prompt)",
    )


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    """OpenAI's video object, plus what Lumos-1 adds (frames, fps, seed, steps, policy)."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: VideoStatus
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    size: str
    seconds: str
    prompt: str
    remixed_from_video_id: str | None = None
    error: VideoError | None = None
    frames: int
    latent_frames: int
    fps: int
    seed: int
    steps: int
    cache_policy: str
    stats: RequestStats | None = None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class RemixRequest(BaseModel):
    """`POST /v1/videos/{id}/remix`: the same image and settings, another prompt."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=100_000, description="what should happen now")


class VideoReference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=VIDEO_ID_PATTERN, description="a completed video of this server")


class ExtendRequest(BaseModel):
    """`POST /v1/videos/extensions` (JSON, or multipart with a `video[id]` field or a `video`
    file): continue a completed video of this server, or an uploaded one; the result is the
    whole video, the source's frames and then the new. `video` is None when a file came."""

    model_config = ConfigDict(extra="forbid")
    video: VideoReference | None
    prompt: str = Field(min_length=1, max_length=100_000, description="what happens next")
    seconds: str | None = Field(
        None, pattern=r"^[0-9]{1,4}(\.[0-9]{1,3})?$", description="length of the new part"
    )
    latent_frames: Int | None = Field(
        None, ge=1, le=1000, description="length of the new part in latent frames (exact)"
    )


class ModelObject(BaseModel):
    """The served model, as OpenAI's `GET /v1/models` lists models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "packcache"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(BaseModel):
    """OpenAI's error envelope; every 4xx and 5xx has this body."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    reason: str | None = None


# -- websocket /v1/videos/stream ---------------------------------------------------------------


class StreamRequest(GenerationOptions):
    """First client message: what to generate, the image inline (none: text-to-video)."""

    type: Literal["generate"] = "generate"
    image: str | None = Field(
        None,
        min_length=1,
        description="the conditioning image, or a video to continue (MP4, WebM, AVI: then the "
        "length fields give the new part), base64; leave it out for text-to-video",
    )
    extend: str | None = Field(
        None,
        pattern=VIDEO_ID_PATTERN,
        description="a completed video of this server to continue (as POST "
        "/v1/videos/extensions does, streamed): `prompt` and `seconds` or `latent_frames` give "
        "the new part; nothing else may be set",
    )
    frame_format: Literal["jpeg", "png"] = Field("jpeg", description="encoding of frame messages")
    cancel_on_disconnect: bool = Field(
        False,
        strict=True,
        description="cancel the job when the socket closes or the client stops answering "
        "keep-alive pings; by default the job runs to completion and its video is stored",
    )
    open_ended: bool = Field(
        False,
        strict=True,
        description="no preset end: generate until a `stop` message, the socket closing or "
        "the server's `max_stream_s`, then complete with what was made; the length fields "
        "then only say how long the prompt states the clip is. Needs a cache policy that "
        "stays bounded (packcache, sliding or sink, with rebase)",
    )
    realtime: bool = Field(
        False,
        strict=True,
        description="pace generation to playback: the server keeps at most `pace_lead_s` "
        "seconds of video (a setting, default 2) ahead of a player that starts with the first "
        "generated frame, instead of generating as fast as it can; `completed` then reports "
        "`stall_s` and `max_lead_s`",
    )
    frame_window: int | None = Field(
        None,
        ge=1,
        le=64,
        description="flow control (opt-in): at most this many frame messages in flight that "
        "the client has not acknowledged with an `ack` message; frames that find no room wait "
        "(the oldest dropped past `ws_max_pending_frames`) while other messages overtake "
        "them, so a slow reader gets the newest frames and merged progress. Default: none "
        "(frames are sent as fast as the socket takes them)",
    )


class AckMessage(BaseModel):
    """Flow control (`frame_window`): the client has shown every frame up to `index`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["ack"]
    index: int = Field(ge=0, description="the last RGB frame index the client has taken")


class CancelMessage(BaseModel):
    """Stop the request and free its cache (the video is not kept)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["cancel"]


class StopMessage(BaseModel):
    """End an open-ended video: it completes with the frames made so far."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["stop"]


class PromptMessage(BaseModel):
    """Follow a new prompt from the next latent frame on (answered by `prompt_changed`, or
    `rejected` when the video cannot take it)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["prompt"]
    prompt: str = Field(min_length=1, max_length=100_000)


ControlMessage = Annotated[
    CancelMessage | StopMessage | PromptMessage | AckMessage, Field(discriminator="type")
]


class QueuedMessage(BaseModel):
    type: Literal["queued"] = "queued"
    id: str
    position: int = Field(description="requests ahead + 1; 0 = starting now")


class StartedMessage(BaseModel):
    # built from the engine's `Started` event field for field: a field added there and not
    # here is an error, never silently left out of the message
    model_config = ConfigDict(extra="forbid")

    type: Literal["started"] = "started"
    id: str
    width: int
    height: int
    fps: int
    latent_frames: int | None = Field(description="null for an open-ended video")
    frames: int | None
    cache_policy: str
    cache_bytes: int


class FrameMessage(BaseModel):
    """Header of one RGB frame; the next message is binary: the encoded image, `bytes` long."""

    type: Literal["frame"] = "frame"
    id: str
    index: int = Field(description="RGB frame index, 0 = the conditioning frame")
    latent_index: int
    format: Literal["jpeg", "png"]
    bytes: int


class LatentFrameMessage(BaseModel):
    """After the RGB frames of each generated latent frame: its latency and the cache in use.

    Never dropped (one per latent frame), so a live chart gets every point even when a slow
    client loses frames.
    """

    model_config = ConfigDict(extra="forbid")  # built from `_LatentStats` field for field

    type: Literal["latent_frame"] = "latent_frame"
    id: str
    latent_index: int = Field(description="1 = the first generated latent frame")
    latency_s: float = Field(description="seconds since the previous latent frame (or the start)")
    cache_bytes_used: int = Field(
        description="KV cache bytes holding tokens after the frame's write-back; the fixed "
        "size is `cache_bytes` in `started`"
    )


class ProgressMessage(BaseModel):
    type: Literal["progress"] = "progress"
    id: str
    progress: int = Field(ge=0, le=100)
    steps_done: int
    total_steps: int | None = Field(description="null for an open-ended video")
    frames_sent: int
    dropped: int = Field(description="frames dropped so far because the client read slowly")


class CompletedMessage(BaseModel):
    type: Literal["completed"] = "completed"
    id: str
    stats: RequestStats
    frames_sent: int
    dropped: int
    url: str = Field(description="where the MP4 can be downloaded")


class PromptChangedMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")  # built from the engine's `PromptChanged`

    type: Literal["prompt_changed"] = "prompt_changed"
    id: str
    prompt: str
    latent_index: int = Field(description="the first generated latent frame that follows it")


class RejectedMessage(BaseModel):
    """A message after the request that the video could not take (a stop of a fixed-length
    video, a prompt too long for its text slots, a video already over, a message too big,
    malformed or of an unknown type); the video goes on."""

    type: Literal["rejected"] = "rejected"
    id: str
    request: Literal["stop", "prompt", "cancel", "ack"] | None = Field(
        description="the type the message named; null when it named none the server knows"
    )
    error: ErrorDetail


class ErrorMessage(BaseModel):
    """Sent once, before the server closes the socket with a code from `errors.py`."""

    type: Literal["error"] = "error"
    id: str | None = None
    error: ErrorDetail


ServerMessage = Annotated[
    QueuedMessage
    | StartedMessage
    | FrameMessage
    | LatentFrameMessage
    | ProgressMessage
    | PromptChangedMessage
    | RejectedMessage
    | CompletedMessage
    | ErrorMessage,
    Field(discriminator="type"),
]
ClientMessage = Annotated[
    StreamRequest | CancelMessage | StopMessage | PromptMessage | AckMessage,
    Field(discriminator="type"),
]


# -- POST /v1/images/generations ----------------------------------------------------------------

ImageFormat = Literal["png", "jpeg", "webp"]


def _image_input(value: Any) -> Any:
    raise ValueError(
        "an image input belongs to image editing; /v1/images/generations makes images from "
        "the prompt alone (leave this field out)"
    )


ImageInput = Annotated[Any, BeforeValidator(_image_input), SkipJsonSchema()]


class ImageGenerationRequest(BaseModel):
    """OpenAI's Images API `generate`: text-to-image, one latent frame each, through the same
    engine, admission, metrics and tenants as videos."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=100_000, description="what the image shows")
    model: str | None = Field(None, max_length=256, description="the served model name")
    n: Int = Field(1, ge=1, le=10, description="images to make (at most the server's max_images)")
    size: str | None = Field(
        None,
        pattern=r"^([0-9]{1,5}x[0-9]{1,5}|auto)$",
        description='"WxH", one of the model\'s sizes (a 400 names them), or "auto": the '
        "model card's size, else the official text-to-video size",
    )
    response_format: Literal["b64_json", "url"] = Field(
        "b64_json",
        description="b64_json: the image in the response; url: a link to GET "
        "/v1/images/{id}/content (the same API key; kept retention_s)",
    )
    output_format: ImageFormat = Field("png", description="encoding of the image")
    output_compression: Int | None = Field(
        None, ge=0, le=100, description="jpeg/webp quality, 0-100 (default 90)"
    )
    user: str | None = Field(None, max_length=256, description="accepted and ignored")
    # Image-editing inputs: named, so a request carrying one is refused with a clear message.
    image: ImageInput = None
    mask: ImageInput = None
    input_reference: ImageInput = None


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: ImageFormat
    size: str
