"""Who runs next: memory-based admission, a bounded FIFO waiting queue, round-robin batches.

What it is: `FifoScheduler`, pure bookkeeping over requests that know their memory needs. A
request's need is its KV cache (allocated at start, held to the end) plus the transient memory
of one step, split by how it adds up when steps share a forward (`StepMemory`): the forward's
per-row activations (summed over the requests in one batched forward), one request's attention
temporaries (requests attend one after another) and its output head and sampler (requests
sample one after another). Running requests need the SUM of their caches plus what one tick
of the engine can hold at once (`tick_bytes`): with `max_batch` 1 (steps one at a time) the
largest single step; with batching the `max_batch` largest forward parts together, plus the
largest attention and sampling parts. That must fit the budget. What it is not: the thing that
runs steps (the engine) or that measures memory (`memory.py`).

Invariants: `reserved_bytes <= budget_bytes` whenever a request runs alone or with others it was
admitted beside; at most `max_running` run and `max_queued` wait; waiting requests start in
arrival order (no overtaking, so a large request cannot starve); `next_batch` hands out every
running request once per round (round robin, `max_batch` at a time), passing over the ones the
engine holds back (paced streams ahead of playback).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, Literal, Protocol, TypeVar

from packcache_core.pipeline import StepMemory
from server.errors import InvalidRequest, Overloaded


class Schedulable(Protocol):
    @property
    def cache_bytes(self) -> int: ...

    @property
    def decoder_bytes(self) -> int:
        """The stream decoder's state, held for the request's life like its cache."""
        ...

    @property
    def step_memory(self) -> StepMemory: ...


J = TypeVar("J", bound=Schedulable)


def tick_bytes(steps: list[StepMemory], max_batch: int = 1) -> int:
    """Transient memory of one engine tick over requests with these steps, at most.

    Steps one at a time (`max_batch` 1): the largest step alone. Batched: any `max_batch` of
    them may share a forward, so their per-row activations coexist; attention temporaries and
    the sampler's exist for one request at a time."""
    if not steps:
        return 0
    if max_batch == 1:
        return max(s.alone for s in steps)
    rows = sorted((s.rows for s in steps), reverse=True)[:max_batch]
    return sum(rows) + max(s.attention for s in steps) + max(s.sample for s in steps)


def reservation(jobs: Iterable[Schedulable], max_batch: int = 1, decode_bytes: int = 0) -> int:
    """Memory a set of running requests needs together: all caches and stream decoders' state,
    plus one tick's worth: its steps' temporaries or, after them, one frame's decode
    (`decode_bytes`, measured at warm-up), whichever is larger."""
    jobs = list(jobs)
    steps = [j.step_memory for j in jobs]
    transient = max(tick_bytes(steps, max_batch), decode_bytes if jobs else 0)
    return sum(j.cache_bytes + j.decoder_bytes for j in jobs) + transient


class FifoScheduler(Generic[J]):
    def __init__(
        self, budget_bytes: int, max_running: int, max_queued: int, max_batch: int = 1
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.budget_bytes = budget_bytes
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_batch = max_batch  # requests stepped together in one tick (1: one at a time)
        self.decode_bytes = 0  # one frame's decode peak, once measured (`Engine.set_decode_bytes`)
        self.running: deque[J] = deque()  # the front steps next
        self.waiting: deque[J] = deque()

    @property
    def reserved_bytes(self) -> int:
        return reservation(self.running, self.max_batch, self.decode_bytes)

    @property
    def kv_bytes(self) -> int:
        return sum(j.cache_bytes for j in self.running)

    def fits(self, job: J) -> bool:
        """Could `job` start beside the running requests now?"""
        if len(self.running) >= self.max_running:
            return False
        return (
            reservation([*self.running, job], self.max_batch, self.decode_bytes)
            <= self.budget_bytes
        )

    def offer(self, job: J, retry_after: float) -> Literal["start", "wait"]:
        """Start `job` now or queue it; raises if it can never fit or the queue is full."""
        alone = reservation([job], decode_bytes=self.decode_bytes)
        if alone > self.budget_bytes:
            transient = max(job.step_memory.alone, self.decode_bytes)
            raise InvalidRequest(
                f"the request needs {alone} bytes (KV cache {job.cache_bytes} + stream decoder "
                f"{job.decoder_bytes} + activations or one frame's decode {transient}); this "
                f"server's memory budget is {self.budget_bytes}; "
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

    def next_batch(self, held: Callable[[J], bool] | None = None) -> list[J]:
        """The running requests to step now: the next `max_batch` in round-robin order.

        A request for which `held` is true (a paced stream ahead of playback) is passed over
        and keeps its place, so it is first in line once it is no longer held; the requests
        stepped go to the back. Empty when every running request is held."""
        ready = (job for job in self.running if held is None or not held(job))
        batch = list(itertools.islice(ready, self.max_batch))
        for job in batch:
            self.running.remove(job)
            self.running.append(job)
        return batch

    def remove(self, job: J) -> None:
        if job in self.running:
            self.running.remove(job)
        elif job in self.waiting:
            self.waiting.remove(job)
