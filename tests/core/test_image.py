"""Conditioning-image preprocessing: buckets, resize/centre-crop, decoding and its refusals.

What it is: tests of `packcache_core.image` on images made in memory. Expected buckets come
from the spec (§3.3: 16:9 -> 672x384 at target 528, square -> 512x512, 4:3 -> 576x448, 448x256
at 352). What it is not: a test of the video tokenizer.

Invariant: every refusal is an `ImageError` (a `ValueError`) whose message says why.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from packcache_core.image import (
    PATCH,
    SLACK,
    ImageError,
    center_crop,
    choose_bucket,
    crop_size_list,
    fixed_size_preprocess,
    load_image,
    open_image,
    preprocess_image,
    to_rgb,
)

BIG = 10**9  # limits that do not bind


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares (width, height) but holds almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def x_ramp(width: int, height: int) -> Image.Image:
    """Red channel = x coordinate (mod 256), so a crop's offset can be read back."""
    row = bytes(v for x in range(width) for v in (x % 256, 0, 0))
    return Image.frombytes("RGB", (width, height), row * height)


# --- buckets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target", "bucket"),
    [
        ((1280, 720), 528, (672, 384)),  # 16:9
        ((1792, 1024), 528, (672, 384)),  # 7:4
        ((720, 1280), 528, (384, 672)),  # 9:16
        ((1000, 1000), 528, (512, 512)),
        ((1024, 768), 528, (576, 448)),  # 4:3
        ((1280, 720), 352, (448, 256)),
    ],
)
def test_spec_buckets(size: tuple[int, int], target: int, bucket: tuple[int, int]) -> None:
    assert choose_bucket(*size, crop_size_list(target)) == bucket
    pixels = preprocess_image(Image.new("RGB", size, (10, 20, 30)), target)
    assert pixels.shape == (bucket[1], bucket[0], 3)
    assert pixels.dtype == torch.uint8
    assert pixels.reshape(-1, 3).unique(dim=0).tolist() == [[10, 20, 30]]


@pytest.mark.parametrize("target", [352, 528, 768])
def test_bucket_list_properties(target: int) -> None:
    n = (target // PATCH) ** 2
    buckets = crop_size_list(target)
    assert len(set(buckets)) == len(buckets)
    assert (target // PATCH * PATCH,) * 2 in buckets  # the square
    widths = [w for w, _ in buckets]
    assert widths == sorted(widths, reverse=True)
    for w, h in buckets:
        assert w % PATCH == 0 and h % PATCH == 0
        assert (w // PATCH) * (h // PATCH) <= n
        assert max(w, h) / min(w, h) <= 4.0
    # Each column count keeps its tallest grid that fits the patch budget (if not too narrow).
    for cols in range(1, n + 1):
        rows = n // cols
        if max(cols, rows) / min(cols, rows) <= 4.0:
            assert (cols * PATCH, rows * PATCH) in buckets


def test_bucket_list_ratio_and_size_limits() -> None:
    assert crop_size_list(528, max_ratio=1.0) == [(512, 512)]
    assert max(w / h for w, h in crop_size_list(528, max_ratio=2.0)) <= 2.0
    assert crop_size_list(32) == [(32, 32)]
    with pytest.raises(ValueError, match="no buckets"):
        crop_size_list(31)


def test_bucket_ties_go_to_the_larger_size() -> None:
    assert choose_bucket(100, 100, [(32, 64), (64, 32)]) == (64, 32)
    assert choose_bucket(100, 100, [(64, 32), (32, 64)]) == (64, 32)


# --- resize and crop ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "crop"),
    [
        ((4000, 3000), (576, 448)),
        ((17, 9), (672, 384)),
        ((672, 384), (672, 384)),
        ((673, 385), (672, 384)),
        ((3000, 100), (1024, 256)),
        ((100, 3000), (256, 1024)),
    ],
)
def test_center_crop_output_size(size: tuple[int, int], crop: tuple[int, int]) -> None:
    assert center_crop(Image.new("RGB", size), *crop).size == crop


@pytest.mark.parametrize(("width", "left"), [(100, 18), (101, 18), (64, 0)])
def test_center_crop_uses_floor_offsets(width: int, left: int) -> None:
    out = center_crop(x_ramp(width, 64), 64, 64)  # scale 1: no resampling, only the crop
    assert out.getpixel((0, 0))[0] == left


def test_center_crop_halves_large_images_first() -> None:
    img = x_ramp(256, 256).resize((2048, 2048), Image.Resampling.NEAREST)
    out = center_crop(img, 256, 256)  # 2048 -> 1024 -> 512 by BOX, then 512 -> 256 bicubic
    assert out.size == (256, 256)
    red = torch.tensor([out.getpixel((x, 0))[0] for x in range(256)])
    assert (red - torch.arange(256)).abs().max() <= 3


def test_fixed_size_preprocess() -> None:
    pixels = fixed_size_preprocess(Image.new("RGB", (1280, 720), (255, 0, 0)), 640, 384)
    assert pixels.shape == (384, 640, 3)
    assert pixels[0, 0].tolist() == [255, 0, 0]
    for bad in [(500, 384), (640, 0), (-32, 64)]:
        with pytest.raises(ValueError, match="multiples of 32"):
            fixed_size_preprocess(Image.new("RGB", (64, 64)), *bad)


# --- colour modes ---------------------------------------------------------------------------


def palette_with_transparency() -> Image.Image:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    ("img", "rgb"),
    [
        (Image.new("L", (4, 4), 128), (128, 128, 128)),
        (Image.new("LA", (4, 4), (128, 0)), (128, 128, 128)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 0)), (10, 20, 30)),  # alpha dropped
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
        (Image.new("I;16", (4, 4), 0x8000), (128, 128, 128)),  # scaled, not clipped
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (palette_with_transparency(), (0, 255, 0)),
    ],
    ids=["L", "LA", "RGBA", "1", "I;16", "CMYK", "P+transparency"],
)
def test_to_rgb(img: Image.Image, rgb: tuple[int, int, int]) -> None:
    out = to_rgb(img)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == rgb


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_load_image_formats(tmp_path: Path, fmt: str) -> None:
    data = encode(Image.new("RGB", (64, 48), (200, 40, 40)), fmt)
    (tmp_path / "img").write_bytes(data)
    for source in (data, tmp_path / "img", str(tmp_path / "img")):
        img = load_image(source, max_pixels=BIG, max_bytes=BIG)
        assert img.mode == "RGB" and img.size == (64, 48)
        assert all(
            abs(a - b) <= 8 for a, b in zip(img.getpixel((32, 24)), (200, 40, 40), strict=True)
        )


