"""Continuing an uploaded video through the official `openai` SDK, unmodified, against a real
server: `videos.extend(video=open(...))` and an MP4 as `input_reference` on `videos.create`.

The returned video's first frames must be the video tokenizer's round trip of the upload as
the server decodes it (only the MP4 codec between them), and it must be longer by the asked
seconds; the round trip's own PSNR against the upload is printed (`pytest -s`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import openai
import pytest
import torch

from packcache_core.layout import T_STRIDE
from packcache_core.video import load_video_tokenizer
from packcache_core.video.input import decode_clip
from tests.server.conftest import LiveServer

PSNR_FLOOR_DB = 35.0


def mp4_clip(frames: int = 24, fps: int = 24, width: int = 128, height: int = 64) -> bytes:
    """A smooth pattern drifting right: what a camera pan gives a tokenizer."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        x, y = np.meshgrid(np.arange(width), np.arange(height))
        for i in range(frames):
            rgb = np.stack(
                [
                    128 + 100 * np.sin((x - 2 * i) / 9.0),
                    128 + 90 * np.cos(y / 7.0 + i / 12.0),
                    np.full_like(x, 60 + 4 * i),
                ],
                axis=-1,
            ).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def mp4_frames(data: bytes) -> torch.Tensor:
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    return torch.from_numpy(np.stack(frames))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def round_trip(server: LiveServer, upload: bytes, size: tuple[int, int]) -> torch.Tensor:
    """The upload decoded as the server decodes it, through the server's tokenizer and back."""
    s = server.settings
    clip = decode_clip(upload, s.video_limits, s.fps, size, 10_000)
    tokenizer = load_video_tokenizer(server.runtime.engine.pipeline.video_tokenizer.name)
    codes = tokenizer.encode_video(clip)
    decoded = tokenizer.decode(codes)
    print(f"\ntokenizer round trip against the upload: {psnr(decoded, clip):.2f} dB PSNR")
    return decoded


def test_sdk_extends_an_uploaded_mp4(
    client: openai.OpenAI, server: LiveServer, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_clip())
    with path.open("rb") as f:
        video = client.videos.extend(video=f, prompt="the pattern keeps drifting", seconds="4")
    done = server.wait_done(video.id, timeout=300)
    assert done["status"] == "completed", done
    result = mp4_frames(client.videos.download_content(video.id).read())
    W, H = (int(v) for v in done["size"].split("x"))
    given = round_trip(server, path.read_bytes(), (W, H))
    n = given.shape[0]
    assert n == 1 + T_STRIDE * 2  # 12 frames at 12 fps: 3 whole latent frames
    quality = psnr(result[:n], given)
    print(f"returned video's first {n} frames against the round trip: {quality:.2f} dB")
    assert quality >= PSNR_FLOOR_DB
    assert (result.shape[0] - n) / server.settings.fps == 4.0
    assert done["frames"] == result.shape[0]
    request = server.runtime.files.request(video.id).read_text()
    assert '"given_frames": 2' in request
