"""The pace decision of a paced stream (`server/engine/pace.py`) on a fake clock."""

from __future__ import annotations

import pytest

from server.engine.pace import Pace, PaceSample


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_not_held_before_playback_starts() -> None:
    pace = Pace(12, 0.5, Clock())
    assert pace.lead() is None and not pace.held() and pace.wait_s() == 0


def test_held_once_the_lead_reaches_the_bound_until_playback_catches_up() -> None:
    clock = Clock()
    pace = Pace(12, 0.5, clock)
    assert pace.emitted(5) == PaceSample(5 / 12, 0.0)  # conditioning + 4 frames; playback starts
    assert not pace.held()  # 5/12 s ahead, below 0.5
    assert pace.emitted(9) == PaceSample(9 / 12, 0.0)
    assert pace.held() and pace.wait_s() == pytest.approx(9 / 12 - 0.5)
    clock.now += 0.2
    assert pace.held() and pace.lead() == pytest.approx(9 / 12 - 0.2)
    clock.now += 9 / 12 - 0.5 - 0.2  # exactly at the bound: still held
    assert pace.held() and pace.wait_s() == pytest.approx(0, abs=1e-12)
    clock.now += 1e-6
    assert not pace.held() and pace.wait_s() == 0
    assert pace.stall_s == 0 and pace.max_lead_s == pytest.approx(9 / 12)


def test_a_late_frame_is_one_stall_and_playback_resumes_from_it() -> None:
    clock = Clock()
    pace = Pace(12, 2.0, clock)
    pace.emitted(5)
    clock.now += 1.0  # playback ran out at 5/12 s and waited 7/12 s
    lead, stall = pace.emitted(9)
    assert stall == pytest.approx(1.0 - 5 / 12)
    assert lead == pytest.approx(4 / 12)  # the new frame's 4 frames, playing from now
    clock.now += 4 / 12  # the next frame in time: no more stall, the first is not counted again
    assert pace.emitted(13) == PaceSample(pytest.approx(4 / 12), 0.0)
    assert pace.stall_s == pytest.approx(1.0 - 5 / 12)
    assert pace.lead() == pytest.approx(4 / 12)
    clock.now += 1.0
    assert pace.lead() == pytest.approx(4 / 12 - 1.0)  # waiting now, counted at the next frame
    assert pace.stall_s == pytest.approx(1.0 - 5 / 12)


def test_an_emission_is_one_instant_on_a_clock_that_moves_on_every_read() -> None:
    reads = iter(range(100))
    pace = Pace(12, 2.0, lambda: 1e-3 * next(reads))
    assert pace.emitted(5) == PaceSample(5 / 12, 0.0)  # the first frame never stalls
    assert pace.emitted(9).stall_s == 0.0 and pace.stall_s == 0.0


@pytest.mark.parametrize(("fps", "bound"), [(0, 1.0), (12, 0.0), (12, -1.0)])
def test_bad_pace_is_refused(fps: int, bound: float) -> None:
    with pytest.raises(ValueError, match="bound_s"):
        Pace(fps, bound)
