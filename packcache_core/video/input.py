"""An uploaded video, bounded: probe its header, then decode and resample it to a model's grid.

What it is: `probe_video` (the container and its first video stream read from memory: format,
frame size, duration, frame count where the container states them, each checked against
`VideoLimits` before any frame is decoded) and `decode_clip`, which decodes with PyAV (FFmpeg)
in strict mode and returns the clip the tokenizer encodes: (T, H, W, 3) uint8 at the model's
rate and size, T = 1 + 4 (L - 1) for L latent frames. What it is not: the tokenizer (`encode_video`
on each `VideoTokenizer`) or the request's length rules (`request.py`).

Resampling, in time: output frame k shows the last source frame whose presentation time is at
or before k / fps (sample and hold, the source's first frame counted from time 0), for every k
with k / fps before the end of the source (its last frame's time plus that frame's duration);
the frames past the last whole latent frame are dropped. In space: each kept frame is converted
to RGB by FFmpeg (swscale, the stream's colour matrix) and resized and centre-cropped exactly as
an input image is (`image.center_crop`).

Invariants: nothing touches the disk; every limit is checked before the memory it guards is
allocated (a stream that hides its length is stopped as soon as it passes the frame or duration
limit); a refusal is a `VideoInputError` naming the limit, never any other exception.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import av
import torch
from PIL import Image

from packcache_core.image import center_crop, to_tensor
from packcache_core.layout import T_STRIDE


class Container(NamedTuple):
    """A container an upload may be: its names, FFmpeg's demuxer, how its files start."""

    names: tuple[str, ...]  # as people name it
    demuxer: str  # FFmpeg's name for it
    offset: int  # where its signature sits
    signature: bytes


# Anything else is not a video to us (an image FFmpeg would also open, a playlist, a stream).
CONTAINERS = (
    Container(("MP4", "MOV"), "mov,mp4,m4a,3gp,3g2,mj2", 4, b"ftyp"),
    Container(("WebM", "MKV"), "matroska,webm", 0, b"\x1a\x45\xdf\xa3"),
    Container(("AVI",), "avi", 8, b"AVI "),
)
VIDEO_KINDS = tuple(name for c in CONTAINERS for name in c.names)
RGB_BYTES = 3  # a decoded frame converted to RGB24
# FFmpeg holds a few reference and output frames while it decodes: bytes per source pixel.
DECODER_BYTES_PER_PIXEL = 8


