"""Run several generations of the same clip in lockstep and time each one's own steps.

What it is: `Lane` (one `VideoGeneration` plus what was measured about it) and `run_lanes`,
which advances every lane by one `step()` per round, in a fixed order, timing each step alone
(synchronised on CUDA). What it is not: a scheduler for serving; lanes never overlap.

Why lockstep: on a shared machine the load drifts over minutes. Interleaving the policies step
by step spreads any slow period over all of them, so the ratios between policies stay honest
even when absolute times do not.

Invariant: a lane's frame time is the sum of the wall times of its own steps for that frame
(its denoising steps, the write-back forward and packing), never another lane's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.instrument import PHASES, ForcedNoise, Stopwatch, Tape, sync
from packcache_core.generate import CacheStats, FrameResult, VideoGeneration


@dataclass
class Lane:
    name: str  # "full", "sliding", "packcache"; forced lanes are "<policy>@forced"
    gen: VideoGeneration
    forced: ForcedNoise | None = None
    prefill_seconds: float = 0.0
    frames: list[dict[str, Any]] = field(default_factory=list)
    codes: list[torch.Tensor] = field(default_factory=list)  # (h, w) per generated frame
    _prefilled: bool = False
    _seconds: float = 0.0
    _phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    _cache: CacheStats | None = None  # the cache as the current frame's denoising sees it

    def record(self, result: FrameResult) -> None:
        """Close the frame `result` finished: its time, phases, cache and fidelity sums."""
        s, ph, c = self._seconds, self._phases, self._cache
        assert c is not None, "frame finished before it started"
        row: dict[str, Any] = {
            "index": result.index,
            "seconds": s,
            "attention_share": ph["attention"] / s,
            "pack_share": ph["pack"] / s,
            **{f"{k}_seconds": v for k, v in ph.items()},
            "cache_tokens": c.used_tokens,  # per branch, attended while denoising this frame
            "cache_bytes": c.bytes_used // 2,  # per branch: K and V over all layers
            "cache_capacity_bytes": c.bytes_capacity // 2,
            "history_tokens": c.history_tokens,
            "history_frames": c.history_frames,
            "frame_position": result.frame_position,
        }
        if self.forced is not None:
            st = self.forced.take()
            row["kl"] = st.kl / max(st.n, 1)
            row["draw_agreement"] = st.agree / max(st.n, 1)
        self.frames.append(row)
        self.codes.append(result.codes)
        self._seconds, self._phases, self._cache = 0.0, dict.fromkeys(PHASES, 0.0), None

    def advance(self, watch: Stopwatch, device: torch.device) -> None:
        """One `step()` of this lane, timed alone."""
        if self.forced is not None:
            self.forced.start_step()
        if self._prefilled and self._cache is None:  # first step of a frame
            self._cache = self.gen.cache_stats()
        watch.lane = self.name
        sync(device)
        t0 = time.perf_counter()
        result = self.gen.step()
        sync(device)
        dt = time.perf_counter() - t0
        watch.lane = None
        phases = watch.take(self.name)
        if not self._prefilled:
            self._prefilled, self.prefill_seconds = True, dt
            return
        self._seconds += dt
        for k, v in phases.items():
            self._phases[k] += v
        if result is not None:
            self.record(result)


def run_lanes(lanes: list[Lane], watch: Stopwatch, tape: Tape, device: torch.device) -> None:
    """Advance all lanes round by round until done.

    The free-running lanes (one of them the recording `full`) go first, in an order rotated
    every round so that none always runs first (on a CPU the first lane of a round was measurably
    slower); the forced lanes follow, replaying the tape `full` recorded this round."""
    free = [lane for lane in lanes if lane.forced is None]
    forced = [lane for lane in lanes if lane.forced is not None]
    with watch.installed():
        for lane in lanes:
            watch.watch_cache(lane.gen.cache)
        rnd = 0
        while not all(lane.gen.done for lane in lanes):
            tape.clear()
            before = len(lanes[0].frames)
            k = rnd % len(free)
            for lane in free[k:] + free[:k] + forced:
                if not lane.gen.done:
                    lane.advance(watch, device)
            rnd += 1
            if len(lanes[0].frames) > before:  # every lane finished the same frame this round
                times = "  ".join(f"{ln.name} {ln.frames[-1]['seconds']:.2f}s" for ln in lanes)
                print(f"  frame {before + 1:>2}: {times}", flush=True)
