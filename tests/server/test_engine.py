"""The engine with the real built-in pipeline: admission by memory, queueing, cancellation,
timeouts, and failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from packcache_core.cache import CacheSpec
from packcache_core.generate import SamplingConfig
from packcache_core.pipeline import Pipeline, Prepared, VideoParams, VideoRun
from server.engine.engine import Engine, EngineConfig
from server.engine.events import Event, Finished, Frame, Progress, Queued, Started
from server.engine.job import Admission, Submission
from server.engine.memory import TrackedMemory, module_bytes
from server.errors import InvalidRequest, Overloaded

IMAGE = Image.new("RGB", (96, 64), (180, 60, 60))


def params(latent: int = 3, steps: int = 2, **kw: Any) -> VideoParams:
    return VideoParams("a red square", latent, size=(64, 64), sampling=SamplingConfig(steps), **kw)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load("builtin:tiny-random", "builtin:patch")


def need(pipeline: Pipeline, p: VideoParams) -> int:
    """Bytes a request reserves alone: its cache and stream decoder plus one step's
    activations."""
    prepared = pipeline.prepare(IMAGE, p)
    spec = pipeline.plan(prepared)
    return spec.bytes + pipeline.decoder_bytes(prepared) + pipeline.step_memory(spec).alone


@pytest.fixture(scope="module")
def one(pipeline: Pipeline) -> int:
    return need(pipeline, params())


class Log:
    """Every event of every job, in the order the engine thread emitted them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []
        self.finished: dict[str, threading.Event] = {}

    def listener(self, job_id: str) -> Any:
        self.finished[job_id] = threading.Event()

        def record(event: Event) -> None:
            self.events.append((job_id, event))
            if isinstance(event, Finished):
                self.finished[job_id].set()

        return record

    def of(self, job_id: str) -> list[Event]:
        return [e for j, e in self.events if j == job_id]

    def final(self, job_id: str, timeout: float = 60) -> Finished:
        assert self.finished[job_id].wait(timeout), f"{job_id} did not finish"
        last = self.of(job_id)[-1]
        assert isinstance(last, Finished)
        return last


def make_engine(pipeline: Pipeline, budget: int, **kw: Any) -> Engine:
    config = dict(max_running=8, max_queued=8, request_timeout_s=600, stall_timeout_s=60) | kw
    engine = Engine(
        pipeline, EngineConfig(budget, **config), TrackedMemory(module_bytes(pipeline.model))
    )
    engine.start()
    return engine


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def stop() -> Iterator[list[Engine]]:
    engines: list[Engine] = []
    yield engines
    for e in engines:
        e.stop()


def submit(engine: Engine, log: Log, job_id: str, p: VideoParams) -> Admission:
    return asyncio.run(engine.submit(Submission(job_id, IMAGE, p, (log.listener(job_id),))))


def test_second_request_waits_for_memory(
    pipeline: Pipeline, one: int, log: Log, stop: list
) -> None:
    engine = make_engine(pipeline, budget=one)  # room for exactly one
    stop.append(engine)
    assert submit(engine, log, "a", params()).position == 0
    assert submit(engine, log, "b", params()).position == 1
    assert log.final("a").status == log.final("b").status == "completed"
    order = [(j, type(e).__name__) for j, e in log.events if not isinstance(e, Progress)]
    assert order.index(("b", "Started")) > order.index(("a", "Finished"))
    a = log.of("a")
    assert isinstance(a[0], Queued) and isinstance(a[1], Started)
    frames = [e for e in a if isinstance(e, Frame)]
    assert [(f.index, f.latent_index, f.rgb.shape[0]) for f in frames] == [
        (0, 0, 1),
        (1, 1, 4),
        (5, 2, 4),
    ]
    stats = log.final("a").stats
    assert stats is not None and (stats.frames, stats.steps, stats.latent_frames) == (9, 4, 3)
    decoder = pipeline.decoder_bytes(pipeline.prepare(IMAGE, params()))
    assert stats.cache_bytes > 0 and decoder > 0
    assert stats.decoder_bytes == decoder
    assert stats.cache_bytes + stats.decoder_bytes + stats.activation_bytes == one
    assert engine.stats.kv_bytes == 0 and engine.stats.running == 0


def test_too_large_and_queue_full(pipeline: Pipeline, log: Log, stop: list) -> None:
    engine = make_engine(pipeline, budget=need(pipeline, params(latent=6)), max_queued=1)
    stop.append(engine)
    with pytest.raises(InvalidRequest, match="memory budget") as e:
        submit(engine, log, "huge", params(latent=12))
    assert e.value.code == "request_too_large"
    submit(engine, log, "a", params(latent=6))
    submit(engine, log, "b", params())
    with pytest.raises(Overloaded) as e2:
        submit(engine, log, "c", params())
    assert e2.value.retry_after is not None and e2.value.retry_after > 0
    assert log.of("c") == []  # a refused request has no events
    engine.cancel("a")
    assert log.final("b").status == "completed"


