"""Instrumentation for `cache_policies.py`: where a step's time goes, and teacher forcing.

What it is:
- `Stopwatch`, which times named phases of whatever generation is "current": attention (every
  `scaled_dot_product_attention` call), the transformer forward, the output head, sampling and
  cache packing. On CUDA each phase is bracketed by events on the current stream, so nothing
  synchronises until the step ends; on CPU ops are synchronous and `perf_counter` suffices.
- `RecordingNoise` and `ForcedNoise`, two `SamplerNoise`s: the first draws exactly as
  `GeneratorNoise` does (same generator, same order) and keeps each step's CFG logits, draws and
  uniforms on a `Tape`; the second replays the tape into another policy's generation so that it
  sees full's token history, and measures how far its own distributions are from full's.
What it is not: a profiler of `packcache_core` internals beyond these seams; nothing here
changes what a generation computes (forced runs change which tokens it *keeps*, on purpose).

Invariant: patches are installed by `Stopwatch.installed()` and always removed on exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import packcache_core.generate as generate_mod
from packcache_core.cache import KVCache
from packcache_core.model import LumosTransformer
from packcache_core.sampling import inverse_cdf_draw

PHASES = ("attention", "forward", "head", "sampling", "pack")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates phase times per lane; `lane` names who is running now."""

    def __init__(self, device: torch.device, time_attention: bool = True) -> None:
        self.device = device
        # Off for a compiled model: a Python timer around SDPA would break its graph.
        self.time_attention = time_attention
        self.lane: str | None = None
        self._open: dict[str, list[Any]] = {}  # lane -> [(phase, start, end)] not yet resolved
        self.totals: dict[str, dict[str, float]] = {}

    def _timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.lane is None:
                return fn(*args, **kwargs)
            if self.device.type == "cuda":
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                out = fn(*args, **kwargs)
                end.record()
            else:
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                end = time.perf_counter()
            self._open.setdefault(self.lane, []).append((phase, start, end))
            return out

        return wrapper

    def take(self, lane: str) -> dict[str, float]:
        """Seconds per phase for `lane` since the last take (call after a device sync)."""
        out = dict.fromkeys(PHASES, 0.0)
        for phase, start, end in self._open.pop(lane, []):
            dt = start.elapsed_time(end) / 1e3 if self.device.type == "cuda" else end - start
            out[phase] += dt
        return out

    def watch_model(self, model: LumosTransformer) -> None:
        """Time this model's transformer passes and output head (instance attributes, removed
        by `unwatch_model`). Every pass, `forward` or a batched step, goes through
        `forward_segments`."""
        timed = self._timed("forward", model.forward_segments)
        model.forward_segments = timed  # type: ignore[method-assign]
        model.code_logits = self._timed("head", model.code_logits)  # type: ignore[method-assign]

    @staticmethod
    def unwatch_model(model: LumosTransformer) -> None:
        for name in ("forward_segments", "code_logits"):
            model.__dict__.pop(name, None)

    def watch_cache(self, cache: KVCache) -> None:
        """Time packing: `commit_frame` registers the written-back frame and packs."""
        commit = self._timed("pack", cache.commit_frame)

        def synced(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)  # on CUDA the pack's own kernels then fill its events alone
            return commit(*args, **kwargs)

        cache.commit_frame = synced  # type: ignore[method-assign]

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Patch SDPA (attention) and the sampler (sampling) for the duration."""
        sdpa, draw, remask = (
            F.scaled_dot_product_attention,
            generate_mod.guided_draw,
            generate_mod.remask,
        )
        if self.time_attention:
            F.scaled_dot_product_attention = self._timed("attention", sdpa)
        generate_mod.guided_draw = self._timed("sampling", draw)  # type: ignore[assignment]
        generate_mod.remask = self._timed("sampling", remask)  # type: ignore[assignment]
        try:
            yield
        finally:
            F.scaled_dot_product_attention = sdpa
            generate_mod.guided_draw = draw
            generate_mod.remask = remask


@dataclass
class Draw:
    """One sampling chunk of full's step: CFG logits (n, V), uniforms, draws, log-sum-exp."""

    logits: torch.Tensor
    u: torch.Tensor
    index: torch.Tensor
    lse: torch.Tensor


@dataclass
class Tape:
    """Full's randomness and distributions for the current step, shared by forced lanes."""

    draws: list[Draw] = field(default_factory=list)
    gumbel: torch.Tensor | None = None

    def clear(self) -> None:
        self.draws, self.gumbel = [], None


class RecordingNoise:
    """`GeneratorNoise`'s exact draws (same generator calls in the same order), recorded.

    Keeping references costs no time: the logits chunk is a fresh tensor nobody writes after
    the draw."""

    def __init__(self, generator: torch.Generator, tape: Tape) -> None:
        self.generator, self.tape = generator, tape

    def draw(
        self, logits: torch.Tensor, rows: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(n, device=logits.device, generator=self.generator)[rows]
        index, lse = inverse_cdf_draw(logits, u)
        self.tape.draws.append(Draw(logits, u, index, lse))
        return index, lse

    def uniform(self, n: int, device: torch.device) -> torch.Tensor:
        u = torch.rand(n, device=device, generator=self.generator)
        self.tape.gumbel = u
        return u


@dataclass
class FidelityStats:
    """Per-frame sums; reset by `take`."""

    kl: float = 0.0  # sum over slot draws of KL(full || policy), nats
    agree: int = 0  # slot draws where the policy's own draw (full's uniform) equals full's
    n: int = 0


class ForcedNoise:
    """Replays full's tape into another policy's generation (teacher forcing).

    For each chunk it first measures the policy's own CFG distribution against full's (KL, and
    whether its own inverse-CDF draw at full's uniform lands on full's code), then hands back
    full's draw. `guided_draw` reads the drawn code's probability back from the logits it passed
    in, and confidence re-masking ranks slots by it; so we also pin that one logit per slot to
    full's value and return full's log-sum-exp, which makes the probability bit-identical to
    full's and the kept slots the same. `cache_policies.py` checks that the forced run's frames
    equal full's."""

    def __init__(self, tape: Tape, stride: int = 4) -> None:
        self.tape, self.cursor, self.stats = tape, 0, FidelityStats()
        self.stride = stride  # measure every `stride`-th slot draw

    def start_step(self) -> None:
        self.cursor = 0

    def draw(
        self, logits: torch.Tensor, rows: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.tape.draws[self.cursor]  # full's draw at the same slots (the same tokens)
        assert rec.index.numel() == rows.numel(), "tape out of step"
        self.cursor += 1
        rows = slice(None, None, self.stride)  # a fixed subset of slots keeps this cheap
        own, _ = inverse_cdf_draw(logits[rows], rec.u[rows])
        self.stats.agree += int((own == rec.index[rows]).sum())
        self.stats.n += own.numel()
        self.stats.kl += float(kl_rows(rec.logits[rows], logits[rows]).sum())
        col = rec.index[:, None]
        logits.scatter_(1, col, rec.logits.gather(1, col))  # pin the drawn code's logit
        return rec.index, rec.lse

    def uniform(self, n: int, device: torch.device) -> torch.Tensor:
        assert self.tape.gumbel is not None and self.tape.gumbel.numel() == n, "tape out of step"
        return self.tape.gumbel

    def take(self) -> FidelityStats:
        out, self.stats = self.stats, FidelityStats()
        return out


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """(n,) KL(softmax(p) || softmax(q)) per row of (n, V) float32 logits, in nats."""
    lp = torch.log_softmax(p_logits, dim=-1)
    lq = torch.log_softmax(q_logits, dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_(min=0.0)
