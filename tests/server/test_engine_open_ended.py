"""The engine's open-ended videos and prompt changes, with the real built-in pipeline."""

from __future__ import annotations

import asyncio

import pytest

from packcache_core.pipeline import Pipeline
from packcache_core.policy import make_policy
from server.engine.engine import Engine
from server.engine.events import Frame, PromptChanged, Started
from server.errors import InvalidRequest, NotReady
from tests.server.test_engine import Log, log, make_engine, need, params, pipeline, stop, submit

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
