"""The engine's open-ended videos and prompt changes, with the real built-in pipeline."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from packcache_core.pipeline import Pipeline
from packcache_core.policy import make_policy
from packcache_core.record import Recorded
from server.engine.engine import Engine
from server.engine.events import Event, Frame, Progress, PromptChanged, Started
from server.engine.job import Submission
from server.errors import InvalidRequest, NotReady
from tests.server.test_engine import (
    IMAGE,
    Log,
    log,
    make_engine,
    need,
    params,
    pipeline,
    stop,
    submit,
)

__all__ = ["log", "pipeline", "stop"]  # the fixtures this module shares

OPEN = {"open_ended": True, "policy": make_policy("packcache"), "text_slots": 200}


def test_open_ended_video_ends_completed_at_max_stream_s(
    pipeline: Pipeline, log: Log, stop: list[Engine]
) -> None:
    p = params(steps=1, **OPEN)
    engine = make_engine(pipeline, budget=4 * need(pipeline, p), max_stream_s=3.0)
    stop.append(engine)
    submit(engine, log, "a", p)
    final = log.final("a", timeout=120)
    assert final.status == "completed" and final.stats is not None
    started = next(e for e in log.of("a") if isinstance(e, Started))
    assert started.latent_frames is None and started.frames is None
    made = [e.latent_index for e in log.of("a") if isinstance(e, Frame)]
    assert made == list(range(len(made))) and final.stats.latent_frames == len(made)
    with pytest.raises(NotReady, match="finished"):  # a prompt change after the end
        asyncio.run(engine.change_prompt("a", "now something else"))


def test_prompt_changes_and_stop_through_the_engine(
    pipeline: Pipeline, log: Log, stop: list[Engine]
) -> None:
    p = params(steps=1, **OPEN)
    engine = make_engine(pipeline, budget=4 * need(pipeline, p))
    stop.append(engine)
    submit(engine, log, "a", p)
    index = asyncio.run(engine.change_prompt("a", "a blue circle"))
    assert index >= 1
    with pytest.raises(InvalidRequest, match="shorten it"):
        asyncio.run(engine.change_prompt("a", "x" * 300))
    assert engine.end("a")
    final = log.final("a", timeout=120)
    assert final.status == "completed"
    (changed,) = [e for e in log.of("a") if isinstance(e, PromptChanged)]
    assert changed == PromptChanged("a blue circle", index)

    submit(engine, log, "b", params(latent=6))
    with pytest.raises(InvalidRequest, match="only an open-ended video is stopped"):
        engine.end("b")
    assert log.final("b").status == "completed"


def test_an_open_ended_video_resumed_after_a_crash_completes_with_its_record(
    pipeline: Pipeline, log: Log, stop: list[Engine]
) -> None:
    """Its reader went with the process that died: it ends with the frames it had recorded."""
    p = params(steps=1, **OPEN)
    run = pipeline.start(pipeline.prepare(IMAGE, p))
    run.first_rgb()
    outs = [o for _ in range(8) if (o := run.step()) is not None][:3]
    state = outs[-1].result.state
    assert len(outs) == 3 and state is not None
    engine = make_engine(pipeline, budget=4 * need(pipeline, p))
    stop.append(engine)
    recorded = Recorded([o.result.codes for o in outs], state)
    sub = Submission("a", IMAGE, p, (log.listener("a"),), resume=recorded)
    asyncio.run(engine.submit(sub))
    final = log.final("a")
    assert final.status == "completed" and final.stats is not None
    assert final.stats.latent_frames == 4 and final.stats.steps == 0  # nothing new was made
    frames = [e for e in log.of("a") if isinstance(e, Frame)]
    assert [f.latent_index for f in frames] == [0, 1, 2, 3]
    assert all(torch.equal(f.rgb, o.rgb) for f, o in zip(frames[1:], outs, strict=True))


def test_a_prompt_change_after_the_last_frame_is_refused(
    pipeline: Pipeline, log: Log, stop: list[Engine]
) -> None:
    """Sent while a fixed-length video's last frame is being made, a change would take effect
    at a frame that never comes: `video_finished`, and nothing emitted (so nothing recorded)."""
    latent, steps = 3, 4
    p = params(latent, steps, text_slots=200)
    engine = make_engine(pipeline, budget=4 * need(pipeline, p))
    stop.append(engine)
    loop = asyncio.new_event_loop()  # where the prompt's caller awaits, as a route would
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asked: list[asyncio.Task[int]] = []

    async def ask() -> asyncio.Task[int]:
        task = asyncio.ensure_future(engine.change_prompt("a", "a blue circle"))
        await asyncio.sleep(0)  # the task ran up to its await: the change is queued
        return task

    def during_last_frame(event: Event) -> None:  # on the engine thread, which waits here
        first_step_of_last = (latent - 2) * steps + 1
        if isinstance(event, Progress) and event.steps_done == first_step_of_last:
            asked.append(asyncio.run_coroutine_threadsafe(ask(), loop).result(timeout=30))

    async def outcome(task: asyncio.Task[int]) -> int | BaseException:
        try:
            return await task
        except NotReady as e:
            return e

    sub = Submission("a", IMAGE, p, (log.listener("a"), during_last_frame))
    asyncio.run(engine.submit(sub))
    assert log.final("a").status == "completed"
    (task,) = asked
    refused = asyncio.run_coroutine_threadsafe(outcome(task), loop).result(timeout=30)
    assert isinstance(refused, NotReady) and refused.code == "video_finished"
    assert not [e for e in log.of("a") if isinstance(e, PromptChanged)]
    loop.call_soon_threadsafe(loop.stop)
