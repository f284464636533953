"""MP4 writing (read back with PyAV) and JPEG/PNG frames (read back with Pillow)."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from packcache_core.video import load_video_tokenizer
from packcache_core.video.output import Mp4Writer, encode_frame, pick_codec, thumbnail, write_mp4


def _ramp_frames(n: int, h: int = 48, w: int = 64) -> torch.Tensor:
    """uint8 (n, h, w, 3): frame i is flat grey 20 + 20 i."""
    levels = (20 + 20 * torch.arange(n)).to(torch.uint8)
    return levels.view(n, 1, 1, 1).expand(n, h, w, 3).contiguous()


def _read(path: Path) -> tuple[list[np.ndarray], str, Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name, Fraction(stream.average_rate)


def test_libx264_is_available_and_preferred() -> None:
    # The finding the module docstring relies on; a PyAV build without it uses mpeg4.
    assert "libx264" in av.codec.codecs_available
    assert pick_codec() == "libx264"
    assert pick_codec(("no-such-codec", "mpeg4")) == "mpeg4"
    with pytest.raises(RuntimeError, match="none of the video encoders"):
        pick_codec(("no-such-codec",))


@pytest.mark.parametrize(("codec", "decoded_as"), [("libx264", "h264"), ("mpeg4", "mpeg4")])
def test_write_mp4_reads_back(tmp_path: Path, codec: str, decoded_as: str) -> None:
    path = tmp_path / "clip.mp4"
    assert write_mp4(_ramp_frames(9), path, fps=12, codec=codec) == 9
    frames, name, rate = _read(path)
    assert name == decoded_as and rate == 12
    assert len(frames) == 9 and frames[0].shape == (48, 64, 3)
    means = [float(f.mean()) for f in frames]
    assert np.allclose(means, 20 + 20 * np.arange(9), atol=3)  # right frames, right order


def test_incremental_writer_like_a_stream_decoder(tmp_path: Path) -> None:
    path = tmp_path / "stream.mp4"
    frames = _ramp_frames(13, h=32, w=96)
    with Mp4Writer(path, fps=Fraction(24000, 1001)) as writer:
        writer.write(frames[0])  # the conditioning frame: one (H, W, 3) frame
        for start in range(1, 13, 4):
            writer.write(frames[start : start + 4].numpy())  # then 4 per latent frame
    decoded, _, rate = _read(path)
    assert writer.frames_written == 13 and len(decoded) == 13
    assert decoded[0].shape == (32, 96, 3) and rate == Fraction(24000, 1001)


def test_write_mp4_from_an_iterator(tmp_path: Path) -> None:
    def batches() -> Iterator[torch.Tensor]:
        yield _ramp_frames(1)
        yield _ramp_frames(4)

    assert write_mp4(batches(), tmp_path / "it.mp4", fps=8) == 5
    assert len(_read(tmp_path / "it.mp4")[0]) == 5


def test_writer_errors(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="even width and height"),
        Mp4Writer(tmp_path / "a.mp4", 12) as w,
    ):
        w.write(_ramp_frames(2, h=48, w=63))
    with Mp4Writer(tmp_path / "b.mp4", 12) as w:
        w.write(_ramp_frames(2))
        with pytest.raises(ValueError, match="frame size changed"):
            w.write(_ramp_frames(2, h=32))
    with pytest.raises(ValueError, match="closed"):
        w.write(_ramp_frames(1))
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(torch.zeros(2, 48, 64, 3), tmp_path / "c.mp4", fps=12)
    with pytest.raises(ValueError, match="fps"):
        Mp4Writer(tmp_path / "d.mp4", fps=0)


def test_no_frames_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(iter([]), tmp_path / "empty.mp4", fps=12)
    assert not (tmp_path / "empty.mp4").exists()


def test_encode_frame_jpeg_and_png(photo: torch.Tensor) -> None:
    jpeg = Image.open(io.BytesIO(encode_frame(photo, "jpeg", quality=80)))
    assert jpeg.format == "JPEG" and jpeg.size == (384, 256)
    assert np.abs(np.asarray(jpeg).astype(int) - photo.numpy().astype(int)).mean() < 8
    png = Image.open(io.BytesIO(encode_frame(photo, "png")))
    assert png.format == "PNG" and np.array_equal(np.asarray(png), photo.numpy())  # lossless
    with pytest.raises(ValueError, match="format"):
        encode_frame(photo, "gif")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quality"):
        encode_frame(photo, "jpeg", quality=0)
    with pytest.raises(ValueError, match="one frame"):
        encode_frame(_ramp_frames(2), "png")


def test_thumbnail_shrinks_but_never_enlarges(photo: torch.Tensor) -> None:
    thumb = Image.open(io.BytesIO(thumbnail(photo, max_side=128)))
    assert thumb.format == "JPEG" and thumb.size == (128, 85)  # aspect 3:2 kept
    small = Image.open(io.BytesIO(thumbnail(photo[:32, :64], max_side=128)))
    assert small.size == (64, 32)


def _dirty_heap(fill: int) -> None:
    """Leave freed heap blocks of several sizes holding `fill` bytes: what an encoder that
    reads memory it never wrote would then see."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(n) for n in (3000, 4096, 65536, 200_000, 1 << 20) * 40]
    for b, n in zip(blocks, (3000, 4096, 65536, 200_000, 1 << 20) * 40, strict=True):
        ctypes.memset(b, fill, n)
    for b in blocks:
        libc.free(b)


def test_same_frames_same_file_whatever_the_heap_held(tmp_path: Path) -> None:
    """A resumed video is encoded in another process than its uninterrupted twin: the file
    must depend on the frames only. Streams of random `builtin:patch` codes at 64x64, like the
    reliability tests' videos: with x264's mb-tree on, 3 of these 6 gave 2 or 3 files."""
    tokenizer = load_video_tokenizer("builtin:patch")
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, tokenizer.n_codes, (12, 8, 8), generator=g)
        decoder = tokenizer.stream_decoder()
        frames = [decoder.push(c) for c in codes]  # (1, 64, 64, 3), then (4, 64, 64, 3) each
        files = set()
        for fill in (0, 255, 17, 128, 0, 200, 99, 1):
            _dirty_heap(fill)
            with Mp4Writer(tmp_path / "v.mp4", 12) as w:
                for f in frames:
                    w.write(f)
            files.add((tmp_path / "v.mp4").read_bytes())
        assert len(files) == 1, (seed, len(files))
