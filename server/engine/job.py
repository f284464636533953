"""One request inside the engine: what was asked, what it holds, and its timings.

What it is: `Submission` (what a route hands the engine), `Admission` (the engine's answer) and
`Job`, the engine thread's mutable record of a request from intake to finish, with the
statistics it accumulates. What it is not: the scheduling decision (`scheduler.py`) or the
generation itself (`packcache_core.pipeline.VideoRun`).

Invariant: only the engine thread mutates a `Job`, except `cancel_requested` (with
`cancel_reason`, set just before it) and `end_requested`, which any thread may set (single
attribute writes) and the engine reads before every step. Other threads learn
about a job from its events, never by reading its generation while a step mutates it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from PIL import Image

from packcache_core.cache import CacheSpec
from packcache_core.layout import latent_frames_for
from packcache_core.pipeline import Prepared, StepMemory, VideoParams, VideoRun
from packcache_core.record import Recorded
from packcache_core.video.input import Clip
from server.engine.events import FinalStatus, FrameStats, JobListener, RequestStats
from server.engine.pace import Pace


@dataclass(frozen=True)
class Submission:
    job_id: str
    image: Image.Image | None  # None: text-to-video
    params: VideoParams
    listeners: tuple[JobListener, ...] = ()
    arrived: float = field(default_factory=time.monotonic)
    resume: Recorded | None = None  # frames already made (a job picked up after a restart)
    realtime: bool = False  # pace to playback (`pace.py`); a serving concern, not the core's
    clip: Clip | None = None  # an uploaded video's frames (`image` is its first), taken once


@dataclass(frozen=True)
class Admission:
    """The request was accepted: it starts now (position 0) or waits at `position`."""

    position: int
    width: int
    height: int
    cache_bytes: int
    activation_bytes: int


class PromptRequest(NamedTuple):
    """A new prompt for a running video, and where its caller awaits the frame it starts at."""

    prompt: str
    reply: asyncio.Future[int]


@dataclass(eq=False)  # identity, not field equality: jobs sit in deques
class Job:
    sub: Submission
    deadline: float  # timeout; an open-ended video instead ends (completed) there
    reply: asyncio.Future[Admission] | None = None
    cancel_requested: FinalStatus | None = None  # "cancelled" or "timeout"
    cancel_reason: str = "cancelled"  # set with `cancel_requested`: who decided, in words
    end_requested: bool = False  # an open-ended video asked to end (any thread may set it)
    prompts: deque[PromptRequest] = field(default_factory=deque)  # under the engine's lock
    prepared: Prepared | None = None
    spec: CacheSpec | None = None  # the cache planned at admission; allocation uses it
    step_memory: StepMemory = field(default_factory=lambda: StepMemory(0, 0, 0))  # estimated
    decoder_bytes: int = 0  # its stream decoder's state at most (`Pipeline.decoder_bytes`)
    run: VideoRun | None = None
    started_at: float | None = None
    first_frame_at: float | None = None
    last_frame_at: float = 0.0
    rgb_frames: int = 0
    steps: int = 0
    step_seconds: float = 0.0
    peak_bytes: int = 0
    frame_peak_bytes: int = 0
    pace: Pace | None = None  # set at start when the submission asks for `realtime`

    @property
    def cache_bytes(self) -> int:
        """The request's fixed KV cache (0 before it is planned)."""
        return 0 if self.spec is None else self.spec.bytes

    @property
    def id(self) -> str:
        return self.sub.job_id

    @property
    def activation_bytes(self) -> int:
        """Estimated transient memory of one of its steps, run alone."""
        return self.step_memory.alone

    @property
    def policy(self) -> str:
        return self.sub.params.policy.name

    @property
    def open_ended(self) -> bool:
        return self.sub.params.open_ended

    def resolve(self, outcome: Admission | BaseException) -> None:
        """Answer the submitter, on its own event loop: admitted, or refused with an error."""
        if self.reply is not None:
            answer(self.reply, outcome)

    def record_step(self, seconds: float, peak_bytes: int, denoised: bool) -> None:
        """Account one step; `denoised` is False for the prefill."""
        self.peak_bytes = max(self.peak_bytes, peak_bytes)
        self.frame_peak_bytes = max(self.frame_peak_bytes, peak_bytes)
        if denoised:
            self.steps += 1
            self.step_seconds += seconds

    def frame_done(self, now: float, rgb_frames: int) -> FrameStats:
        """Account a finished latent frame of `rgb_frames` frames; returns its statistics."""
        first = self.first_frame_at is None
        if first:
            self.first_frame_at = now
        self.rgb_frames += rgb_frames
        stats = FrameStats(
            policy=self.policy,
            latency_s=now - self.last_frame_at,
            peak_memory_bytes=self.frame_peak_bytes,
            rgb_frames=rgb_frames,
            time_to_first_frame_s=now - self.sub.arrived if first else None,
            pace=None if self.pace is None else self.pace.emitted(self.rgb_frames),
        )
        self.last_frame_at, self.frame_peak_bytes = now, 0
        return stats

    def stats(self, now: float) -> RequestStats:
        start = self.started_at if self.started_at is not None else now
        params = self.sub.params
        generation_s = now - start
        video_s = (self.rgb_frames - 1) / params.fps  # what was made (an open-ended video)
        first = self.first_frame_at
        return RequestStats(
            queue_wait_s=start - self.sub.arrived,
            time_to_first_frame_s=None if first is None else first - self.sub.arrived,
            duration_s=now - self.sub.arrived,
            generation_s=generation_s,
            frames=self.rgb_frames,
            latent_frames=latent_frames_for(self.rgb_frames) if self.rgb_frames else 0,
            steps=self.steps,
            mean_step_s=self.step_seconds / self.steps if self.steps else 0.0,
            realtime_factor=generation_s / video_s if self.started_at and video_s > 0 else None,
            cache_policy=self.policy,
            cache_bytes=self.cache_bytes,
            activation_bytes=self.activation_bytes,
            peak_memory_bytes=self.peak_bytes,
            realtime=self.sub.realtime,
            stall_s=None if self.pace is None else self.pace.stall_s,
            max_lead_s=None if self.pace is None else self.pace.max_lead_s,
            decoder_bytes=self.decoder_bytes,
        )


T = TypeVar("T")


def answer(reply: asyncio.Future[T], outcome: T | BaseException) -> None:
    """Settle `reply` with a result or an error on its own event loop, from any thread."""
    reply.get_loop().call_soon_threadsafe(_settle, reply, outcome)


def _settle(fut: asyncio.Future[T], outcome: T | BaseException) -> None:
    if fut.done():  # the caller went away
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)
