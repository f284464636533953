"""Server settings: one pydantic-settings model, read from `PACKCACHE_*` variables and CLI flags.

What it is: every knob of `packcache serve` with its default, limits and help text (the CLI
builds its flags from these fields, so `--help` and this file never disagree). What it is not:
request validation (see `schemas.py`) or the engine's own config (`engine.EngineConfig`, derived
here once the device is known).

Invariant: settings are built in the app factory or the CLI, never at import time; defaults run
the built-in model on a CPU with short clips that finish in seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from packcache_core.builtin import model_defaults
from packcache_core.config import TARGET_SIZES
from packcache_core.generate import GenerationDefaults
from packcache_core.policy import DEFAULT_POLICY, describe, known_policy, make_policy
from packcache_core.request import Limits
from packcache_core.video.input import VideoLimits
from server.engine.pace import DEFAULT_LEAD_S

GiB = 1 << 30
MiB = 1 << 20


def _split_list(value: Any) -> Any:
    """A JSON list or a comma-separated string (never silently truncated) -> list of strings."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


# Each field of an input video's limits, and the setting that sets it (named by a refusal).
VIDEO_LIMIT_SETTINGS = {
    "max_bytes": "max_upload_bytes",
    "max_pixels": "max_input_video_pixels",
    "max_frames": "max_input_video_frames",
    "max_seconds": "max_input_video_seconds",
}


