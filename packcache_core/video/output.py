"""Decoded frames to bytes: MP4 files written as frames arrive, and JPEG/PNG images.

What it is: thin wrappers over PyAV (FFmpeg) and Pillow for uint8 (N, H, W, 3) RGB frames.
What it is not: a muxer for audio, a reader, or a server endpoint.

Codec: H.264 through `libx264`, crf 17, yuv420p, as the Lumos-1 reference's ffmpeg command, with
x264's macroblock-tree rate control off (`mbtree=0`: see `Mp4Writer._open_stream`).
PyAV's wheels bundle FFmpeg with libx264 (checked on PyAV 18.1.0: `libx264` is in
`av.codec.codecs_available` and opens as an encoder). Where a build lacks it, `pick_codec`
falls back to FFmpeg's native `mpeg4` (MPEG-4 Part 2) with the quantiser pinned to 3 through
qmin = qmax (its default rate control spent less than half the bits on a test clip): larger
files, and most browsers will not play it, but every FFmpeg build has it. yuv420p stores chroma
at half resolution, so width and height must be even; our tokenizers emit multiples of 8.

Key invariant: an `Mp4Writer` holds at most one batch of frames; each `write` encodes and
muxes its frames before returning, and `close` flushes the encoder and finalises the file.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np
import torch
from av.container import OutputContainer
from PIL import Image

Frames = torch.Tensor | np.ndarray
CODEC_PREFERENCE = ("libx264", "mpeg4")
H264_CRF = 17  # the reference's `-crf 17`
MPEG4_QUANTISER = 3  # fallback: 2 (best) .. 31
FRAGMENTED_FLAGS = "frag_keyframe+empty_moov+default_base_moof"  # playable while it grows


def pick_codec(preference: tuple[str, ...] = CODEC_PREFERENCE) -> str:
    """The first codec in `preference` that this PyAV build can encode with."""
    for name in preference:
        if name not in av.codec.codecs_available:
            continue
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise RuntimeError(f"none of the video encoders {preference} is available in this PyAV build")


def _as_frames(frames: Frames) -> np.ndarray:
    """uint8 (N, H, W, 3) or (H, W, 3), tensor or array -> contiguous uint8 (N, H, W, 3)."""
    x = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) RGB frames, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)


class Mp4Writer:
    """Writes an MP4 incrementally: `write` frame batches as they come, then `close`.

    Args:
        path: output file; created (or truncated) at construction.
        fps: frame rate (int or Fraction).
        codec: an encoder name; default `pick_codec()`.
        fragmented: a fragmented MP4 (a fragment per key frame, one key frame a second): a
            file cut short (a video without a preset end, a crash) plays up to its last
            whole fragment.
    """

    def __init__(
        self,
        path: str | Path,
        fps: int | Fraction,
        codec: str | None = None,
        fragmented: bool = False,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.codec = codec or pick_codec()
        self.fragmented = fragmented
        self.frames_written = 0
        options = {"movflags": FRAGMENTED_FLAGS} if fragmented else {}
        self._container: OutputContainer | None = av.open(
            str(self.path), mode="w", format="mp4", options=options
        )
        self._stream: av.VideoStream | None = None  # added on the first write: needs H, W
        self._failed = False  # a write raised: the encoder must not be flushed

    def _open_stream(self, container: OutputContainer, height: int, width: int) -> av.VideoStream:
        if height % 2 or width % 2:
            raise ValueError(f"yuv420p needs even width and height, got {width}x{height}")
        stream = container.add_stream(self.codec, rate=self.fps)
        assert isinstance(stream, av.VideoStream), f"{self.codec} is not a video codec"
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if self.fragmented:
            stream.codec_context.gop_size = max(1, round(self.fps))  # a fragment a second
        # One encoder thread, and the colour conversion on one thread (`write`): the same
        # frames must give the same file (a resumed or remixed video must equal its
        # uninterrupted twin frame for frame). Frames here are small; one thread keeps up.
        # x264's macroblock-tree rate control reads memory it never wrote on small frames
        # (64x64 here): the bytes then depend on what the heap held before, so one process's
        # resumed video and another's uninterrupted twin differed from a frame on. Off, the
        # same frames give the same file whatever the heap holds (`tests/core/video`). Its cost,
        # measured on a 37-latent-frame demo pan at 128x64: files 1.44x larger (38.4 vs 26.7 KB)
        # at 1 dB higher PSNR (40.2 vs 39.2), encoding 0.95x the time.
        if self.codec.startswith("libx264"):
            stream.options = {"crf": str(H264_CRF), "threads": "1", "x264-params": "mbtree=0"}
        else:
            stream.options = {
                "qmin": str(MPEG4_QUANTISER),
                "qmax": str(MPEG4_QUANTISER),
                "threads": "1",
            }
        return stream

    def write(self, frames: Frames) -> None:
        """Encodes uint8 (N, H, W, 3) or (H, W, 3) RGB frames; every call has the same H, W."""
        batch = _as_frames(frames)  # (N, H, W, 3)
        container = self._container
        if container is None:
            raise ValueError(f"{self.path}: writer is closed")
        if self._stream is None:
            self._stream = self._open_stream(container, batch.shape[1], batch.shape[2])
        if batch.shape[1:3] != (self._stream.height, self._stream.width):
            raise ValueError(
                f"frame size changed to {batch.shape[2]}x{batch.shape[1]} from "
                f"{self._stream.width}x{self._stream.height}"
            )
        try:
            for rgb in batch:
                # RGB -> YUV here, on one thread: libswscale's threaded conversion (what
                # `encode` would do) gave different pixels from one run to the next.
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame = frame.reformat(format="yuv420p", threads=1)
                frame.pts = self.frames_written  # in 1/fps units, the stream's rate
                container.mux(self._stream.encode(frame))
                self.frames_written += 1
        except BaseException:
            # After a failed mux (e.g. a full disk while writing the header) libav crashes the
            # process on a flush, so `close` must only close.
            self._failed = True
            raise

    def close(self) -> None:
        """Flushes and finalises the file. Idempotent; with no frames written, no file remains.
        After a failed `write` it only closes (the file is then incomplete)."""
        if self._container is None:
            return
        try:
            if self._stream is not None and not self._failed:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None
            if self._stream is None:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_mp4(
    frames: Frames | Iterable[Frames],
    path: str | Path,
    fps: int | Fraction,
    codec: str | None = None,
) -> int:
    """Writes frames (one batch, or an iterable of batches as they are produced) to an MP4.

    Returns the number of frames written; raises ValueError if there were none.
    """
    batches = [frames] if isinstance(frames, torch.Tensor | np.ndarray) else frames
    with Mp4Writer(path, fps, codec) as writer:
        for batch in batches:
            writer.write(batch)
    if writer.frames_written == 0:
        raise ValueError(f"{path}: no frames to write")
    return writer.frames_written


def _as_image(frame: Frames) -> Image.Image:
    x = _as_frames(frame)
    if x.shape[0] != 1:
        raise ValueError(f"expected one frame, got {x.shape[0]}")
    return Image.fromarray(x[0])


def encode_frame(
    frame: Frames, format: Literal["jpeg", "png"] = "jpeg", quality: int = 90
) -> bytes:
    """One uint8 (H, W, 3) RGB frame -> JPEG (at `quality`, 1..95) or lossless PNG bytes."""
    image = _as_image(frame)
    buf = io.BytesIO()
    if format == "jpeg":
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be in [1, 95], got {quality}")
        image.save(buf, format="JPEG", quality=quality)
    elif format == "png":
        image.save(buf, format="PNG")
    else:
        raise ValueError(f"format must be 'jpeg' or 'png', got {format!r}")
    return buf.getvalue()


def thumbnail(frame: Frames, max_side: int = 256, quality: int = 85) -> bytes:
    """A JPEG of `frame` shrunk (never enlarged) so its longer side is at most `max_side`."""
    image = _as_image(frame)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def spritesheet(
    mp4: str | Path, columns: int = 4, tiles: int = 16, tile_width: int = 160, quality: int = 85
) -> bytes:
    """A JPEG grid of up to `tiles` frames of the MP4, evenly spaced from the first to the
    last, each scaled to `tile_width` pixels wide, `columns` per row, in order."""
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{mp4}: no frames")
    n = min(tiles, len(frames))
    picks = [frames[round(i * (len(frames) - 1) / max(1, n - 1))] for i in range(n)]
    h, w = picks[0].shape[:2]
    tile = (tile_width, max(1, round(h * tile_width / w)))
    rows = -(-n // columns)
    sheet = Image.new("RGB", (tile[0] * min(n, columns), tile[1] * rows))
    for i, frame in enumerate(picks):
        image = Image.fromarray(frame).resize(tile, Image.Resampling.LANCZOS)
        sheet.paste(image, ((i % columns) * tile[0], (i // columns) * tile[1]))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
