"""Who runs next: memory-based admission, a bounded FIFO waiting queue, round-robin stepping.

What it is: `FifoScheduler`, pure bookkeeping over requests that know their memory needs. A
request's need is its KV cache (allocated at start, held to the end) plus the activation memory
of one step. Steps run one at a time on the engine thread, so running requests need the SUM of
their caches plus the LARGEST of their activation estimates, and that must fit the budget. What
it is not: the thing that runs steps (the engine) or that measures memory (`memory.py`).

Invariants: `reserved_bytes <= budget_bytes` whenever a request runs alone or with others it was
admitted beside; at most `max_running` run and `max_queued` wait; waiting requests start in
arrival order (no overtaking, so a large request cannot starve).

Issue 10 (batched steps across requests) replaces `next` by a batch choice and the activation
term by the batch's; the admission math stays here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, Literal, Protocol, TypeVar

from server.errors import InvalidRequest, Overloaded


class Schedulable(Protocol):
    @property
    def cache_bytes(self) -> int: ...

    @property
    def activation_bytes(self) -> int: ...


J = TypeVar("J", bound=Schedulable)


def reservation(jobs: Iterable[Schedulable]) -> int:
    """Memory a set of requests needs together: all caches, plus one step's activations."""
    jobs = list(jobs)
    return sum(j.cache_bytes for j in jobs) + max((j.activation_bytes for j in jobs), default=0)


class FifoScheduler(Generic[J]):
    def __init__(self, budget_bytes: int, max_running: int, max_queued: int) -> None:
        self.budget_bytes = budget_bytes
        self.max_running = max_running
        self.max_queued = max_queued
        self.running: deque[J] = deque()  # the front steps next
        self.waiting: deque[J] = deque()

    @property
    def reserved_bytes(self) -> int:
        return reservation(self.running)

    @property
    def kv_bytes(self) -> int:
        return sum(j.cache_bytes for j in self.running)

    def fits(self, job: J) -> bool:
        """Could `job` start beside the running requests now?"""
        if len(self.running) >= self.max_running:
            return False
        return reservation([*self.running, job]) <= self.budget_bytes

    def offer(self, job: J, retry_after: float) -> Literal["start", "wait"]:
        """Start `job` now or queue it; raises if it can never fit or the queue is full."""
        alone = reservation([job])
        if alone > self.budget_bytes:
            raise InvalidRequest(
                f"the request needs {alone} bytes (KV cache {job.cache_bytes} + activations "
                f"{job.activation_bytes}); this server's memory budget is {self.budget_bytes}; "
                f"ask for fewer frames, a smaller size or a cache policy that keeps less",
                code="request_too_large",
            )
        if not self.waiting and self.fits(job):
            self.running.append(job)
            return "start"
        if len(self.waiting) >= self.max_queued:
            raise Overloaded(
                f"server busy: {len(self.running)} running and {len(self.waiting)} waiting "
                f"(queue limit {self.max_queued}); retry later",
                retry_after=retry_after,
            )
        self.waiting.append(job)
        return "wait"

    def admit(self) -> list[J]:
        """Move waiting requests that fit now, in arrival order, to running; returns them."""
        started = []
        while self.waiting and self.fits(self.waiting[0]):
            job = self.waiting.popleft()
            self.running.append(job)
            started.append(job)
        return started

    def position(self, job: J) -> int:
        """1 = next to start; 0 = running."""
        return self.waiting.index(job) + 1 if job in self.waiting else 0

    def next(self) -> J | None:
        """The running request to step now; round robin, one step each."""
        if not self.running:
            return None
        job = self.running[0]
        self.running.rotate(-1)
        return job

    def remove(self, job: J) -> None:
        if job in self.running:
            self.running.remove(job)
        elif job in self.waiting:
            self.waiting.remove(job)
