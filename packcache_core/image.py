"""The conditioning image: safe decoding, Lumos-1's resolution buckets, resize and centre-crop.

What it is: `load_image` turns untrusted bytes or a file into an RGB `PIL.Image` (sizes checked
before any pixel is decoded, EXIF orientation applied); `preprocess_image` picks the bucket
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
from pathlib import Path

import torch
from PIL import Image, ImageOps

PATCH = 32  # pixels per size-token unit
MAX_RATIO = 4.0  # longest side / shortest side of a bucket
_16BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")


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


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB without alpha. Alpha is dropped, not composited, as the reference's FFmpeg decode
    does; 16-bit grayscale is scaled to 8 bits instead of clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in _16BIT_GRAY:
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning
    return img.convert("RGB")


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


def load_image(source: str | Path | bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode an untrusted image into RGB, refusing anything too large before decoding it.

    Args:
        source: a file path or the encoded bytes.
        max_pixels: largest width * height accepted (checked from the header).
        max_bytes: largest encoded size accepted.

    Raises:
        ImageError: not an image, corrupt or truncated, or over either limit.
    """
    data = _read_bytes(source, max_bytes)
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as e:
        raise ImageError(f"image has too many pixels ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        accepted = ", ".join(IMAGE_FORMATS)
        raise ImageError(f"not a recognised image format (accepted: {accepted})") from e
    if img.width * img.height > max_pixels:
        raise ImageError(
            f"image is {img.width}x{img.height}, more than the limit of {max_pixels} pixels"
        )
    try:
        img.load()
        upright = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"corrupt or truncated {img.format} image ({e})") from e
    return to_rgb(upright)
