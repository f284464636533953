"""Pacing a stream to playback: how far its frames run ahead of a viewer, and when to hold it.

What it is: `Pace`, one paced request's playback clock. Playback starts when the request's
first generated latent frame is emitted and then plays the emitted RGB frames (the conditioning
frame included) at the request's fps; the lead is the video emitted and not yet played. The
engine passes over (does not step) a paced request whose lead is at least `bound_s`, so its
turns go to other requests. What it is not: the scheduling (the scheduler skips whatever the
engine says is held) or anything the core knows about (pacing is a serving concern).

A player that runs out of frames waits for the next one (rebuffering) and then plays on from
there: time spent waiting is a stall, summed in `stall_s`, and it shifts playback, so one late
frame counts once rather than making every later frame late too.

Invariants: the lead right after an emission is never negative (a stall is accounted first);
a request stepped only while its lead is below `bound_s` never leads by more than `bound_s`
plus the frames of one latent frame (or `frames / fps` of its first emission, whichever is
more).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_LEAD_S = 2.0  # the `pace_lead_s` setting's default: seconds of video kept ahead


class PaceSample(NamedTuple):
    """One emission of a paced request, for metrics."""

    lead_s: float  # video emitted and not yet played, right after this emission
    stall_s: float  # playback waited this long for this emission (0: it was in time)


@dataclass
class Pace:
    """The playback clock of one paced request; `clock` returns seconds (monotonic)."""

    fps: int
    bound_s: float  # hold the request while it leads playback by this much or more
    clock: Callable[[], float] = time.monotonic
    start: float | None = None  # playback start: the first generated latent frame's emission
    frames: int = 0  # RGB frames emitted, the conditioning frame included
    stall_s: float = 0.0  # playback waited for frames this long, in total
    max_lead_s: float = 0.0  # the largest lead right after an emission

    def __post_init__(self) -> None:
        if self.fps < 1 or self.bound_s <= 0:
            raise ValueError(
                f"a pace needs fps >= 1 and bound_s > 0, got {self.fps}, {self.bound_s}"
            )

    def lead(self) -> float | None:
        """Seconds of video emitted and not yet played (negative: playback is waiting now);
        None before playback starts."""
        return None if self.start is None else self._lead_at(self.clock())

    def _lead_at(self, now: float) -> float:
        assert self.start is not None
        played = now - self.start - self.stall_s
        return self.frames / self.fps - played

    def held(self) -> bool:
        """Is the request far enough ahead to skip its turn now?"""
        lead = self.lead()
        return lead is not None and lead >= self.bound_s

    def wait_s(self) -> float:
        """Seconds until the lead falls below the bound (0 when it is below already)."""
        lead = self.lead()
        return 0.0 if lead is None else max(0.0, lead - self.bound_s)

    def emitted(self, frames: int) -> PaceSample:
        """Account an emission that brings the request to `frames` RGB frames in all."""
        assert frames > self.frames, f"frames go forward: {self.frames} -> {frames}"
        now = self.clock()  # read once: the emission is one instant
        if self.start is None:
            self.start = now
        stall = max(0.0, -self._lead_at(now))  # playback ran dry `stall` s ago and waited since
        self.stall_s += stall
        self.frames = frames
        lead = self._lead_at(now)
        self.max_lead_s = max(self.max_lead_s, lead)
        return PaceSample(lead, stall)
