"""Uploaded videos in the core: probing and decoding within limits, and the resampling rule
(sample and hold at the output rate, whole latent frames, the image path's resize)."""

from __future__ import annotations

import io
import random

import av
import numpy as np
import pytest

from packcache_core.video.input import (
    VideoInputError,
    VideoLimits,
    clip_frames,
    decode_clip,
    is_video,
    probe_video,
)

LIMITS = VideoLimits(max_bytes=10**8, max_pixels=10**7, max_frames=1000, max_seconds=60.0)
LEVELS = (0, 160, 40, 240, 90, 200, 20, 120)  # grey level of source frame i % 8


def clip(frames: int, fps: int, width: int = 64, height: int = 32) -> bytes:
    """Frames of flat grey levels (so a decoded frame tells which source frame it shows)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "0"}
        for i in range(frames):
            rgb = np.full((height, width, 3), LEVELS[i % len(LEVELS)], np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def shown(frames: object) -> list[int]:
    """Index into LEVELS of each decoded frame (by its mean grey level)."""
    means = frames.float().mean(dim=(1, 2, 3)).tolist()  # type: ignore[attr-defined]
    return [min(range(len(LEVELS)), key=lambda k: abs(LEVELS[k] - m)) for m in means]


def test_a_faster_source_is_sampled_and_a_slower_one_held() -> None:
    fast = decode_clip(clip(24, 24), LIMITS, 12, (64, 32), 100)  # 1 s: 12 frames -> 9 kept
    assert fast.shape == (9, 32, 64, 3)
    assert shown(fast) == [(2 * k) % 8 for k in range(9)]  # every other source frame
    slow = decode_clip(clip(6, 6), LIMITS, 12, (64, 32), 100)  # 1 s: each frame twice
    assert shown(slow) == [0, 0, 1, 1, 2, 2, 3, 3, 4]


def test_size_and_the_frame_cap() -> None:
    video = decode_clip(clip(24, 24, 128, 96), LIMITS, 12, (32, 32), 5)
    assert video.shape == (5, 32, 32, 3)  # centre-cropped and resized; at most 5 frames
    assert clip_frames(1.0, 12, 100) == 9 and clip_frames(0.05, 12, 100) == 1


def test_limits_are_checked_before_decoding() -> None:
    data = clip(24, 24)
    for limits, field in (
        (VideoLimits(len(data) - 1, 10**7, 1000, 60.0), "max_bytes"),
        (VideoLimits(10**8, 64 * 32 - 1, 1000, 60.0), "max_pixels"),
        (VideoLimits(10**8, 10**7, 23, 60.0), "max_frames"),
        (VideoLimits(10**8, 10**7, 1000, 0.5), "max_seconds"),
    ):
        with pytest.raises(VideoInputError) as e:
            probe_video(data, limits)
        assert e.value.limit == field


def test_damaged_files_raise_only_video_input_errors() -> None:
    """Truncated, byte-flipped and overwritten files: a refusal each, never another error."""
    bases = [clip(16, 24), clip(8, 12, 32, 32)]
    rng = random.Random(0)
    for _ in range(60):
        data = bytearray(rng.choice(bases))
        cut = rng.randrange(len(data))
        kind = rng.randrange(3)
        if kind == 0:
            data = data[:cut]
        elif kind == 1:
            for _ in range(rng.randrange(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data[cut : cut + 300] = rng.randbytes(300)
        try:
            probe_video(bytes(data), LIMITS)
            decode_clip(bytes(data), LIMITS, 12, (32, 32), 50)
        except VideoInputError:
            pass


def test_is_video_by_its_first_bytes() -> None:
    assert is_video(clip(2, 12)) and not is_video(b"\x89PNG\r\n\x1a\n" + bytes(32))
