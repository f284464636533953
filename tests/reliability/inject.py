"""Faults injected into a real server, chosen by the request's prompt.

What it is: `faulty(Pipeline.start)`, a `Pipeline.start` under which a run whose prompt is one
of `FAULTS` misbehaves at its first denoising step (in `prepare_step`, which a step alone and a
batched step both go through), and a `__main__` that installs it, then runs
`packcache serve` unchanged (`python -m tests.reliability.inject serve --port ...`), so the
process under test is the real CLI, engine, store and recorder. What it is not: a fake; every
other request runs the real pipeline.

Faults:
- `STEP_ERROR`: the step raises, as a kernel failing on one request's input would.
- `ENGINE_DEATH`: the step raises and so does freeing the run's cache, as after a corrupted
  CUDA context, where the cleanup fails too; the engine loop cannot go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from packcache_core.cache import CacheSpec
from packcache_core.pipeline import Pipeline, Prepared, VideoRun

STEP_ERROR = "fault: step error"
ENGINE_DEATH = "fault: engine death"
FAULTS = (STEP_ERROR, ENGINE_DEATH)
FAILING_STEP = 1  # counts denoising steps


class InjectedFault(RuntimeError):
    """What an injected fault raises (the message names it, so logs say where it came from)."""


def _sabotage(run: VideoRun, fault: str) -> None:
    real_prepare, steps = run.prepare_step, [0]

    def prepare_step() -> Any:
        steps[0] += 1
        if steps[0] == FAILING_STEP:
            raise InjectedFault(f"injected: {fault}")
        return real_prepare()

    def close() -> None:
        raise InjectedFault(f"injected: {fault} (the cache cannot be freed)")

    run.prepare_step = prepare_step  # type: ignore[method-assign]
    if fault == ENGINE_DEATH:
        run.close = close  # type: ignore[method-assign]


def faulty(real_start: Callable[..., VideoRun]) -> Callable[..., VideoRun]:
    """`Pipeline.start` that sabotages runs whose prompt names a fault; the rest are untouched."""

    def start(self: Pipeline, prepared: Prepared, spec: CacheSpec | None = None) -> VideoRun:
        run = real_start(self, prepared, spec)
        if prepared.params.prompt in FAULTS:
            _sabotage(run, prepared.params.prompt)
        return run

    return start


if __name__ == "__main__":
    from server.entry.cli import main

    Pipeline.start = faulty(Pipeline.start)  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
