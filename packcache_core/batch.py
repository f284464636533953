"""The step loop: one tick of work for a set of runs, denoising steps batched by frame geometry.

What it is: `tick(runs)`, the only place a unit of generation work runs, for one request
(`VideoGeneration.step`, `VideoRun.step`) or many (the server's engine, the batching
benchmark): each run that needs its prefill gets it alone (prompts differ in length); the
others are grouped by frame geometry and each group's denoising steps run as one forward
(`forward_together`: rows 2i and 2i + 1 are run i's guidance branches), then each run samples,
writes back and packs on its own. A failure in one run's own part (its inputs, sampling,
write-back, decoding) is that run's outcome only; a failing batched forward cannot be blamed on
one run, so its members are retried alone and only a faulty one fails. What it is not: a
scheduler (the caller decides which runs tick together) or an accountant (the caller reads the
outcomes: results, errors, times).

Invariant: a run's tokens do not depend on which other runs share its tick: its rows see only
its own cache slots, and its random numbers come from its own generator.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Generic, NamedTuple, Protocol, TypeVar

import torch

from packcache_core.layout import FrameLayout
from packcache_core.model import LumosTransformer, Segment

log = logging.getLogger(__name__)
T = TypeVar("T", covariant=True)
U = TypeVar("U")


class StepInputs(NamedTuple):
    """One request's share of a denoising forward: 2 rows (cond, uncond)."""

    tokens: torch.Tensor  # (2, F)
    cos: torch.Tensor  # (2, F, D)
    sin: torch.Tensor
    segment: Segment


class Steppable(Protocol[T]):
    """What `tick` drives: `VideoGeneration` (results: `FrameResult`) and `VideoRun`
    (results: decoded `FrameOutput`)."""

    @property
    def model(self) -> LumosTransformer: ...

    @property
    def needs_prefill(self) -> bool: ...

    @property
    def layout(self) -> FrameLayout: ...

    def prefill(self) -> None: ...

    def prepare_step(self) -> StepInputs: ...

    def finish_step(self, hidden: torch.Tensor) -> T | None: ...


@dataclass(frozen=True)
class Outcome(Generic[U]):
    """What one run's unit of work in a tick gave."""

    result: U | None = None  # a finished frame, if the step finished one
    error: Exception | None = None  # the run failed; the others went on
    denoised: bool = False  # a denoising step (False: the prefill)
    batch: int = 1  # runs whose steps shared this forward
    seconds: float = 0.0  # from the tick's start to the end of this run's own part
    forward: int = -1  # which forward of the tick ran its step (-1: none, e.g. the prefill)


@torch.no_grad()
def tick(runs: Sequence[Steppable[U]]) -> list[Outcome[U]]:
    """One unit of work for each run (see the module docstring); outcomes in `runs` order.
    All runs share one model."""
    t0 = time.perf_counter()
    forwards = itertools.count()
    out: list[Outcome[U] | None] = [None] * len(runs)
    groups: dict[FrameLayout, list[int]] = {}
    for i, run in enumerate(runs):
        assert run.model is runs[0].model, "a tick shares one model"
        if run.needs_prefill:
            out[i] = _alone(run, t0, forwards)
        else:
            groups.setdefault(run.layout, []).append(i)
    for members in groups.values():
        group = [runs[i] for i in members]
        for i, outcome in zip(members, _together(group, t0, forwards), strict=True):
            out[i] = outcome
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def _alone(run: Steppable[U], t0: float, forwards: Iterator[int]) -> Outcome[U]:
    """The run's prefill or one denoising step, in a forward of its own."""
    denoising = not run.needs_prefill
    try:
        if not denoising:
            run.prefill()
            return Outcome(seconds=time.perf_counter() - t0)
        (hidden,) = forward_together(run.model, [run.prepare_step()])
        result = run.finish_step(hidden)
    except Exception as e:
        return Outcome(error=e, denoised=denoising)
    seconds = time.perf_counter() - t0
    return Outcome(result, denoised=True, seconds=seconds, forward=next(forwards))


def _together(runs: Sequence[Steppable[U]], t0: float, forwards: Iterator[int]) -> list[Outcome[U]]:
    """One denoising step of each run (one frame geometry) with one batched forward."""
    out: list[Outcome[U] | None] = [None] * len(runs)
    members, inputs = [], []
    for j, run in enumerate(runs):
        try:
            inputs.append(run.prepare_step())
            members.append(j)
        except Exception as e:
            out[j] = Outcome(error=e, denoised=True)
    if len(members) == 1:
        out[members[0]] = _alone(runs[members[0]], t0, forwards)
    elif members:
        try:
            hidden = forward_together(runs[members[0]].model, inputs)
        except Exception:
            n = len(members)
            log.warning("a forward of %d runs failed; stepping them alone", n, exc_info=True)
            for j in members:
                out[j] = _alone(runs[j], t0, forwards)
        else:
            forward = next(forwards)
            for j, h in zip(members, hidden, strict=True):
                try:
                    result = runs[j].finish_step(h)
                except Exception as e:
                    out[j] = Outcome(error=e, denoised=True, batch=len(members))
                    continue
                seconds = time.perf_counter() - t0
                n = len(members)
                out[j] = Outcome(result, None, True, n, seconds, forward)
    return out  # type: ignore[return-value]


@torch.no_grad()
def forward_together(model: LumosTransformer, inputs: list[StepInputs]) -> list[torch.Tensor]:
    """One forward for the denoising steps of several runs with one frame geometry.

    Returns each run's final hidden states (2, F, hidden), in the order of `inputs` (views of
    one (2R, F, hidden) tensor). Nothing but the runs' own cache slots of this step is written,
    so a forward that raises can be run again, alone or with others.
    """
    segments = [replace(inp.segment, rows=slice(2 * j, 2 * j + 2)) for j, inp in enumerate(inputs)]
    hidden = model.forward_segments(
        torch.cat([inp.tokens for inp in inputs]),  # (2R, F)
        torch.cat([inp.cos for inp in inputs]),  # (2R, F, D)
        torch.cat([inp.sin for inp in inputs]),
        segments,
    )  # (2R, F, hidden)
    return list(hidden.split(2))
