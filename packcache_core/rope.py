"""MM-RoPE: Lumos-1's 3-D rotary position embedding, and exact re-rotation of cached keys.

What it is: the angle tables for the 5-tuple positions `(pos_1d, t, h, w, flag)`, the
rotate-half application, and `rerotate` which moves an already-rotated key to a new position
(used when PackCache rebases history frames). What it is not: a position builder (see
`layout.py`) or a cache.

Invariant: the angle of frequency k is `float32(pos) * inv_freq[k]`, where `pos` is `pos_1d` for
tokens with flag 0 and, for flag-1 tokens, the t, h or w position chosen by `axis(k)`. This is
the reference's arithmetic bit for bit (the products have no accumulation).
"""

from __future__ import annotations

import torch

# Frequency k (of head_dim/2) takes its angle from axis AXIS_PATTERN[k % 16]: 0 = t, 1 = h, 2 = w.
# Lumos-1 "v9" split: t gets 1/4 of every group of 16 frequencies, h and w 3/8 each.
AXIS_PATTERN = (0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2)


def inv_freq(head_dim: int, theta: float, device: torch.device | str | None = None) -> torch.Tensor:
    """(head_dim/2,) float32 inverse frequencies, computed as the reference does."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponent)


def frequency_axes(head_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(head_dim/2,) int64: axis index (0 t, 1 h, 2 w) of each frequency."""
    pattern = torch.tensor(AXIS_PATTERN, dtype=torch.int64, device=device)
    return pattern.repeat(head_dim // 2 // len(AXIS_PATTERN))


class RotaryTables:
    """Precomputed per-model constants; turns position ids into (cos, sin) tables."""

    def __init__(self, head_dim: int, theta: float, device: torch.device | str) -> None:
        self.head_dim = head_dim
        self.inv_freq = inv_freq(head_dim, theta, device)  # (D/2,)
        self.axes = frequency_axes(head_dim, device)  # (D/2,)
        self.temporal = self.axes == 0  # (D/2,) frequencies that rotate with t

    def angles(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids (5, ...) int64 rows (pos_1d, t, h, w, flag) -> float32 angles (..., D/2)."""
        pos_1d, thw, flag = position_ids[0], position_ids[1:4], position_ids[4]
        # Per frequency pick t, h or w: (..., D/2) gathered from the 3 axes.
        idx = self.axes.expand(*pos_1d.shape, -1)
        pos_3d = torch.gather(thw.movedim(0, -1), -1, idx)  # (..., D/2)
        pos = torch.where(flag.bool()[..., None], pos_3d, pos_1d[..., None])
        return pos.float() * self.inv_freq

    def cos_sin(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (..., D), rounded to `dtype` like the reference (then kept as is)."""
        ang = self.angles(position_ids)
        emb = torch.cat((ang, ang), dim=-1)  # rotate-half pairs channel j with j + D/2
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, S, D); cos/sin (B, S, D), broadcast over heads."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def rerotate(keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Rotate already-rotated keys by extra angles.

    keys (B, H, S, D) post-RoPE; delta (B, S, D/2) angle differences (new - old), any float
    dtype (float64 keeps large angle differences exact). Rotations compose, so the result
    equals RoPE applied at the new position up to rounding. Computed in float32 and cast back
    to the keys' dtype.
    """
    emb = torch.cat((delta, delta), dim=-1)[:, None]  # (B, 1, S, D)
    k = keys.float()
    out = k * emb.cos().float() + rotate_half(k) * emb.sin().float()
    return out.to(keys.dtype)
