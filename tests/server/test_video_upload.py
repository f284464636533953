"""Continuing an uploaded video through the official `openai` SDK, unmodified, against a real
server: `videos.extend(video=open(...))` and an MP4 as `input_reference` on `videos.create`.

The returned video's first frames must be the video tokenizer's round trip of the upload as
the server decodes it (only the MP4 codec between them), and it must be longer by the asked
seconds; the round trip's own PSNR against the upload is printed (`pytest -s`).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import openai
import pytest
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from packcache_core.layout import T_STRIDE
from packcache_core.video import load_video_tokenizer
from packcache_core.video.input import decode_clip
from tests.server.conftest import LiveServer, png_bytes, wait_until

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


def test_sdk_create_continues_an_mp4_input_reference(
    client: openai.OpenAI, server: LiveServer, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_clip(frames=12, fps=12))
    with path.open("rb") as f:
        video = client.videos.create(
            prompt="the pattern keeps drifting", input_reference=f, seconds="4", size="64x64"
        )
    done = server.wait_done(video.id, timeout=300)
    assert done["status"] == "completed" and done["size"] == "64x64", done
    result = mp4_frames(client.videos.download_content(video.id).read())
    given = round_trip(server, path.read_bytes(), (64, 64))
    assert psnr(result[: given.shape[0]], given) >= PSNR_FLOOR_DB
    assert (result.shape[0] - given.shape[0]) / server.settings.fps == 4.0


# --- bad input: each a 4xx naming the field and the limit, nothing kept, the server fine ----

STRICT = {  # a server with tight input limits, so small files cross them
    "max_upload_bytes": 150_000,
    "max_input_video_pixels": 160 * 96,
    "max_input_video_frames": 60,
    "max_input_video_seconds": 4.0,
}


def audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buf.getvalue()


def zero_frames() -> bytes:
    """An AVI whose video stream has no frame at all."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    return buf.getvalue()


