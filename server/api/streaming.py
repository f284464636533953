"""Sending one request's events down a websocket without ever buffering without bound.

What it is: `StreamSender`, a per-connection send queue fed on the event loop (the engine's
events arrive through `call_soon_threadsafe`) and drained by one task that encodes frames
(JPEG/PNG, in a worker thread) and sends them. What it is not: the route (it reads the client
and decides close codes) or the engine.

Backpressure: at most `max_frames` RGB frames wait; when another arrives, the OLDEST waiting
frame is dropped and counted, so a slow client sees the newest frames with gaps in `index`,
never a growing delay. `progress` messages coalesce (a newer one replaces an unsent one);
`queued`, `started`, `latent_frame` (a few numbers per generated latent frame), the answers to
control messages (`prompt_changed`, `rejected`) and the final message are never dropped. So
the queue holds at most `2 * max_frames + 4` items plus one small record per latent frame and
per control message, however slow the client (an open-ended stream is bounded by
`max_stream_s`; a client that stops reading is closed by the keep-alive pings).

Flow control (`window`, opt-in by the request's `frame_window`): on loopback or a fast link the
kernel's socket buffers absorb a whole stream, so a queue here never fills and a slow reader
reads every message late. With a window, at most `window` frames are in flight that the
client has not acknowledged (`ack`, cumulative by frame index); a frame without room waits in
the queue (so the bound above drops the oldest) and `progress` merges behind it, while the
messages that are never dropped overtake it.
When only such frames stand before the final message, they wait at most `final_wait_s` for
acknowledgements, then are dropped, so the final message always goes out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from pydantic import BaseModel

from packcache_core.video.output import encode_frame
from server.api.schemas import (
    CompletedMessage,
    ErrorDetail,
    ErrorMessage,
    FrameMessage,
    LatentFrameMessage,
    ProgressMessage,
    PromptChangedMessage,
    QueuedMessage,
    StartedMessage,
)
from server.engine.events import (
    Event,
    Finished,
    Frame,
    JobListener,
    Progress,
    PromptChanged,
    Queued,
    Started,
)


@dataclass(frozen=True, eq=False)  # identity: the queue removes a frame by identity
class _RgbFrame:
    index: int
    latent_index: int
    rgb: torch.Tensor  # (H, W, 3) uint8


@dataclass(frozen=True)
class _LatentStats:
    """What a `latent_frame` message says: a few numbers, never pixels, so it is never dropped."""

    latent_index: int
    latency_s: float
    cache_bytes_used: int


_Item = (
    Queued | Started | Progress | PromptChanged | Finished | _RgbFrame | _LatentStats | BaseModel
)


class StreamSender:
    def __init__(
        self,
        send_text: Callable[[str], Awaitable[None]],
        send_bytes: Callable[[bytes], Awaitable[None]],
        job_id: str,
        max_frames: int,
        frame_format: Literal["jpeg", "png"] = "jpeg",
        window: int | None = None,
        final_wait_s: float = 20.0,
    ) -> None:
        self._send_text, self._send_bytes = send_text, send_bytes
        self.job_id, self.max_frames, self.frame_format = job_id, max_frames, frame_format
        self.window, self.final_wait_s = window, final_wait_s
        self._in_flight: deque[int] = deque()  # sent, unacknowledged frame indexes (window)
        self._items: deque[_Item] = deque()
        self._pending_frames = 0
        self._wake = asyncio.Event()
        self._closed = False
        self.frames_sent = 0
        self.dropped = 0

    def listener(self, loop: asyncio.AbstractEventLoop) -> JobListener:
        """A listener for the engine thread that hands each event to `push` on `loop`, until
        the sender is closed (the job may run on after its client left)."""

        def forward(event: Event) -> None:
            if not self._closed:
                loop.call_soon_threadsafe(self.push, event)

        return forward

    def close(self) -> None:
        """Stop queueing (the connection is done with); later events are ignored."""
        self._closed = True
        self._items.clear()
        self._pending_frames = 0

    @property
    def queued(self) -> int:
        return len(self._items)

    def push(self, event: Event) -> None:
        """Queue an event (on the event loop); frames beyond the bound drop the oldest."""
        if self._closed:
            return
        if isinstance(event, Frame):
            for i, rgb in enumerate(event.rgb):
                self._push_frame(_RgbFrame(event.index + i, event.latent_index, rgb))
            if event.latency_s is not None and event.cache_bytes_used is not None:
                stats = _LatentStats(event.latent_index, event.latency_s, event.cache_bytes_used)
                self._items.append(stats)
        elif isinstance(event, Progress):  # merged: the newest replaces one not yet sent
            self._remove_last(Progress)
            self._items.append(event)
        else:
            self._items.append(event)
        self._wake.set()

    def note(self, message: BaseModel) -> None:
        """Queue a message the route made (e.g. `rejected`): it goes out in order with
        the events, never between a frame's header and its image."""
        if not self._closed:
            self._items.append(message)
            self._wake.set()

    def ack(self, index: int) -> None:
        """The client has taken every frame up to `index` (flow control)."""
        while self._in_flight and self._in_flight[0] <= index:
            self._in_flight.popleft()
        self._wake.set()

    def _remove_last(self, kind: type) -> None:
        for i in range(len(self._items) - 1, -1, -1):
            if isinstance(self._items[i], kind):
                del self._items[i]
                return

    def _push_frame(self, frame: _RgbFrame) -> None:
        if self._pending_frames >= self.max_frames:
            oldest = next(i for i in self._items if isinstance(i, _RgbFrame))
            self._items.remove(oldest)
            self._pending_frames -= 1
            self.dropped += 1
        self._items.append(frame)
        self._pending_frames += 1

    async def run(self) -> Finished:
        """Send until the request's final event has been sent; returns that event."""
        while True:
            item = self._take()
            if item is None:
                self._wake.clear()
                await self._wait()
                continue
            if isinstance(item, _RgbFrame):
                await self._send_frame(item)
                continue
            await self._send_text(self._message(item).model_dump_json())
            if isinstance(item, Finished):
                return item

    def _take(self) -> _Item | None:
        """The next item to send: the first in the queue, or, when the window is full and it
        is a frame, the first message behind it that is never dropped (not a frame, not
        `progress`, which merges while it waits, not the final message); None: nothing can
        go now."""
        if not self._items:
            return None
        room = self.window is None or len(self._in_flight) < self.window
        if room or not isinstance(self._items[0], _RgbFrame):
            item = self._items.popleft()
            if isinstance(item, _RgbFrame):
                self._pending_frames -= 1
            return item
        for item in self._items:
            if not isinstance(item, _RgbFrame | Progress | Finished):
                self._items.remove(item)
                return item
        return None

    async def _wait(self) -> None:
        """Until something is queued or acknowledged; frames that hold back the final
        message get `final_wait_s` for acknowledgements, then are dropped."""
        if not any(isinstance(item, Finished) for item in self._items):
            await self._wake.wait()
            return
        try:
            await asyncio.wait_for(self._wake.wait(), self.final_wait_s)
        except TimeoutError:
            waiting = [i for i in self._items if isinstance(i, _RgbFrame)]
            for frame in waiting:
                self._items.remove(frame)
            self._pending_frames -= len(waiting)
            self.dropped += len(waiting)

    async def _send_frame(self, frame: _RgbFrame) -> None:
        data = await asyncio.to_thread(encode_frame, frame.rgb, self.frame_format)
        header = FrameMessage(
            id=self.job_id,
            index=frame.index,
            latent_index=frame.latent_index,
            format=self.frame_format,
            bytes=len(data),
        )
        await self._send_text(header.model_dump_json())
        await self._send_bytes(data)
        self.frames_sent += 1
        if self.window is not None:
            self._in_flight.append(frame.index)

    def _message(self, item: _Item) -> BaseModel:
        job_id = self.job_id
        if isinstance(item, BaseModel):
            return item
        assert not isinstance(item, _RgbFrame), "frames are sent by `_send_frame`"
        if isinstance(item, PromptChanged):
            return PromptChangedMessage(id=job_id, **asdict(item))
        if isinstance(item, _LatentStats):
            return LatentFrameMessage(id=job_id, **asdict(item))
        if isinstance(item, Queued):
            return QueuedMessage(id=job_id, position=item.position)
        if isinstance(item, Started):
            return StartedMessage(id=job_id, **asdict(item))
        if isinstance(item, Progress):
            return ProgressMessage(
                id=job_id,
                progress=item.percent,
                steps_done=item.steps_done,
                total_steps=item.total_steps,
                frames_sent=self.frames_sent,
                dropped=self.dropped,
            )
        if item.status == "completed" and item.stats is not None:
            return CompletedMessage(
                id=job_id,
                stats=item.stats,
                frames_sent=self.frames_sent,
                dropped=self.dropped,
                url=f"/v1/videos/{job_id}/content",
            )
        kind = "invalid_request_error" if item.status == "cancelled" else "server_error"
        detail = ErrorDetail(
            message=item.message or item.status, type=kind, param=None, code=item.code or "failed"
        )
        return ErrorMessage(id=job_id, error=detail)
