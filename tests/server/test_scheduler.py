"""Admission math and order of `FifoScheduler`, with fake jobs (sizes only) for determinism."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from server.errors import InvalidRequest, Overloaded
from server.scheduler import FifoScheduler, reservation


@dataclass(eq=False)
class FakeJob:
    """Only the memory needs a scheduler looks at."""

    name: str
    cache_bytes: int
    activation_bytes: int


def jobs(n: int, cache: int = 100, act: int = 50) -> list[FakeJob]:
    return [FakeJob(f"j{i}", cache, act) for i in range(n)]


def test_reservation_is_caches_plus_largest_activation() -> None:
    a, b = FakeJob("a", 100, 50), FakeJob("b", 200, 80)
    assert reservation([a, b]) == 100 + 200 + 80
    assert reservation([]) == 0


def test_admits_by_memory_then_queues_then_refuses() -> None:
    s: FifoScheduler[FakeJob] = FifoScheduler(budget_bytes=260, max_running=8, max_queued=2)
    j = jobs(5)  # two fit: 100 + 100 + 50 = 250 <= 260; three need 350
    assert [s.offer(x, retry_after=3) for x in j[:4]] == ["start", "start", "wait", "wait"]
    assert s.reserved_bytes == 250 and s.kv_bytes == 200
    with pytest.raises(Overloaded) as e:
        s.offer(j[4], retry_after=3)
    assert e.value.retry_after == 3 and e.value.status == 429
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
    assert [s.next() for _ in range(4)] == [a, b, c, a]
    s.remove(b)
    assert [s.next() for _ in range(3)] == [c, a, c]
    s.remove(a), s.remove(c)
    assert s.next() is None