def test_cancel_frees_the_cache_within_one_step(pipeline: Pipeline, log: Log, stop: list) -> None:
    engine = make_engine(pipeline, budget=1 << 32)
    stop.append(engine)
    submit(engine, log, "long", params(latent=12, steps=4))
    while sum(isinstance(e, Progress) for e in log.of("long")) < 3:
        time.sleep(0.01)
    assert engine.stats.kv_bytes > 0
    steps_at_cancel = sum(isinstance(e, Progress) for e in log.of("long"))
    assert engine.cancel("long")
    final = log.final("long", timeout=5)
    steps_after = sum(isinstance(e, Progress) for e in log.of("long")) - steps_at_cancel
    assert final.status == "cancelled" and final.code == "cancelled"
    assert steps_after <= 1  # the step already running, if any
    assert engine.stats.kv_bytes == 0 and engine.stats.reserved_bytes == 0
    assert not engine.cancel("long")  # gone


def test_cancel_while_waiting(pipeline: Pipeline, log: Log, stop: list) -> None:
    engine = make_engine(pipeline, budget=need(pipeline, params(latent=4)))
    stop.append(engine)
    submit(engine, log, "a", params(latent=4))
    submit(engine, log, "b", params())
    engine.cancel("b")
    assert log.final("b").status == "cancelled"
    assert not any(isinstance(e, Started) for e in log.of("b"))
    assert log.final("a").status == "completed"


def test_request_timeout(pipeline: Pipeline, log: Log, stop: list) -> None:
    engine = make_engine(pipeline, budget=1 << 32, request_timeout_s=0.5)
    stop.append(engine)
    submit(engine, log, "slow", params(latent=20, steps=8))
    final = log.final("slow", timeout=10)
    assert final.status == "timeout" and "0.5 s" in (final.message or "")
    assert engine.stats.kv_bytes == 0


@dataclass
class HookedPipeline(Pipeline):
    """The real pipeline with `hook(prompt, n)` called before the n-th denoising step of every
    run (in `prepare_step`, which a step alone and a batched step both go through)."""

    hook: Callable[[str, int], None] = lambda prompt, n: None

    def start(self, prepared: Prepared, spec: CacheSpec | None = None) -> VideoRun:
        run = super().start(prepared, spec)
        real, calls, prompt = run.prepare_step, [0], prepared.params.prompt

        def prepare_step() -> Any:
            calls[0] += 1
            self.hook(prompt, calls[0])
            return real()

        run.prepare_step = prepare_step  # type: ignore[method-assign]
        return run


def hooked(pipeline: Pipeline, hook: Callable[[str, int], None]) -> Pipeline:
    p = pipeline
    return HookedPipeline(p.model, p.video_tokenizer, p.text_tokenizer, p.target_size, hook=hook)


def boom(prompt: str, n: int) -> None:
    if prompt == "boom" and n == 2:
        raise RuntimeError("device on fire")


def test_a_failing_request_fails_alone(pipeline: Pipeline, log: Log, stop: list) -> None:
    engine = make_engine(hooked(pipeline, boom), budget=1 << 32)
    stop.append(engine)
    submit(engine, log, "ok", params(latent=4))
    submit(engine, log, "bad", VideoParams("boom", 4, size=(64, 64), sampling=SamplingConfig(2)))
    bad, ok = log.final("bad"), log.final("ok")
    assert bad.status == "failed" and bad.code == "generation_error"
    assert "device on fire" in (bad.message or "")
    assert ok.status == "completed" and engine.alive and not engine.stalled
    with pytest.raises(InvalidRequest, match="multiples of 32"):  # the core's refusal is a 400
        submit(engine, log, "odd", VideoParams("x", 2, size=(60, 60)))
    assert submit(engine, log, "after", params()).position == 0
    assert log.final("after").status == "completed"


def test_a_stuck_step_reads_as_stalled(pipeline: Pipeline, log: Log, stop: list) -> None:
    gate = threading.Event()

    def stuck(prompt: str, n: int) -> None:
        if n == 1:
            gate.wait(10)

    engine = make_engine(hooked(pipeline, stuck), budget=1 << 32, stall_timeout_s=0.3)
    stop.append(engine)
    assert not engine.stalled
    submit(engine, log, "a", params())
    deadline = time.monotonic() + 5
    while not engine.stalled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.stalled and engine.alive
    gate.set()
    assert log.final("a").status == "completed"
    assert not engine.stalled
