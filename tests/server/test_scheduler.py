"""Admission math and order of `FifoScheduler`, with fake jobs (sizes only) for determinism."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from packcache_core.pipeline import StepMemory
from server.api.errors import wire
from server.engine.scheduler import FifoScheduler, reservation, tick_bytes
from server.errors import InvalidRequest, Overloaded


@dataclass(eq=False)
class FakeJob:
    """Only the memory needs a scheduler looks at."""

    name: str
    cache_bytes: int
    activation_bytes: int  # one step alone; split below as rows 20%, attention 40%, sample 40%
    decoder_bytes: int = 0

    @property
    def step_memory(self) -> StepMemory:
        a = self.activation_bytes
        return StepMemory(a // 5, 2 * a // 5, a - a // 5 - 2 * a // 5)


def jobs(n: int, cache: int = 100, act: int = 50) -> list[FakeJob]:
    return [FakeJob(f"j{i}", cache, act) for i in range(n)]


def test_reservation_is_caches_plus_largest_activation() -> None:
    a, b = FakeJob("a", 100, 50), FakeJob("b", 200, 80)
    assert reservation([a, b]) == 100 + 200 + 80
    assert reservation([]) == 0


def test_stream_decoder_state_is_held_like_a_cache() -> None:
    """Each running request's decoder state adds up like its cache; a request whose cache and
    decoder alone pass the budget is refused, naming both."""
    a, b = FakeJob("a", 100, 50, decoder_bytes=30), FakeJob("b", 200, 80, decoder_bytes=40)
    assert reservation([a, b]) == 100 + 30 + 200 + 40 + 80
    s: FifoScheduler[FakeJob] = FifoScheduler(100 + 30 + 50, 8, 8)
    assert s.offer(FakeJob("fits", 100, 50, decoder_bytes=30), 1) == "start"
    with pytest.raises(InvalidRequest, match="stream decoder 31") as e:
        FifoScheduler(100 + 30 + 50, 8, 8).offer(FakeJob("no", 100, 50, decoder_bytes=31), 1)
    assert e.value.code == "request_too_large"


def test_one_frames_decode_is_a_tick_transient_like_a_step() -> None:
    """The decode after a tick's steps needs its peak once (not per request), and only when it
    is larger than the steps' temporaries; a request refused for it says so."""
    a, b = FakeJob("a", 100, 50), FakeJob("b", 200, 80)
    assert reservation([a, b], decode_bytes=60) == 100 + 200 + 80  # the steps' 80 is larger
    assert reservation([a, b], decode_bytes=500) == 100 + 200 + 500
    assert reservation([], decode_bytes=500) == 0
    s: FifoScheduler[FakeJob] = FifoScheduler(100 + 500, 8, 8)
    s.decode_bytes = 500
    assert s.offer(FakeJob("fits", 100, 50), 1) == "start" and s.reserved_bytes == 600
    assert s.offer(FakeJob("waits", 1, 50), 1) == "wait"
    tight: FifoScheduler[FakeJob] = FifoScheduler(100 + 500 - 1, 8, 8)
    tight.decode_bytes = 500
    with pytest.raises(InvalidRequest, match="one frame's decode 500"):
        tight.offer(FakeJob("no", 100, 50), 1)


def test_batched_reservation_sums_forward_rows_only() -> None:
    """Batched, the forward's row activations of the members coexist; attention temporaries
    and the sampler's exist for one request at a time, so only their largest counts."""
    small, large = StepMemory(10, 300, 200), StepMemory(30, 100, 500)
    assert small.alone == 510 and large.alone == 630
    assert tick_bytes([small, large], max_batch=1) == 630  # one step at a time: the largest
    assert tick_bytes([small, large], max_batch=8) == 10 + 30 + 300 + 500
    assert tick_bytes([small, small, large], max_batch=2) == 30 + 10 + 300 + 500  # top 2 rows
    assert tick_bytes([large], max_batch=8) == large.alone  # a batch of one is a step alone
    assert tick_bytes([], max_batch=8) == 0


def test_batching_admits_by_the_batched_reservation() -> None:
    """Caches 100 each; a step alone 50 = rows 10 + attention 20 + sample 20. Batched, n
    requests reserve 100 n + 10 n + 20 + 20; one at a time, 100 n + 50."""
    budget = 3 * 100 + 3 * 10 + 40  # = 370: three fit batched (370), and one at a time (350)
    batched: FifoScheduler[FakeJob] = FifoScheduler(budget, 8, 8, max_batch=8)
    assert [batched.offer(x, 1) for x in jobs(4)] == ["start", "start", "start", "wait"]
    assert batched.reserved_bytes == 370 and batched.kv_bytes == 300
    tight: FifoScheduler[FakeJob] = FifoScheduler(budget - 1, 8, 8, max_batch=8)
    assert [tight.offer(x, 1) for x in jobs(3)] == ["start", "start", "wait"]  # 369 < 370
    alone: FifoScheduler[FakeJob] = FifoScheduler(budget - 1, 8, 8, max_batch=1)
    assert [alone.offer(x, 1) for x in jobs(3)] == ["start", "start", "start"]  # 350
    capped: FifoScheduler[FakeJob] = FifoScheduler(budget - 1, 8, 8, max_batch=2)
    assert [capped.offer(x, 1) for x in jobs(3)] == ["start", "start", "start"]  # 360: 2 rows


