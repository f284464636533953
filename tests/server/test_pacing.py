"""Paced requests in the engine: held at their lead bound while others run on, stalls counted.

The engine runs the real built-in pipeline; the playback clock of paced requests is a fake
one that moves only when the test moves it, so what is held when is exact, never a wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial

import pytest

from packcache_core.pipeline import Pipeline
from server.engine.engine import Engine, EngineConfig
from server.engine.events import Frame, FrameStats, NullObserver
from server.engine.job import Submission
from server.engine.memory import TrackedMemory, module_bytes
from server.engine.pace import PaceSample
from tests.server.conftest import wait_until
from tests.server.test_engine import IMAGE, Log, params

BOUND = 0.5  # seconds of video ahead of playback; fps 12, so a latent frame (4 frames) is 1/3 s
LATENT_S = 4 / 12
LATENT = 8  # 7 generated latent frames


class Clock:
    """A playback clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Paces(NullObserver):
    """Every paced frame's lead and stall, as the metrics see them."""

    def __init__(self) -> None:
        self.samples: list[PaceSample] = []

    def on_frame(self, frame: FrameStats) -> None:
        if frame.pace is not None:
            self.samples.append(frame.pace)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load("builtin:tiny-random", "builtin:patch")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def paces() -> Paces:
    return Paces()


@pytest.fixture(params=[1, 8], ids=["one-at-a-time", "batched"])
def engine(
    request: pytest.FixtureRequest, pipeline: Pipeline, clock: Clock, paces: Paces
) -> Iterator[Engine]:
    config = EngineConfig(1 << 34, 8, 8, 600, 60, request.param, pace_lead_s=BOUND)
    memory = TrackedMemory(module_bytes(pipeline.model))
    engine = Engine(pipeline, config, memory, paces, clock)
    engine.start()
    yield engine
    engine.stop()


def submit(engine: Engine, log: Log, job_id: str, realtime: bool) -> None:
    sub = Submission(job_id, IMAGE, params(LATENT), (log.listener(job_id),), realtime=realtime)
    asyncio.run(engine.submit(sub))


def generated(log: Log, job_id: str) -> int:
    return sum(1 for e in log.of(job_id) if isinstance(e, Frame) and e.latent_index > 0)


def play_until_done(log: Log, job_id: str, clock: Clock) -> None:
    """Let playback advance one latent frame at a time, each time once the request has made
    its next frame, so it never runs dry."""

    def moved(made: int) -> bool:
        return generated(log, job_id) > made or log.finished[job_id].is_set()

    while not log.finished[job_id].is_set():
        made = generated(log, job_id)
        clock.now += LATENT_S
        wait_until(partial(moved, made), 60)


def test_a_paced_request_is_held_while_an_unpaced_one_runs_on(
    engine: Engine, clock: Clock, paces: Paces
) -> None:
    log = Log()
    submit(engine, log, "paced", realtime=True)
    submit(engine, log, "free", realtime=False)
    assert log.final("free").status == "completed"
    # Playback has not moved: 5/12 s ahead after its first frame (below the bound), 9/12 s
    # after its second (at or above it), and held there while the other ran to its end.
    assert generated(log, "paced") == 2 and not log.finished["paced"].is_set()
    assert generated(log, "free") == LATENT - 1

    play_until_done(log, "paced", clock)
    stats = log.final("paced").stats
    assert stats is not None and stats.realtime and stats.frames == 1 + 4 * (LATENT - 1)
    assert stats.stall_s == 0 and stats.max_lead_s == pytest.approx(9 / 12)
    assert len(paces.samples) == LATENT - 1  # the unpaced request has no pace
    assert max(s.lead_s for s in paces.samples) <= BOUND + LATENT_S
    free = log.final("free").stats
    assert free is not None and not free.realtime and free.stall_s is None


def test_a_late_frame_is_counted_as_a_stall(engine: Engine, clock: Clock, paces: Paces) -> None:
    log = Log()
    submit(engine, log, "paced", realtime=True)
    wait_until(lambda: generated(log, "paced") == 2, 60)  # then held: the clock stands still
    clock.now += 5.0  # playback runs dry at 9/12 s and waits for the third frame
    wait_until(lambda: generated(log, "paced") == 4, 60)  # in time again: 4/12, 8/12 s ahead
    play_until_done(log, "paced", clock)
    stats = log.final("paced").stats
    assert stats is not None and stats.stall_s == pytest.approx(5.0 - 9 / 12)
    assert [s.stall_s > 0 for s in paces.samples] == [False, False, True] + [False] * 4
    assert sum(s.stall_s for s in paces.samples) == pytest.approx(stats.stall_s)
    assert max(s.lead_s for s in paces.samples) <= BOUND + LATENT_S