def noise_clip(frames: int, fps: int = 24, width: int = 128, height: int = 64) -> bytes:
    """Noise compresses badly: a file mostly made of frame data, whatever its middle holds."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def corrupt_middle() -> bytes:
    data = bytearray(noise_clip(24))
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(1).bytes(4000)
    return bytes(data)


BAD: dict[str, tuple[object, int, str]] = {  # case: (file, status, what the message names)
    "not a video": (lambda: b"not a video at all " * 50, 400, "not a video"),
    "an image": (png_bytes, 400, "not a video"),
    "no video stream": (audio_only, 400, "no video stream"),
    "zero frames": (zero_frames, 400, "no frames"),
    "corrupt middle": (corrupt_middle, 400, "damaged"),
    "over the byte limit": (lambda: noise_clip(45), 413, "max_upload_bytes"),
    "over the pixel limit": (
        lambda: mp4_clip(6, width=192, height=128),
        400,
        "max_input_video_pixels",
    ),
    "over the frame limit": (lambda: mp4_clip(72, fps=24), 400, "max_input_video_frames"),
    "over the duration limit": (lambda: mp4_clip(15, fps=3), 400, "max_input_video_seconds"),
}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("strict"), **STRICT).start()
    yield live
    live.stop()


def jobs_on_disk(server: LiveServer) -> list[str]:
    root = server.settings.data_dir
    return sorted(p.name for p in root.iterdir() if p.name.startswith("video_"))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_uploads_are_refused_and_leave_nothing(strict: LiveServer, case: str) -> None:
    make, status, named = BAD[case]
    data = make()  # type: ignore[operator]
    if case == "over the byte limit":
        assert len(data) > STRICT["max_upload_bytes"]
    form = {"prompt": "on", "seconds": "1"}
    for url, field in (("/v1/videos/extensions", "video"), ("/v1/videos", "input_reference")):
        if field == "input_reference" and case in ("not a video", "an image"):
            continue  # not a video by its first bytes: refused as an image would be
        before = jobs_on_disk(strict)
        response = strict.client.post(url, data=form, files={field: ("clip.mp4", data)})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == field and named in error["message"], error
        assert jobs_on_disk(strict) == before
        assert strict.runtime.decodes.used == 0 and strict.runtime.decodes.decoding == 0
        assert strict.client.get("/v1/videos").json()["data"] == []
    assert strict.client.get("/ready").status_code == 200


def test_the_strict_server_still_continues_a_good_upload(strict: LiveServer) -> None:
    response = strict.client.post(
        "/v1/videos/extensions",
        data={"prompt": "on", "latent_frames": "1"},
        files={"video": ("clip.mp4", mp4_clip(12))},
    )
    assert response.status_code == 200, response.text
    video = strict.wait_done(response.json()["id"])
    # 12 frames at 24 fps: 6 at 12 fps, one whole latent frame after the first, then one new
    assert video["status"] == "completed" and video["latent_frames"] == 2 + 1, video


# --- the websocket: an uploaded video inline, and a completed video extended, both streamed --


def stream_all(server: LiveServer, request: dict[str, object]) -> tuple[list[dict], int]:
    """Every JSON message of one streamed request, and the RGB frames that came."""
    messages, frames = [], 0
    with connect(server.ws_url, max_size=None) as ws:
        ws.send(json.dumps({"type": "generate", **request}))
        while True:
            try:
                data = ws.recv(timeout=120)
            except ConnectionClosed:
                break
            if isinstance(data, bytes):
                frames += 1
            else:
                messages.append(json.loads(data))
    return messages, frames


def test_websocket_continues_an_inline_mp4(server: LiveServer) -> None:
    clip = base64.b64encode(mp4_clip(frames=12, fps=12)).decode()
    messages, frames = stream_all(
        server, {"prompt": "on", "image": clip, "latent_frames": 2, "size": "64x64", "steps": 2}
    )
    assert messages[-1]["type"] == "completed", messages[-1]
    assert frames == 1 + 4 * 2 + 4 * 2  # the clip's 9 frames, then two new latent frames
    # extended in turn (by id): its record replays, the given frames still given (clean)
    source = messages[-1]["id"]
    body = {"video": {"id": source}, "prompt": "on", "latent_frames": 1}
    response = server.client.post("/v1/videos/extensions", json=body)
    assert response.status_code == 200, response.text
    video = server.wait_done(response.json()["id"])
    assert video["status"] == "completed" and video["latent_frames"] == 3 + 2 + 1, video
    files = server.runtime.files
    before, after = files.frames(source).read().codes, files.frames(video["id"]).read().codes
    assert all(torch.equal(a, b) for a, b in zip(before, after[:4], strict=True))
    assert json.loads(files.request(video["id"]).read_text())["given_frames"] == 2


def test_websocket_streams_an_extension_of_a_completed_video(server: LiveServer) -> None:
    source = server.create(latent_frames=2, steps=2)
    video = server.wait_done(source.json()["id"])
    request = {"prompt": "on", "extend": video["id"], "latent_frames": 2}
    messages, frames = stream_all(server, request)
    assert messages[-1]["type"] == "completed", messages[-1]
    assert frames == 1 + 4 * 3  # the source's 5 frames, then two new latent frames
    refused, _ = stream_all(server, {**request, "size": "64x64"})
    assert refused[-1]["type"] == "error" and refused[-1]["error"]["param"] == "size"


def test_an_upload_job_resumes_after_a_restart(tmp_path: Path) -> None:
    """The given frames are in the job's record: a server that stops mid-video leaves it
    resumable, and the next one completes it with the same given frames."""
    clip = base64.b64encode(mp4_clip(frames=12, fps=12)).decode()
    request = {"prompt": "on", "image": clip, "latent_frames": 12, "size": "64x64", "steps": 1}
    first = LiveServer(tmp_path).start()
    try:
        with connect(first.ws_url, max_size=None) as ws:
            ws.send(json.dumps({"type": "generate", "realtime": True, **request}))
            video_id = json.loads(ws.recv(timeout=60))["id"]
            wait_until(lambda: first.runtime.files.frames(video_id).count() >= 3, timeout=60)
            assert first.runtime.require_engine().job_ids() == [video_id]  # still running
            given = first.runtime.files.frames(video_id).read().codes[:2]
            first.stop()
    finally:
        first.stop()
    second = LiveServer(tmp_path).start()
    try:
        video = second.wait_done(video_id, timeout=120)
        assert video["status"] == "completed" and video["latent_frames"] == 1 + 2 + 12, video
        again = second.runtime.files.frames(video_id).read().codes
        assert all(torch.equal(a, b) for a, b in zip(again[:2], given, strict=True))
        assert len(again) == 2 + 12  # the given frames, then every generated one
    finally:
        second.stop()


def test_an_upload_too_long_for_the_video_limit_names_the_field(strict: LiveServer) -> None:
    most = strict.settings.max_bounded_latent_frames
    form = {"prompt": "on", "latent_frames": str(most - 2)}  # room for 2 of the clip's 3
    response = strict.client.post(
        "/v1/videos/extensions", data=form, files={"video": ("clip.mp4", mp4_clip(24))}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "video" and f"2 to {most}" in error["message"], error
    assert jobs_on_disk(strict) == [] and strict.runtime.decodes.used == 0