def test_admits_by_memory_then_queues_then_refuses() -> None:
    s: FifoScheduler[FakeJob] = FifoScheduler(budget_bytes=260, max_running=8, max_queued=2)
    j = jobs(5)  # two fit: 100 + 100 + 50 = 250 <= 260; three need 350
    assert [s.offer(x, retry_after=3) for x in j[:4]] == ["start", "start", "wait", "wait"]
    assert s.reserved_bytes == 250 and s.kv_bytes == 200
    with pytest.raises(Overloaded) as e:
        s.offer(j[4], retry_after=3)
    assert e.value.retry_after == 3 and wire(e.value).status == 429
    assert [s.position(x) for x in j[:4]] == [0, 0, 1, 2]


def test_never_fitting_request_is_refused_not_queued() -> None:
    s: FifoScheduler[FakeJob] = FifoScheduler(budget_bytes=100, max_running=8, max_queued=8)
    with pytest.raises(InvalidRequest, match="memory budget is 100") as e:
        s.offer(FakeJob("big", 90, 20), retry_after=1)
    assert e.value.code == "request_too_large" and not s.waiting


def test_max_running_caps_even_when_memory_fits() -> None:
    s: FifoScheduler[FakeJob] = FifoScheduler(budget_bytes=10**9, max_running=2, max_queued=8)
    assert [s.offer(x, 1) for x in jobs(3)] == ["start", "start", "wait"]


def test_fifo_without_overtaking() -> None:
    """A small request behind a big waiting one does not jump the queue."""
    s: FifoScheduler[FakeJob] = FifoScheduler(budget_bytes=300, max_running=8, max_queued=8)
    running, big, small = FakeJob("r", 100, 50), FakeJob("big", 200, 50), FakeJob("s", 10, 5)
    assert s.offer(running, 1) == "start"
    assert s.offer(big, 1) == "wait"  # 100 + 200 + 50 > 300
    assert s.offer(small, 1) == "wait"  # would fit, but `big` came first
    assert s.admit() == []
    s.remove(running)
    assert s.admit() == [big, small]  # 200 + 10 + 50 = 260


def test_round_robin_one_step_each() -> None:
    s: FifoScheduler[FakeJob] = FifoScheduler(budget_bytes=10**9, max_running=8, max_queued=8)
    a, b, c = jobs(3)
    for x in (a, b, c):
        s.offer(x, 1)
    assert [s.next_batch() for _ in range(4)] == [[a], [b], [c], [a]]
    s.remove(b)
    assert [s.next_batch() for _ in range(3)] == [[c], [a], [c]]
    s.remove(a), s.remove(c)
    assert s.next_batch() == []


def test_batches_take_turns_when_more_run_than_fit_one() -> None:
    s: FifoScheduler[FakeJob] = FifoScheduler(10**9, max_running=8, max_queued=8, max_batch=2)
    a, b, c = jobs(3)
    for x in (a, b, c):
        s.offer(x, 1)
    assert [s.next_batch() for _ in range(3)] == [[a, b], [c, a], [b, c]]
    everyone: FifoScheduler[FakeJob] = FifoScheduler(10**9, 8, 8, max_batch=8)
    for x in (a, b, c):
        everyone.offer(x, 1)
    assert [everyone.next_batch() for _ in range(2)] == [[a, b, c], [a, b, c]]
    with pytest.raises(ValueError, match="max_batch"):
        FifoScheduler(1, 1, 1, max_batch=0)


def test_held_requests_are_passed_over_and_keep_their_place() -> None:
    """A held request (a paced stream ahead of playback) gives its turn to the others and is
    first in line again once released; when all are held, nothing steps."""
    s: FifoScheduler[FakeJob] = FifoScheduler(10**9, max_running=8, max_queued=8, max_batch=2)
    a, b, c, d = jobs(4)
    for x in (a, b, c, d):
        s.offer(x, 1)
    held = {a}
    assert [s.next_batch(held.__contains__) for _ in range(3)] == [[b, c], [d, b], [c, d]]
    held = set()
    assert s.next_batch(held.__contains__) == [a, b]  # first in line, not at the back
    held = {a, b, c, d}
    assert s.next_batch(held.__contains__) == []
    assert list(s.running) == [c, d, a, b]  # an empty turn moves nobody
