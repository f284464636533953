"""Warm-up: a server warms up with the model's own sampling, and measures one frame's decode
where its device can tell (CUDA) and admits requests with it; on a CPU, where nothing reports
tensor bytes, it adds nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

import server.entry.runtime as runtime_module
from packcache_core.generate import GenerationDefaults, SamplingConfig
from server.engine.events import Finished
from server.engine.job import Submission
from server.engine.memory import TrackedMemory
from tests.server.conftest import LiveServer

DECODE = 12345


class MeasuringMemory(TrackedMemory):
    """CPU bookkeeping that reports a fixed transient, as a CUDA allocator would, after
    running what it measures."""

    def __init__(self, weight_bytes: int, device: str = "cpu") -> None:
        super().__init__(weight_bytes, device)
        self.measured: list[object] = []

    def transient(self, fn: Callable[[], object]) -> int | None:
        fn()
        self.measured.append(fn)
        return DECODE


def test_warm_up_measures_one_frames_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memories: list[MeasuringMemory] = []

    def memory_for(device: object, weight_bytes: int) -> MeasuringMemory:
        memories.append(MeasuringMemory(weight_bytes))
        return memories[-1]

    monkeypatch.setattr(runtime_module, "memory_for", memory_for)
    live = LiveServer(tmp_path).start()
    try:
        engine = live.runtime.engine
        assert engine is not None and engine.scheduler.decode_bytes == DECODE
        [memory] = memories
        assert [getattr(fn, "__name__", None) for fn in memory.measured] == ["decode_probe"]
    finally:
        live.stop()


def test_a_cpu_server_adds_no_decode_estimate(tmp_path: Path) -> None:
    live = LiveServer(tmp_path).start()
    try:
        engine = live.runtime.engine
        assert engine is not None and engine.scheduler.decode_bytes == 0
        assert TrackedMemory(0).transient(lambda: None) is None
    finally:
        live.stop()


def test_warm_up_samples_as_a_default_request() -> None:
    """The warm-up request runs a default request's sampling (the card's history mask and
    temperature, the server's guidance), with 2 steps."""
    card = SamplingConfig(steps=12, cfg_scale=3.0, history_mask_ratio=0.0, temperature=0.9)
    submitted: list[Submission] = []

    class Engine:
        async def submit(self, submission: Submission) -> None:
            submitted.append(submission)
            for listener in submission.listeners:
                listener(Finished("completed"))

    asyncio.run(runtime_module.warm_up(Engine(), GenerationDefaults(card)))  # type: ignore[arg-type]
    [submission] = submitted
    assert submission.params.sampling == dataclasses.replace(card, steps=2)