class VideoInputError(ValueError):
    """An upload refused; `limit` names the `VideoLimits` field it exceeds (None: not a
    usable video)."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class VideoLimits:
    """What one uploaded video may be (the server's settings)."""

    max_bytes: int
    max_pixels: int  # width * height of a source frame
    max_frames: int  # source frames decoded
    max_seconds: float  # source duration


class Probe(NamedTuple):
    """A video's header: what decoding it will take."""

    format: str
    width: int
    height: int
    seconds: float | None  # None: the container does not say
    frames: int | None  # None: the container does not say


class Clip:
    """Decoded frames handed over once: `take` gives them to whoever encodes them, and
    `close` forgets them, so a finished request keeps no reference that holds them alive."""

    def __init__(self, frames: torch.Tensor) -> None:
        self._frames: torch.Tensor | None = frames
        self.nbytes = frames.nbytes  # what they held, for the decode budget
        self.shape = tuple(frames.shape)

    def first(self) -> Image.Image:
        """The first frame, as an image (the video's conditioning frame)."""
        assert self._frames is not None, "the clip was taken already"
        return Image.fromarray(self._frames[0].numpy())

    def take(self) -> torch.Tensor:
        frames, self._frames = self._frames, None
        if frames is None:
            raise ValueError("the clip was taken already")
        return frames

    def close(self) -> None:
        self._frames = None


def is_video(data: bytes) -> bool:
    """Whether `data` starts as an MP4 / MOV, Matroska / WebM or AVI file does (an input
    that may be an image or a video is told apart by this; FFmpeg decides the rest)."""
    return any(data[c.offset : c.offset + len(c.signature)] == c.signature for c in CONTAINERS)


def _open(data: bytes) -> av.container.InputContainer:
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as e:
        raise VideoInputError("not a video file FFmpeg can read") from e
    if container.format.name not in {c.demuxer for c in CONTAINERS}:
        container.close()
        raise VideoInputError(f"not a video container ({container.format.name}); send an MP4")
    return container


def _describe(container: av.container.InputContainer) -> Probe:
    if not container.streams.video:
        raise VideoInputError("the file has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoInputError("the video stream's codec is not one FFmpeg can decode")
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    frames = stream.frames or None
    width, height = stream.codec_context.width, stream.codec_context.height
    return Probe(container.format.name, width, height, seconds, frames)


def _check(probe: Probe, limits: VideoLimits) -> None:
    if probe.width <= 0 or probe.height <= 0:
        raise VideoInputError("the video stream states no frame size")
    if probe.width * probe.height > limits.max_pixels:
        raise VideoInputError(
            f"frames are {probe.width}x{probe.height}, more than the limit of "
            f"{limits.max_pixels} pixels a frame",
            "max_pixels",
        )
    if probe.seconds is not None and probe.seconds > limits.max_seconds:
        raise VideoInputError(
            f"the video lasts {probe.seconds:.3g} s, more than the limit of "
            f"{limits.max_seconds:g} s",
            "max_seconds",
        )
    if probe.frames is not None and probe.frames > limits.max_frames:
        raise VideoInputError(
            f"the video has {probe.frames} frames, more than the limit of {limits.max_frames}",
            "max_frames",
        )


def probe_video(data: bytes, limits: VideoLimits) -> Probe:
    """The header of an uploaded video, within `limits` (raises `VideoInputError`)."""
    if len(data) > limits.max_bytes:
        raise VideoInputError(
            f"the file has {len(data)} bytes, more than the limit of {limits.max_bytes}",
            "max_bytes",
        )
    container = _open(data)
    try:
        probe = _describe(container)
    finally:
        container.close()
    _check(probe, limits)
    return probe


def clip_frames(seconds: float, fps: int, most: int) -> int:
    """RGB frames of the clip a `seconds`-long source gives at `fps`: whole latent frames
    (1 + 4 (L - 1)), at most `most`."""
    shown = max(1, math.ceil(seconds * fps - 1e-9))  # k / fps < seconds
    latent = 1 + (min(shown, most) - 1) // T_STRIDE
    return 1 + T_STRIDE * (latent - 1)


def decode_bytes(probe: Probe, width: int, height: int, fps: int, most: int) -> int:
    """Memory decoding `probe`'s video into a clip of `width` x `height` takes at most: the
    decoder's frames at the source size, and the clip twice (its frames, then stacked; its
    length from the stated duration, else `most` frames)."""
    frames = most if probe.seconds is None else clip_frames(probe.seconds, fps, most)
    source = probe.width * probe.height * (DECODER_BYTES_PER_PIXEL + RGB_BYTES)
    return source + 2 * frames * width * height * RGB_BYTES


def decode_clip(
    data: bytes, limits: VideoLimits, fps: int, size: tuple[int, int], most: int
) -> torch.Tensor:
    """(T, H, W, 3) uint8: the upload resampled to `fps` and `size` (width, height), at most
    `most` frames, T = 1 + 4 (L - 1) (see the module docstring; raises `VideoInputError`)."""
    container = _open(data)
    try:
        _check(_describe(container), limits)
        return _resample(container, limits, fps, size, most)
    except av.FFmpegError as e:
        raise VideoInputError(f"the video is damaged and cannot be decoded ({e.strerror})") from e
    finally:
        container.close()


def _resample(
    container: av.container.InputContainer,
    limits: VideoLimits,
    fps: int,
    size: tuple[int, int],
    most: int,
) -> torch.Tensor:
    stream = container.streams.video[0]
    stream.codec_context.options = {"err_detect": "explode"}  # damage is an error, not hidden
    out: list[torch.Tensor] = []
    held: av.VideoFrame | None = None  # the source frame shown now
    start: Fraction | None = None
    end = Fraction(0)
    for n, frame in enumerate(container.decode(stream), 1):
        if n > limits.max_frames:
            raise VideoInputError(
                f"the video has more than the limit of {limits.max_frames} frames",
                "max_frames",
            )
        t = _time(frame, stream, n - 1, fps)
        start = t if start is None else start
        t -= start
        if t > limits.max_seconds:
            raise VideoInputError(
                f"the video lasts more than the limit of {limits.max_seconds:g} s",
                "max_seconds",
            )
        # every output time before this frame shows the one held until now
        while held is not None and len(out) < most and Fraction(len(out), fps) < t:
            out.append(_fit(held, size))
        held, end = frame, t + _duration(frame, stream, fps)
    if held is None:
        raise VideoInputError("the video has no frames")
    while len(out) < most and (not out or Fraction(len(out), fps) < end):
        out.append(_fit(held, size))
    keep = 1 + T_STRIDE * ((len(out) - 1) // T_STRIDE)
    return torch.stack(out[:keep])


def _time(frame: av.VideoFrame, stream: av.VideoStream, n: int, fps: int) -> Fraction:
    """When the `n`-th frame (from 0) is shown: its presentation time, else (a stream without
    timestamps) its place at the stream's rate."""
    if frame.pts is not None and frame.time_base:
        return Fraction(frame.pts) * frame.time_base
    return n * _duration(frame, stream, fps) if n else Fraction(0)


def _duration(frame: av.VideoFrame, stream: av.VideoStream, fps: int) -> Fraction:
    """How long `frame` is shown: its own duration, else one frame at the stream's rate."""
    if frame.duration and frame.time_base:
        return Fraction(frame.duration) * frame.time_base
    rate = stream.average_rate or stream.guessed_rate or fps
    return 1 / Fraction(rate)


def _fit(frame: av.VideoFrame, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8: a source frame in RGB, resized and centre-cropped to `size`."""
    return to_tensor(center_crop(frame.to_image(), *size))