def test_load_image_converts_cmyk_jpeg() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG")
    img = load_image(data, max_pixels=BIG, max_bytes=BIG)
    assert img.mode == "RGB" and min(img.getpixel((8, 8))) >= 250


def test_load_image_honours_exif_orientation() -> None:
    img = Image.new("RGB", (64, 32), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 32, 32))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    out = load_image(encode(img, "JPEG", exif=exif, quality=95), max_pixels=BIG, max_bytes=BIG)
    assert out.size == (32, 64)
    top, bottom = out.getpixel((16, 8)), out.getpixel((16, 56))
    assert top[0] > 200 and top[2] < 50  # the red half is on top after rotating clockwise
    assert bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, this is text", "not a recognised image format"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a recognised image format"),
    ],
    ids=["text", "empty", "bad-png-header"],
)
def test_load_image_rejects_non_images(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(data, max_pixels=BIG, max_bytes=BIG)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_image_rejects_truncated(fmt: str) -> None:
    noise = Image.frombytes("RGB", (128, 128), bytes(range(256)) * 192)
    data = encode(noise, fmt)
    with pytest.raises(ImageError, match=f"corrupt or truncated {fmt} image"):
        load_image(data[: len(data) // 2], max_pixels=BIG, max_bytes=BIG)


def test_load_image_byte_limit(tmp_path: Path) -> None:
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    assert load_image(data, max_pixels=BIG, max_bytes=len(data)).size == (64, 64)
    with pytest.raises(ImageError, match=f"limit of {len(data) - 1} bytes"):
        load_image(data, max_pixels=BIG, max_bytes=len(data) - 1)
    (tmp_path / "img.png").write_bytes(data)
    with pytest.raises(ImageError, match="limit of 10 bytes"):
        load_image(tmp_path / "img.png", max_pixels=BIG, max_bytes=10)


def test_load_image_pixel_limit() -> None:
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert load_image(data, max_pixels=5000, max_bytes=BIG).size == (100, 50)
    with pytest.raises(ImageError, match="100x50, more than the limit of 4999 pixels"):
        load_image(data, max_pixels=4999, max_bytes=BIG)


def test_pixel_limit_is_checked_before_decoding() -> None:
    # The header claims 8000x6000 and there are no pixels behind it: a decode would fail as
    # truncated, so getting the size error proves the check came first.
    with pytest.raises(ImageError, match="8000x6000, more than the limit"):
        load_image(png_header(8000, 6000), max_pixels=10**6, max_bytes=BIG)
    with pytest.raises(ImageError, match="corrupt or truncated PNG"):
        load_image(png_header(8000, 6000), max_pixels=10**8, max_bytes=BIG)


def test_decompression_bomb_is_refused_even_with_a_high_limit() -> None:
    # Beyond twice PIL's MAX_IMAGE_PIXELS, PIL itself refuses at open.
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 1000
    limit = 2 * Image.MAX_IMAGE_PIXELS  # the limit that applied, not the asked one
    with pytest.raises(ImageError, match=f"more than the limit of {limit} pixels"):
        load_image(png_header(side, side), max_pixels=10**12, max_bytes=BIG)


@pytest.mark.parametrize("name", ["missing.png", "."])
def test_load_image_unreadable_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(ImageError, match="cannot read image file"):
        load_image(tmp_path / name, max_pixels=BIG, max_bytes=BIG)


# --- decode memory ----------------------------------------------------------------------------

W, H = 64, 48


def sample(mode: str, fmt: str, **params: object) -> bytes:
    """A W x H image of `mode`, encoded as `fmt`, with some content in it."""
    img = Image.new("RGB", (W, H), (200, 40, 40)).convert("L")
    if mode == "I;16":
        img = Image.new("I;16", (W, H), 40000)
    elif mode in ("I", "F"):
        img = img.convert(mode)
    elif mode != "L":
        img = Image.new("RGB", (W, H), (200, 40, 40)).convert(mode)
    return encode(img, fmt, **params)


def rotated(fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("RGB", (W, H), (200, 40, 40)), fmt, exif=exif)


# Bytes a pixel at the peak of decoding and converting to RGB (Pillow stores RGB, RGBA, CMYK,
# I and F in 4 bytes a pixel, 16-bit grey in 2, L and P in 1).
@pytest.mark.parametrize(
    ("data", "mode", "per_pixel"),
    [
        (sample("L", "PNG"), "L", 1 + 4),  # L and its RGB
        (sample("RGB", "PNG"), "RGB", 4),  # no conversion
        (sample("RGBA", "PNG"), "RGBA", 4 + 4),
        (sample("I;16", "PNG"), "I;16", 1 + 4),  # scaled in 2 + 2, then L + RGB
        (sample("I", "TIFF"), "I", 4 + 4),
        (sample("F", "TIFF"), "F", 4 + 1 + 4),  # Pillow converts F to RGB through L
        (sample("P", "PNG"), "P", 1 + 4),
        (sample("P", "PNG", transparency=0), "P", 4 + 4),  # through RGBA
        (sample("CMYK", "JPEG"), "CMYK", 4 + 4),
        (sample("RGB", "JPEG", progressive=True), "RGB", 4 + 3 * 2),  # + its coefficients
        (sample("RGB", "WEBP"), "RGB", 4 + 12),  # + libwebp's canvas and frame copies
        (rotated("JPEG"), "RGB", 4 + 4),  # the source and its transposed copy
    ],
    ids=[
        "L",
        "RGB",
        "RGBA",
        "I;16",
        "I",
        "F",
        "P",
        "P-transparent",
        "CMYK",
        "progressive-JPEG",
        "WEBP",
        "rotated",
    ],
)
def test_decode_bytes_from_the_header(data: bytes, mode: str, per_pixel: int) -> None:
    opened = open_image(data, max_pixels=BIG, max_bytes=BIG)
    assert opened.mode == mode
    assert opened.decode_bytes == int(W * H * per_pixel * (1 + SLACK))
    assert load_image(data, max_pixels=BIG, max_bytes=BIG).mode == "RGB"


MEASURE = """
import sys
from packcache_core.image import decode_rgb, open_image

def vm(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

opened = open_image(sys.argv[1], 10**9, 10**9)
open("/proc/self/clear_refs", "w").write("5")  # the peak RSS starts again from now
before = vm("VmRSS:")
decode_rgb(opened)
print(opened.decode_bytes, vm("VmHWM:") - before)
"""


@pytest.mark.parametrize("case", ["I;16 PNG", "RGBA PNG", "RGB WEBP", "rotated JPEG"])
def test_decode_bytes_covers_the_measured_peak(case: str, tmp_path: Path) -> None:
    """Decoding a 4000x3000 image in a fresh process: its peak resident memory growth is within
    the estimate, and the estimate is no more than a tenth above it."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    mode, fmt = case.split()
    exif = Image.Exif()
    exif[0x0112] = 6 if mode == "rotated" else 1
    img = Image.new("RGB" if mode == "rotated" else mode, (4000, 3000), 100)
    (tmp_path / "img").write_bytes(encode(img, fmt, exif=exif))
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path / "img")],
        capture_output=True,
        cwd=root,
        check=True,
    ).stdout.split()
    estimate, measured = int(out[0]), int(out[1])
    assert measured <= estimate <= 1.1 * measured, (estimate, measured)
