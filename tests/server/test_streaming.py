"""What a slow websocket client gets: `StreamSender` drops the oldest frames, never the rest."""

from __future__ import annotations

import asyncio
import json

import torch

from server.api.streaming import StreamSender
from server.engine.events import Finished, Frame, Progress, Queued, RequestStats, Started

STATS = RequestStats(0, 1, 2, 2, 9, 3, 4, 0.5, 1.0, "packcache", 10, 20, 30)


def frames(index: int, n: int = 4) -> Frame:
    """The RGB frames of generated latent frame `1 + index // 4`, with its statistics."""
    latent = 1 + index // 4
    rgb = torch.zeros(n, 16, 16, 3, dtype=torch.uint8)
    return Frame(index, latent, rgb, latency_s=0.5 * latent, cache_bytes_used=100 * latent)


def test_slow_client_loses_oldest_frames_only() -> None:
    sent: list[str | bytes] = []

    async def slow_text(text: str) -> None:
        await asyncio.sleep(0.01)
        sent.append(text)

    async def slow_bytes(data: bytes) -> None:
        await asyncio.sleep(0.01)
        sent.append(data)

    async def scenario() -> StreamSender:
        sender = StreamSender(slow_text, slow_bytes, "video_x", max_frames=3)
        task = asyncio.create_task(sender.run())
        sender.push(Queued(0))
        sender.push(Started(16, 16, 12, 6, 21, "packcache", 10))
        for i in range(5):  # 20 frames at once, far faster than the client reads
            sender.push(Progress(i, 5))
            sender.push(frames(1 + 4 * i))
            assert sender.queued <= 2 * 3 + 4 + (i + 1)  # bounded (+1 latent_frame per latent)
        sender.push(Finished("completed", stats=STATS))
        assert await asyncio.wait_for(task, 10) == Finished("completed", stats=STATS)
        return sender

    sender = asyncio.run(scenario())
    messages = [json.loads(m) for m in sent if isinstance(m, str)]
    kinds = [m["type"] for m in messages]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "completed"
    indices = [m["index"] for m in messages if m["type"] == "frame"]
    assert indices == sorted(indices) and indices[-1] == 20  # newest kept, in order
    assert sender.dropped == 20 - len(indices) > 0
    done = messages[-1]
    assert done["dropped"] == sender.dropped and done["frames_sent"] == len(indices)
    assert sum(isinstance(m, bytes) for m in sent) == len(indices)  # one image per header
    latents = [m for m in messages if m["type"] == "latent_frame"]  # never dropped
    assert [(m["latent_index"], m["cache_bytes_used"]) for m in latents] == [
        (k, 100 * k) for k in range(1, 6)
    ]


def test_fast_client_gets_everything_and_progress_coalesces() -> None:
    sent: list[str] = []

    async def text(t: str) -> None:
        sent.append(t)

    async def data(b: bytes) -> None:
        pass

    async def scenario() -> StreamSender:
        sender = StreamSender(text, data, "video_y", max_frames=8, frame_format="png")
        for i in range(3):
            sender.push(Progress(i, 3))  # consecutive, unsent: only the newest stays
        sender.push(frames(1))
        sender.push(Finished("cancelled", "cancelled", "cancelled by the client", STATS))
        await sender.run()
        return sender

    sender = asyncio.run(scenario())
    messages = [json.loads(m) for m in sent]
    kinds = [m["type"] for m in messages]
    assert kinds == ["progress"] + ["frame"] * 4 + ["latent_frame", "error"]
    assert messages[0]["steps_done"] == 2 and sender.dropped == 0
    assert messages[1]["format"] == "png"
    assert messages[-1]["error"]["code"] == "cancelled"
