"""What the engine tells the rest of the server: plain event and statistics dataclasses.

What it is: the events one request goes through (`Queued`, `Started`, `Frame`, `Progress`,
`PromptChanged`, `Finished`), the per-request `RequestStats`, and the `JobListener` protocol
that consumers (the recorder, a websocket) implement. What it is not: transport; listeners
decide how an event leaves the engine thread (an executor, `call_soon_threadsafe`).

Invariant: a listener sees `Queued` and/or `Started` first, frames in order, and exactly one
`Finished` last, also when the request fails or is cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Protocol

import torch

from packcache_core.generate import SamplerState
from server.engine.pace import PaceSample

# "interrupted": the server stopped before the job finished; its record is left as it was, so
# the next start on the same data (or another replica) resumes it from its last frame.
FinalStatus = Literal["completed", "failed", "cancelled", "timeout", "interrupted"]


@dataclass(frozen=True)
class RequestStats:
    """Per-request statistics, sent with `completed` and stored with the job."""

    queue_wait_s: float
    time_to_first_frame_s: float | None  # arrival -> first generated latent frame decoded
    duration_s: float  # arrival -> finish
    generation_s: float  # start -> finish
    frames: int  # RGB frames produced, the conditioning frame included
    latent_frames: int
    steps: int  # denoising steps run
    mean_step_s: float
    realtime_factor: float | None  # generation seconds per second of video
    cache_policy: str
    cache_bytes: int  # the request's fixed KV cache
    activation_bytes: int  # estimate used for admission
    peak_memory_bytes: int  # largest device memory seen during its steps
    # Pacing (`pace.py`); the defaults are what a record stored before pacing existed reads as:
    realtime: bool = False  # paced to playback
    stall_s: float | None = None  # paced: seconds playback waited for frames (None: unpaced)
    max_lead_s: float | None = None  # paced: most video seconds emitted ahead of playback
    decoder_bytes: int = 0  # its stream decoder's state, admitted beside the cache (0: before)

    @classmethod
    def from_stored(cls, raw: dict[str, object]) -> RequestStats:
        """Stats read back from a record, which another replica may have written: keys this
        version does not know (a newer replica's) are left out, missing ones take the defaults
        above (an older replica's)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Queued:
    position: int  # 1 = next to start


@dataclass(frozen=True)
class Started:
    width: int
    height: int
    fps: int
    latent_frames: int | None  # None: an open-ended video
    frames: int | None
    cache_policy: str
    cache_bytes: int


@dataclass(frozen=True)
class Frame:
    index: int  # first RGB frame index in `rgb`
    latent_index: int  # 0 = the conditioning frame
    rgb: torch.Tensor  # (n, H, W, 3) uint8 on the CPU
    # Generated latent frames only (None for the conditioning frame):
    latency_s: float | None = None  # since the previous latent frame of the request (or start)
    cache_bytes_used: int | None = None  # KV bytes holding tokens after its write-back
    # What the video's record keeps of a frame just generated (None for the conditioning
    # frame and for frames replayed from the record when a job resumes):
    codes: torch.Tensor | None = None  # (h, w) int64 latent codes
    sampler: SamplerState | None = None  # the sampler's state right after the frame


def percent(steps_done: int, total_steps: int | None) -> int:
    """Progress in whole percent, 100 only when every step is done; 0 for a video without
    a preset end (`total_steps` None), which has no share done until it stops."""
    if total_steps is None:
        return 0
    return 100 * steps_done // max(1, total_steps)


@dataclass(frozen=True)
class Progress:
    steps_done: int
    total_steps: int | None  # None: an open-ended video

    @property
    def percent(self) -> int:
        return percent(self.steps_done, self.total_steps)


@dataclass(frozen=True)
class PromptChanged:
    """The video follows `prompt` from generated latent frame `latent_index` on."""

    prompt: str
    latent_index: int


@dataclass(frozen=True)
class Finished:
    status: FinalStatus
    code: str | None = None  # error code when not completed
    message: str | None = None
    stats: RequestStats | None = None


Event = Queued | Started | Frame | Progress | PromptChanged | Finished


class JobListener(Protocol):
    """Receives one request's events on the engine thread; must return quickly."""

    def __call__(self, event: Event) -> None: ...


@dataclass(frozen=True)
class FrameStats:
    """One generated latent frame, for metrics."""

    policy: str
    latency_s: float  # since the previous latent frame of the request (or its start)
    peak_memory_bytes: int  # largest memory seen during the frame's steps
    rgb_frames: int
    time_to_first_frame_s: float | None  # set on the request's first generated frame
    pace: PaceSample | None = None  # a paced request's lead and stall at this frame


class EngineObserver(Protocol):
    """Consumes the engine's plain statistics (the Prometheus side implements it)."""

    def on_reject(self, reason: str) -> None: ...

    def on_start(self, queue_wait_s: float) -> None: ...

    def on_step(self, policy: str, seconds: float) -> None: ...

    def on_batch(self, requests: int) -> None:
        """A denoising forward ran for `requests` requests (1: a step alone)."""
        ...

    def on_frame(self, frame: FrameStats) -> None: ...

    def on_finish(self, status: FinalStatus, stats: RequestStats) -> None: ...


class NullObserver:
    """Observes nothing (warm-up, unit tests)."""

    def on_reject(self, reason: str) -> None:
        pass

    def on_start(self, queue_wait_s: float) -> None:
        pass

    def on_step(self, policy: str, seconds: float) -> None:
        pass

    def on_batch(self, requests: int) -> None:
        pass

    def on_frame(self, frame: FrameStats) -> None:
        pass

    def on_finish(self, status: FinalStatus, stats: RequestStats) -> None:
        pass
