"""Room to decode uploaded images and videos: at most `max_decoding` at once, within a memory
budget.

What it is: `DecodeGate`, which admits an input's decode by its estimated memory (an image's
`packcache_core.image.decode_bytes`, a video's `packcache_core.video.input.decode_bytes`, from
the header) in arrival order, and `Permit`, one admitted input's share: the estimate while it
decodes, then the decoded RGB image's (or video clip's) own bytes until the caller is done with
it (the engine has taken its pixels). A request that finds no
room within `wait_s` gets `Overloaded` (429 with Retry-After). What it is not: the per-image
limit (checked before anything waits, in `params.py`) or the decoder.

Invariants: the bytes counted never exceed the budget, and an image's share is given back only
once its decoding thread has ended, even when the request that asked for it went away; after
large decodes, freed heap memory goes back to the operating system.
All methods run on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from PIL import Image

from packcache_core.host import release_freed_blocks
from packcache_core.image import pixel_bytes
from packcache_core.video.input import Clip
from server.errors import Overloaded

TRIM_AFTER_BYTES = 64 << 20  # freed this much since the last trim: hand it back to the kernel
D = TypeVar("D", Image.Image, Clip)


Decoded = Image.Image | Clip  # an input image, or an input video's frames


def held_bytes(decoded: Decoded) -> int:
    """Memory a decoded input holds until the engine has taken it."""
    if isinstance(decoded, Clip):
        return decoded.nbytes
    return decoded.width * decoded.height * pixel_bytes(decoded.mode)


class Permit:
    """One input's share of the gate (a decode slot and `charge` bytes); `decode` runs the
    decoder in a thread."""

    def __init__(self, gate: DecodeGate, charge: int) -> None:
        self.gate, self.charge = gate, charge
        self.decoding = True  # holds one of the gate's decode slots
        self.image: Decoded | None = None
        self.done = False  # the caller left
        self._job: asyncio.Future[Any] | None = None

    async def decode(self, work: Callable[[], D]) -> D:
        """`work()` in a thread; its memory stays counted until the thread ends, however the
        caller ends."""
        self._job = asyncio.ensure_future(asyncio.to_thread(work))
        self._job.add_done_callback(self._decoded)
        return await asyncio.shield(self._job)

    def _decoded(self, job: asyncio.Future[Any]) -> None:
        self._end_decoding()
        failed = job.cancelled() or job.exception() is not None
        self.image = None if failed else job.result()
        if self.done:  # nobody will use it
            self._free()
        elif self.image is not None:
            self._settle(held_bytes(self.image))
        else:
            self._settle(0)

    def _end_decoding(self) -> None:
        if self.decoding:
            self.decoding = False
            self.gate.decoding -= 1

    def _settle(self, charge: int) -> None:
        self.gate.release(self.charge - charge)
        self.charge = charge

    def _free(self) -> None:
        if self.image is not None:
            self.image.close()  # the pixels, now, whoever still refers to the image
        self._settle(0)

    def close(self) -> None:
        """The caller is done: free the image and the share (once its thread has ended)."""
        self.done = True
        if self._job is not None and not self._job.done():
            return  # `_decoded` frees them
        self._end_decoding()
        self._free()


class DecodeGate:
    """Admits decodes in arrival order while fewer than `max_decoding` run and their bytes fit
    `budget_bytes`."""

    def __init__(self, budget_bytes: int, max_decoding: int, wait_s: float) -> None:
        self.budget_bytes, self.max_decoding, self.wait_s = budget_bytes, max_decoding, wait_s
        self.used = 0  # bytes counted now
        self.decoding = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._freed = 0  # bytes given back since the last trim
        self._trimming: asyncio.Future[bool] | None = None

    def _fits(self, charge: int) -> bool:
        return self.decoding < self.max_decoding and self.used + charge <= self.budget_bytes

    def _take(self, charge: int) -> None:
        self.used += charge
        self.decoding += 1

    @asynccontextmanager
    async def admit(self, charge: int) -> AsyncIterator[Permit]:
        """Wait (in order) for room for `charge` bytes; the permit is closed on exit.

        Raises:
            Overloaded: no room within `wait_s`.
        """
        assert charge <= self.budget_bytes, "the per-image limit keeps every image within"
        await self._wait(charge)
        permit = Permit(self, charge)
        try:
            yield permit
        finally:
            permit.close()

    async def _wait(self, charge: int) -> None:
        if not self._waiting and self._fits(charge):
            self._take(charge)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((charge, turn))
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_s)
        except BaseException as e:  # timed out, or the request went away
            if turn.done():  # granted meanwhile: give it back
                self.decoding -= 1
                self.release(charge)
            else:
                self._waiting.remove((charge, turn))
                turn.cancel()
                self._grant()  # the next in line may fit now
            if isinstance(e, TimeoutError):
                raise Overloaded(
                    f"the server is decoding other images (at most {self.max_decoding} at "
                    f"once, {self.budget_bytes >> 20} MiB together); retry shortly",
                    code="decoder_busy",
                    retry_after=self.wait_s,
                ) from e
            raise

    def _grant(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            charge, turn = self._waiting.popleft()
            self._take(charge)
            turn.set_result(None)

    def release(self, charge: int) -> None:
        """`charge` bytes are free again; after large decodes, hand freed heap back."""
        if charge <= 0:
            self._grant()
            return
        self.used -= charge
        self._freed += charge
        self._grant()
        if self._freed >= TRIM_AFTER_BYTES and self._trimming is None:
            self._freed = 0
            self._trimming = asyncio.ensure_future(asyncio.to_thread(release_freed_blocks))
            self._trimming.add_done_callback(lambda _: setattr(self, "_trimming", None))
