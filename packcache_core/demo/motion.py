"""How a clip moves, measured from its pixels: phase correlation and PSNR.

What it is: `content_shift`, the dominant translation between consecutive frames of a clip by
phase correlation (the normalised cross-power spectra of all consecutive pairs are summed, so
one peak stands for the whole clip; for an object on a still background, plain correlation of
the frames minus their temporal median), `follows`, which compares it with the motion a prompt
asked for, `psnr`, and `colour_names` (what colours a picture shows). What it is not: an
optical-flow estimator; zoom has no single shift and is judged by PSNR only. `moved_psnr`
checks that consecutive frames are shifted copies.

Sign convention: a shift (dy, dx) means frame k+1 is frame k moved dy px down and dx px right
(content moving right has dx > 0), the same convention as `Motion.content_step`.

Invariant: for frames that are exact circular shifts of one another the estimate is that shift;
for a pan (content leaving one edge, new content entering the other) it is the pan's step as
long as most of the frame is shared, which a Hann window makes robust.
"""

from __future__ import annotations

import numpy as np
import torch

from packcache_core.demo.data import COLOURS, PAN_DIRECTIONS, PAN_STEP, Motion

COLOUR_CLUSTERS = 4  # k of the k-means in `colour_shares`
FLOOD_SHARE = 0.9  # a picture "flooded": one named colour covers at least this share of it
# BT.601 luma weights
_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def luma(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float64 (n, H, W) in [0, 1]."""
    return (frames.to(torch.float64) / 255.0) @ _LUMA


def content_shift(frames: torch.Tensor, moving_object: bool = False) -> tuple[float, float]:
    """(dy, dx) px per frame that best explains the whole clip (n >= 2 frames, uint8 RGB).

    With `moving_object` the per-pixel temporal median (the still background, when the object
    covers each pixel in fewer than half of the frames) is removed first, so the object's
    motion, not the background's stillness, gives the peak; the residual is mostly zero, so
    the spectra are correlated as they are (whitening would let the near-zero parts vote)."""
    if frames.shape[0] < 2:
        raise ValueError("need at least two frames to measure motion")
    y = luma(frames)  # (n, H, W)
    if moving_object:
        y = y - y.median(dim=0).values
    _, H, W = y.shape
    hann = {size: torch.hann_window(size, dtype=torch.float64) for size in (H, W)}
    window = torch.outer(hann[H], hann[W])  # (H, W)
    y = (y - y.mean(dim=(1, 2), keepdim=True)) * window
    spec = torch.fft.fft2(y)  # (n, H, W)
    cross = spec[1:] * spec[:-1].conj()  # (n-1, H, W): later frame against earlier
    if not moving_object:
        cross = cross / cross.abs().clamp(min=1e-12)
    cross = cross.sum(0)  # (H, W)
    corr = torch.fft.ifft2(cross).real  # (H, W), peak at the shift (circularly)
    peak = int(corr.argmax())
    dy, dx = divmod(peak, W)
    dy = dy - H if dy > H // 2 else dy
    dx = dx - W if dx > W // 2 else dx
    return float(dy), float(dx)


def direction_of(shift: tuple[float, float], min_step: float = PAN_STEP / 2) -> str | None:
    """The content direction ("left", "right", "up", "down") of a shift, or None when its
    larger component is below `min_step` px per frame (no clear motion)."""
    dy, dx = shift
    if max(abs(dy), abs(dx)) < min_step:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def expected_direction(motion: Motion) -> str | None:
    """The content direction a motion produces (a camera panning left moves content right)."""
    dy, dx = motion.content_step()
    if dy == dx == 0:
        return None
    for name, (uy, ux) in PAN_DIRECTIONS.items():
        if (uy, ux) == (int(dy > 0) - int(dy < 0), int(dx > 0) - int(dx < 0)):
            return name
    raise AssertionError(f"no direction for step {(dy, dx)}")


def follows(motion: Motion, frames: torch.Tensor) -> bool:
    """Whether the frames move the way `motion` asks (pans and objects only)."""
    want = expected_direction(motion)
    assert want is not None, f"{motion} has no direction to follow"
    return direction_of(content_shift(frames, motion.kind == "object")) == want


def asked_shift(prev: torch.Tensor, cur: torch.Tensor, camera: str) -> float:
    """How far (px) the picture moved from `prev` to `cur` (uint8 (H, W, 3) each) the way a
    camera panning `camera` moves it (the opposite way); "as asked" is at least PAN_STEP / 2."""
    dy, dx = content_shift(torch.stack([prev, cur]))
    uy, ux = PAN_DIRECTIONS[camera]  # the window's way; the picture moves the other way
    return -(uy * dy + ux * dx)


def moved_psnr(
    prev: torch.Tensor, cur: torch.Tensor, step: tuple[int, int], margin: int = PAN_STEP
) -> float:
    """PSNR of frame `cur` against frame `prev` moved by `step` = (dy, dx) px, over the part
    both show, `margin` px in from every edge (the decoders' borders are interpolated
    differently). High when a clip keeps moving as `step` says, whatever new content enters."""
    dy, dx = step
    H, W = cur.shape[:2]
    top, left = margin + max(0, dy), margin + max(0, dx)
    bottom, right = H - margin + min(0, dy), W - margin + min(0, dx)
    assert top < bottom and left < right, f"step {step} leaves nothing to compare"
    return psnr(cur[top:bottom, left:right], prev[top - dy : bottom - dy, left - dx : right - dx])


# PSNR of identical images: finite, so that averages over clips stay meaningful (one uint8
# level off in a single value of a 64x128 RGB frame already gives 92 dB).
PSNR_IDENTICAL = 100.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two uint8 images or clips of the same shape (peak 255), at most
    `PSNR_IDENTICAL`."""
    mse = float(((a.to(torch.float64) - b.to(torch.float64)) ** 2).mean())
    if mse == 0:
        return PSNR_IDENTICAL
    return min(PSNR_IDENTICAL, 10.0 * torch.log10(torch.tensor(255.0**2 / mse)).item())


def colour_shares(picture: torch.Tensor) -> dict[str, float]:
    """Each named colour (`data.COLOURS`) of a uint8 (H, W, 3) picture with the share of its
    pixels: the RGB k-means clusters (k = `COLOUR_CLUSTERS`), each named by the nearest colour,
    in the order of their size (a name comes where its largest cluster does; the shares of the
    clusters that take it are added; an empty cluster names nothing)."""
    from scipy.cluster.vq import kmeans2  # the dev extra: only benchmarks and tests need it

    pixels = picture.reshape(-1, 3).numpy().astype(np.float64) / 255.0
    centres, labels = kmeans2(pixels, COLOUR_CLUSTERS, seed=0, minit="++")
    names, named = list(COLOURS), np.array(list(COLOURS.values()))  # (c,), (c, 3)
    sizes = np.bincount(labels, minlength=COLOUR_CLUSTERS) / len(labels)
    shares: dict[str, float] = {}
    for k in np.argsort(-sizes, kind="stable")[: np.count_nonzero(sizes)]:  # no empty cluster
        name = names[int(np.argmin(((named - centres[k]) ** 2).sum(1)))]
        shares[name] = shares.get(name, 0.0) + float(sizes[k])
    return shares


def colour_names(picture: torch.Tensor) -> list[str]:
    """The names of a picture's two largest colour clusters (`colour_shares`). On the
    tokenizer's round trip of held-out two-colour scenes it names both colours in 60 of 60
    (with k = 4)."""
    return two_colours(colour_shares(picture))


def two_colours(shares: dict[str, float]) -> list[str]:
    """The first two names of a `colour_shares` result: the two largest clusters' colours."""
    return list(shares)[:2]


def flooded(shares: dict[str, float]) -> bool:
    """Whether one named colour of a `colour_shares` result covers `FLOOD_SHARE` or more."""
    return max(shares.values()) >= FLOOD_SHARE