class Settings(BaseSettings):
    """Settings of `packcache serve`; environment `PACKCACHE_<NAME>` or flag `--<name>`."""

    # Errors name the setting and the reason, never its value: it may be an API key.
    model_config = SettingsConfigDict(
        env_prefix="PACKCACHE_", extra="forbid", hide_input_in_errors=True
    )

    model: str = Field("builtin:demo", description="checkpoint folder or builtin:<name>")
    tokenizer: str | None = Field(
        None,
        description="Cosmos DV4x8x8 folder or builtin:<name> (default: a built-in model's own; "
        "required with a checkpoint folder)",
    )
    text_tokenizer: str | None = Field(
        None, description="tokenizer.json (default: builtin:bytes for built-in models)"
    )
    served_model_name: str | None = Field(
        None, description="model name in the API (default: model)"
    )
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights and activations (auto: bfloat16 on CUDA, float32 on CPU)"
    )
    allow_float16: bool = Field(
        False,
        description="run float16 even for a checkpoint saved in bfloat16 (refused otherwise: "
        "its activations can overflow float16's range)",
    )
    target_size: int | None = Field(
        None,
        description="Lumos-1 resolution bucket of a checkpoint folder, one of "
        f"{', '.join(map(str, TARGET_SIZES))}: 352 for the 256p checkpoints (stage-2-joint), "
        "528 for 384p (default: 528; built-in models use their own)",
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0: any free port)")
    data_dir: Path = Field(Path("packcache-data"), description="videos and the job database")
    retention_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="seconds a finished video (completed or failed) is kept after it finished; "
        "then its record and files are deleted and it answers 404 (0: kept forever)",
    )
    retention_sweep_s: float = Field(
        60.0, gt=0, description="how often expired videos are looked for and deleted"
    )
    store_url: str | None = Field(
        None, description="job store URL (default: sqlite:///<data_dir>/jobs.sqlite3)"
    )
    memory_budget_bytes: int | None = Field(
        None,
        gt=0,
        description="memory for requests' KV caches and activations (default: on CUDA free "
        "memory after warm-up minus the headroom; on CPU 4 GiB)",
    )
    memory_headroom_bytes: int = Field(
        2 * GiB, ge=0, description="CUDA memory left free for the decoder and fragmentation"
    )
    max_running: int = Field(8, ge=1, le=1024, description="most requests generating at once")
    max_queued: int = Field(16, ge=1, le=100_000, description="most requests waiting to start")
    max_images: int = Field(
        4, ge=1, le=10, description="most images one POST /v1/images/generations makes (its n)"
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op CPU threads for generating (default 1: on a CPU shared with "
        "other work, more threads wait on each other; see packcache_core/host.py)",
    )
    max_batch: int = Field(
        8,
        ge=1,
        le=1024,
        description="step-level batching: most running requests whose denoising steps share "
        "one forward (same frame size); 1 turns batching off (one step at a time, round robin)",
    )
    request_timeout_s: float = Field(
        900.0,
        gt=0,
        description="a request that has not finished this long after arrival fails (an "
        "open-ended stream has `max_stream_s` instead)",
    )
    max_stream_s: float = Field(
        3600.0,
        gt=0,
        description="an open-ended stream ends, completed with what it made, this long after "
        "arrival; it takes the place of request_timeout_s for such streams",
    )
    stream_prompt_tokens: int = Field(
        256,
        ge=0,
        le=100_000,
        description="text tokens (BOS + prompt + SEP) a websocket stream's cache holds, so "
        "that a longer prompt can replace its first one mid-stream; 0: only the first's own",
    )
    pace_lead_s: float = Field(
        DEFAULT_LEAD_S,
        gt=0,
        le=3600,
        description="a websocket stream that asks for `realtime` is generated at most this many "
        "seconds of video ahead of its playback; its turns meanwhile go to other requests",
    )
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="/ready turns false when a busy engine finishes no tick (one step of up to "
        "max_batch running requests) this long",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="on SIGTERM, how long accepted requests may still finish (new ones get 503 "
        "and /ready turns false at once); the rest then fail with code 'shutdown'",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="accepted Bearer keys, comma-separated (none: open); each key sees only "
        "the jobs it made",
    )
    admin_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Bearer keys that also see, download and delete every key's jobs, "
        "comma-separated",
    )
    metrics_public: bool = Field(True, description="serve /metrics without an API key")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS, comma-separated"
    )
    max_upload_bytes: int = Field(20 << 20, gt=0, description="largest request body or image")
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="largest input image, width * height"
    )
    max_image_decode_bytes: int = Field(
        256 * MiB,
        gt=0,
        description="most memory decoding one input image or video may take, estimated from "
        "its header before any pixel is decoded: an image's pixels as decoded (4 bytes a pixel "
        "for RGB, 2 for 16-bit grey), the decoder's own buffers and the conversion to RGB; a "
        "video's decoder frames and its frames at the output size and rate; larger inputs get "
        "400 (the default passes an 8-bit RGB image at max_image_pixels)",
    )
    decode_budget_bytes: int = Field(
        256 * MiB,
        gt=0,
        description="memory all input images being decoded, or decoded and not yet taken by "
        "the engine, may take together (each counted by its estimate); at least "
        "max_image_decode_bytes",
    )
    max_input_video_pixels: int = Field(
        1920 * 1080, gt=0, description="largest frame of an input video, width * height"
    )
    max_input_video_frames: int = Field(
        2400, gt=0, description="most frames decoded from an input video"
    )
    max_input_video_seconds: float = Field(
        60.0, gt=0, description="longest input video, in seconds"
    )
    max_decoding: int = Field(4, ge=1, le=1024, description="most input images decoding at once")
    decode_wait_s: float = Field(
        10.0,
        gt=0,
        description="longest a request waits for room to decode its image; then 429 with "
        "Retry-After",
    )
    max_prompt_chars: int = Field(2000, ge=1, le=100_000, description="longest prompt")
    max_latent_frames: int = Field(
        21,
        ge=2,
        le=1000,
        description="longest video (latent frames; an extension chain in all) with a cache that "
        "grows with it (`full`), whose memory admission also bounds",
    )
    max_bounded_latent_frames: int = Field(
        121,
        ge=2,
        le=100_000,
        description="longest video (latent frames; an extension chain in all) with a bounded "
        "cache (every policy but `full`: its memory does not grow with length, only its time "
        "does); 121 = 40 s at 12 fps, so every `seconds` the OpenAI SDK offers (4 to 20) fits",
    )
    max_steps: int = Field(100, ge=1, le=1000, description="most denoising steps per frame")
    max_video_pixels: int = Field(
        1280 * 720, ge=32 * 32, description="largest output frame, width * height"
    )
    default_steps: int | None = Field(
        None,
        ge=1,
        description="steps when a request names none (default: the built-in model's card, 8 for "
        "other built-ins, 50 for real checkpoints)",
    )
    default_latent_frames: int | None = Field(
        None,
        ge=2,
        description="clip length when a request names none (default: the built-in model's card, "
        "3 = 9 frames for other built-ins, 7 = 25 frames for real checkpoints)",
    )
    fps: int = Field(12, ge=1, le=120, description="frame rate of every output video")
    default_guidance_scale: float | None = Field(
        None,
        ge=0,
        description="classifier-free guidance (default: the built-in model's card, else 15)",
    )
    default_policy: str | None = Field(
        None,
        max_length=64,
        description="cache policy when a request names none (default: the model card's, else "
        f"{describe(make_policy(DEFAULT_POLICY))}, the registry's defaults)",
    )
    default_policy_params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description='its parameters as JSON, e.g. {"window": 4}'
    )
    ws_max_pending_frames: int = Field(
        8, ge=1, le=1024, description="frames buffered per websocket before dropping the oldest"
    )
    ws_ping_interval_s: float = Field(
        20.0,
        gt=0,
        description="websocket keep-alive: seconds between pings; a client that does not answer "
        "within ws_ping_timeout_s loses its stream (its job still finishes, see server/README.md)",
    )
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="websocket keep-alive: seconds to wait for a ping's answer"
    )
    max_header_bytes: int = Field(
        64 << 10,
        ge=4096,
        le=16 << 20,
        description="largest request line plus headers; more gets 400 and the connection closes",
    )
    max_header_count: int = Field(
        100, ge=16, le=10_000, description="most request headers; more gets 431"
    )
    warmup: bool = Field(True, description="run a tiny generation before /ready turns true")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn and server log level"
    )

    @model_validator(mode="after")
    def _one_image_fits_the_budget(self) -> Settings:
        if self.max_image_decode_bytes > self.decode_budget_bytes:
            raise ValueError(
                "decode_budget_bytes must be at least max_image_decode_bytes, or an image "
                "within its limit could never be decoded"
            )
        return self

    @field_validator("api_keys", "admin_api_keys", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("tokenizer", "text_tokenizer", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("default_policy_params", mode="before")
    @classmethod
    def _json_dict(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("target_size")
    @classmethod
    def _bucket(cls, value: int | None) -> int | None:
        if value is not None and value not in TARGET_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, TARGET_SIZES))}")
        return value

    @field_validator("default_policy")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        return None if value is None else known_policy(value)

    @property
    def model_name(self) -> str:
        """The name clients send as `model` and see in video objects."""
        return self.served_model_name or self.model

    @property
    def generation_defaults(self) -> GenerationDefaults:
        """What a request that names nothing gets: the model's card (`model_defaults`), with
        each `default_*` setting that is set in its place (policy parameters on top of the
        card's when the policy is the card's)."""
        card = model_defaults(self.model)
        sampling = replace(
            card.sampling,
            steps=self.default_steps if self.default_steps is not None else card.sampling.steps,
            cfg_scale=card.sampling.cfg_scale
            if self.default_guidance_scale is None
            else self.default_guidance_scale,
        )
        policy, params = card.cache_policy, {**card.policy_params, **self.default_policy_params}
        if self.default_policy is not None and self.default_policy != card.cache_policy:
            policy, params = self.default_policy, dict(self.default_policy_params)
        latent = self.default_latent_frames or card.latent_frames
        return replace(
            card, sampling=sampling, latent_frames=latent, cache_policy=policy, policy_params=params
        )

    @property
    def video_limits(self) -> VideoLimits:
        """What one input video may be."""
        return VideoLimits(**{f: getattr(self, name) for f, name in VIDEO_LIMIT_SETTINGS.items()})

    @property
    def limits(self) -> Limits:
        return Limits(
            fps=self.fps,
            max_latent_frames=self.max_latent_frames,
            max_bounded_latent_frames=self.max_bounded_latent_frames,
            max_steps=self.max_steps,
            max_video_pixels=self.max_video_pixels,
            max_prompt_chars=self.max_prompt_chars,
        )

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
        dtype: torch.dtype = getattr(torch, self.dtype)
        return dtype

    def job_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'jobs.sqlite3'}"
