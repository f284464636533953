"""The conditioning image: safe decoding, Lumos-1's resolution buckets, resize and centre-crop.

What it is: `load_image` turns untrusted bytes or a file into an RGB `PIL.Image` (sizes checked
before any pixel is decoded, EXIF orientation applied), in two halves a server can budget between:
`open_image` reads the header and estimates the memory decoding takes (`decode_bytes`),
`decode_rgb` decodes; `preprocess_image` picks the bucket
whose aspect ratio best matches (spec §3.3) and returns the cropped pixels as a uint8
(H, W, 3) tensor; `fixed_size_preprocess` does the same for a size the caller names. What it is
not: the video tokenizer (pixels to Cosmos codes) or a pixel-exact copy of the reference's
decoder (the reference reads the file with OpenCV/FFmpeg; PIL's JPEG decoder can differ by 1-2
levels).

Invariant: every tensor returned is uint8, RGB, exactly (height, width) of the chosen bucket,
and both sides are multiples of `PATCH` (32 px = 4 latent rows/columns).
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from PIL import ExifTags, Image

PATCH = 32  # pixels per size-token unit
MAX_RATIO = 4.0  # longest side / shortest side of a bucket
_16BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")
# EXIF orientation -> the transposition that shows the image upright (EXIF 2.3, tag 0x0112).
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """The input is not an image this server accepts; the message says why."""


def crop_size_list(
    target_size: int, patch: int = PATCH, max_ratio: float = MAX_RATIO
) -> list[tuple[int, int]]:
    """Resolution buckets (width, height) for a nominal square `target_size` (528 -> 384p).

    With n = (target_size // patch)^2 patches, the buckets are the (cols, rows) grids that a
    staircase walk from (n, 1) visits: add a row while cols * (rows + 1) <= n, else drop a
    column. So for each column count c the rows run from max(1, n // (c + 1)) to n // c. Grids
    whose sides differ by more than `max_ratio` are left out. Ordered by falling width.
    """
    n = (target_size // patch) ** 2
    if n < 1 or max_ratio < 1.0:
        raise ValueError(
            f"no buckets for target_size {target_size}, patch {patch}, max_ratio {max_ratio}"
        )
    buckets = []
    for cols in range(n, 0, -1):
        for rows in range(max(1, n // (cols + 1)), n // cols + 1):
            if max(cols, rows) / min(cols, rows) <= max_ratio:
                buckets.append((cols * patch, rows * patch))
    return buckets


def choose_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket that keeps most of the image: highest min/max of the two scale factors,
    ties broken towards the larger (width, height)."""

    def kept(bucket: tuple[int, int]) -> float:
        sw, sh = bucket[0] / width, bucket[1] / height
        return min(sw, sh) / max(sw, sh)

    return max(buckets, key=lambda b: (kept(b), b))


def center_crop(img: Image.Image, width: int, height: int) -> Image.Image:
    """Resize so the image covers (width, height), then cut out the centre.

    Halve with a box filter while both sides are at least twice the crop (cheap and alias-free),
    then one bicubic resize by the larger of the two scale factors with rounded sizes, then a
    central crop with floor offsets.
    """
    while img.width >= 2 * width and img.height >= 2 * height:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.Resampling.BOX)
    scale = max(width / img.width, height / img.height)
    size = (round(img.width * scale), round(img.height * scale))
    img = img.resize(size, resample=Image.Resampling.BICUBIC)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return img.crop((left, top, left + width, top + height))


class Step(NamedTuple):
    """One conversion on the way to RGB: the mode it makes, by `convert` or by `scale16`
    (16-bit greyscale scaled to 0..255 in place of clipping)."""

    mode: str
    kind: Literal["convert", "scale16"] = "convert"

    def apply(self, img: Image.Image) -> Image.Image:
        if self.kind == "scale16":
            return img.point(lambda v: v * (1 / 256))
        return img.convert(self.mode)


def rgb_steps(mode: str, transparency: bool = False) -> tuple[Step, ...]:
    """The conversions `to_rgb` makes from `mode`, in order: the one list both the conversion
    and its memory estimate (`decode_bytes`) follow."""
    if mode == "RGB":
        return ()
    if mode == "I;16":  # scaled within its own 2 bytes a pixel: Pillow's cheapest path
        return Step("I;16", "scale16"), Step("L"), Step("RGB")
    if mode in _16BIT_GRAY:  # other byte orders scale only as 32-bit integers
        return Step("I"), Step("I", "scale16"), Step("L"), Step("RGB")
    if mode == "P" and transparency:
        return Step("RGBA"), Step("RGB")  # avoids Pillow's palette-transparency warning
    return (Step("RGB"),)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB without alpha. Alpha is dropped, not composited, as the reference's FFmpeg decode
    does; 16-bit grayscale is scaled to 8 bits instead of clipped."""
    for step in rgb_steps(img.mode, "transparency" in img.info):
        img = step.apply(img)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(H, W, 3) uint8 tensor of an RGB image."""
    assert img.mode == "RGB", img.mode
    data = bytearray(img.tobytes())
    return torch.frombuffer(data, dtype=torch.uint8).view(img.height, img.width, 3)


def preprocess_image(img: Image.Image, target_size: int) -> torch.Tensor:
    """Bucket, resize and centre-crop: e.g. 1280x720 at target 528 -> (384, 672, 3) uint8."""
    width, height = choose_bucket(img.width, img.height, crop_size_list(target_size))
    return to_tensor(center_crop(to_rgb(img), width, height))


def fixed_size_preprocess(img: Image.Image, width: int, height: int) -> torch.Tensor:
    """Resize and centre-crop to a caller-chosen size (multiples of 32) -> (height, width, 3)."""
    if width <= 0 or height <= 0 or width % PATCH or height % PATCH:
        raise ValueError(f"size {width}x{height} must be positive multiples of {PATCH}")
    return to_tensor(center_crop(to_rgb(img), width, height))


# --- memory -----------------------------------------------------------------------------------


def pixel_bytes(mode: str) -> int:
    """Bytes Pillow stores per pixel of `mode`: 1 for 1, L and P; 2 for 16-bit greyscale; 4 for
    every other mode (RGB is stored as 4 bytes, LA too; I and F are 32-bit)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode in _16BIT_GRAY else 4


@lru_cache
def _via(source: str, target: str) -> str | None:
    """The mode Pillow's `convert` passes through (and frees) when it has no direct
    conversion from `source` to `target`, e.g. F -> L -> RGB; None when it converts directly."""
    try:
        Image.new(source, (1, 1)).im.convert(target)
    except ValueError:
        return Image.getmodebase(source)
    return None


def _orientation(img: Image.Image) -> Image.Transpose | None:
    """The transposition the header's EXIF orientation asks for, read without decoding (PNG's
    own `getexif` decodes the image to look for an eXIf chunk after the pixels; that late
    orientation is not followed)."""
    return ORIENTATIONS.get(Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1))


# Bytes a pixel that a format's decoder holds beyond the image it fills: libwebp keeps its
# canvas and the previous frame (4 bytes a pixel each) and Pillow reads from a copy of the frame.
DECODER_BYTES = {"WEBP": 12}
SLACK = 1 / 32  # row and line buffers of the decoders (measured: at most 2% of the image)


def decode_bytes(img: Image.Image) -> int:
    """Most memory `decode_rgb` takes at once to decode this image and make it RGB, from its
    header alone (an image opened and not yet loaded).

    Counts the decoded pixels (`pixel_bytes` of the header's mode) with the decoder's own
    whole-image buffers (a progressive JPEG's coefficients: 2 bytes a sample; `DECODER_BYTES`),
    a transposition for its EXIF orientation (source and copy), and each step of `rgb_steps`,
    while its input, its output and any mode Pillow passes through are alive together, plus
    `SLACK`. Within a few percent of the peak resident memory measured for each mode and format
    (tests/core/test_image.py).
    """
    pixels = img.width * img.height
    source = pixels * pixel_bytes(img.mode)
    peak = source + pixels * DECODER_BYTES.get(img.format or "", 0)
    if img.format == "JPEG" and img.info.get("progressive"):
        peak += pixels * len(img.getbands()) * 2
    if _orientation(img) is not None:
        peak = max(peak, 2 * source)
    mode = img.mode
    for step in rgb_steps(img.mode, "transparency" in img.info):
        via = _via(mode, step.mode) if step.kind == "convert" else None
        alive = (mode, step.mode) + ((via,) if via else ())
        peak = max(peak, pixels * sum(pixel_bytes(m) for m in alive))
        mode = step.mode
    return int(peak * (1 + SLACK))


def _read_bytes(source: str | Path | bytes, max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(max_bytes + 1)  # never more than the cap, whatever the file is
        except OSError as e:
            raise ImageError(f"cannot read image file {source}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise ImageError(f"image is larger than the limit of {max_bytes} bytes")
    if not data:
        raise ImageError("image is empty (0 bytes)")
    return data


# What uploads may be (Pillow format names; a GIF or TIFF gives its first frame).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


class Opened:
    """An image whose header is read and whose pixels are not: `decode_bytes` sizes it from
    the header, `decode_rgb` takes it (once), so that no other reference keeps the decoded
    source alive while it is converted."""

    def __init__(self, img: Image.Image) -> None:
        self._img: Image.Image | None = img
        self.width, self.height, self.mode, self.format = (
            img.width,
            img.height,
            img.mode,
            img.format,
        )
        self.decode_bytes = decode_bytes(img)

    def take(self) -> Image.Image:
        img, self._img = self._img, None
        assert img is not None, "an opened image is decoded once"
        return img


def open_image(source: str | Path | bytes, max_pixels: int, max_bytes: int) -> Opened:
    """Read an untrusted image's header, refusing anything over the byte or pixel limit; no
    pixel is decoded (`Opened.decode_bytes` says what decoding takes, `decode_rgb` does it).

    Raises:
        ImageError: not an image of an accepted format, or over either limit.
    """
    data = _read_bytes(source, max_bytes)
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as e:  # over Pillow's own limit, far above ours
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))  # Pillow refuses above
        raise ImageError(f"image has more than the limit of {limit} pixels") from e
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        accepted = ", ".join(IMAGE_FORMATS)
        raise ImageError(f"not a recognised image format (accepted: {accepted})") from e
    if img.width * img.height > max_pixels:
        raise ImageError(
            f"image is {img.width}x{img.height}, more than the limit of {max_pixels} pixels"
        )
    return Opened(img)


def decode_rgb(opened: Opened) -> Image.Image:
    """Decode an opened image into RGB, upright by its EXIF orientation, within
    `opened.decode_bytes` (each image is freed as soon as the next one exists).

    Raises:
        ImageError: corrupt or truncated.
    """
    img = opened.take()
    transposition = _orientation(img)
    try:
        img.load()
        if transposition is not None:
            img = img.transpose(transposition)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"corrupt or truncated {opened.format} image ({e})") from e
    for step in rgb_steps(img.mode, "transparency" in img.info):
        img = step.apply(img)  # not `to_rgb(img)`: this frame would keep the source alive
    return img


def load_image(source: str | Path | bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode an untrusted image into RGB, refusing anything too large before decoding it.

    Args:
        source: a file path or the encoded bytes.
        max_pixels: largest width * height accepted (checked from the header).
        max_bytes: largest encoded size accepted.

    Raises:
        ImageError: not an image, corrupt or truncated, or over either limit.
    """
    return decode_rgb(open_image(source, max_pixels, max_bytes))
