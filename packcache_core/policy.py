"""Cache policies: small objects that decide which history tokens stay in a request's KV cache.

What it is: `FullPolicy`, `SlidingPolicy` and `PackCachePolicy` (see
../shared/reference/packcache-method.md §3). A policy only looks at frame-local token indices
and returns what to keep; it never touches tensors of keys or values. What it is not: storage
(`cache.py` moves memory and re-rotates keys) or a scheduler.

Invariant: what a policy keeps of a frame is always a subset of what that frame holds now, so
packing is a gather from the cache into itself; the four boundary tokens of a kept frame are
always kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from packcache_core.layout import FrameLayout


# Frame-local index of the tokens outside the grid: image-start, two size tokens, image-end.
def boundary_mask(local: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    return (local < 3) | (local == layout.tokens - 1)


class CachePolicy(Protocol):
    """Decides, after each write-back, what each history frame keeps."""

    @property
    def name(self) -> str: ...

    @property
    def rebase(self) -> bool:
        """Renumber retained frames so history stays contiguous in time."""
        ...

    def select(
        self, frames: Sequence[torch.Tensor], layout: FrameLayout, visible: torch.Tensor
    ) -> list[torch.Tensor | None]:
        """Choose what stays.

        Args:
            frames: history frames, newest first (distance d = 1, 2, ...); each a sorted (n,)
                int64 tensor of the frame-local token indices the cache holds for it now.
            layout: frame geometry.
            visible: (layout.tokens,) bool, frame-local tokens that carry content after the
                AR-DF write-back (boundary tokens and the grid tokens the history mask left).

        Returns:
            Per frame, positions into its tensor to keep (sorted), or None to evict it.
        """
        ...


def _keep_all(frame: torch.Tensor) -> torch.Tensor:
    return torch.arange(frame.numel())


@dataclass(frozen=True)
class FullPolicy:
    """Every frame as the reference writes it: the cache grows with the video."""

    name: str = "full"
    rebase: bool = False

    def select(
        self, frames: Sequence[torch.Tensor], layout: FrameLayout, visible: torch.Tensor
    ) -> list[torch.Tensor | None]:
        return [_keep_all(f) for f in frames]


@dataclass(frozen=True)
class SlidingPolicy:
    """Anchors plus the newest `window` frames, as written; older frames leave whole (FIFO)."""

    window: int = 1
    rebase: bool = True
    name: str = "sliding"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"sliding window must be >= 1, got {self.window}")

    def select(
        self, frames: Sequence[torch.Tensor], layout: FrameLayout, visible: torch.Tensor
    ) -> list[torch.Tensor | None]:
        return [_keep_all(f) if d <= self.window else None for d, f in enumerate(frames, 1)]


def uniform_subset(m: int, n: int) -> torch.Tensor:
    """n evenly spaced positions out of m in raster order (all of them if n >= m)."""
    if n >= m:
        return torch.arange(m)
    return torch.div(torch.arange(n) * m, n, rounding_mode="floor")


@dataclass(frozen=True)
class PackCachePolicy:
    """W history frames packed by an exponential decay budget (PackCache).

    Frame at distance d keeps `n_d = max(ceil(b_min V), round(budget V rho^min(d, W-1)))` of its
    V visible grid tokens (at most V), chosen evenly in raster order from what it kept at d - 1,
    plus its 4 boundary tokens; frames beyond W leave first (FIFO).
    """

    window: int = 4
    rho: float = 0.5
    budget: float = 1.0
    b_min: float = 1 / 8
    drop_masked: bool = True
    selector: str = "uniform"
    rebase: bool = True
    name: str = "packcache"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"packcache window must be >= 1, got {self.window}")
        if not 0 < self.rho <= 1:
            raise ValueError(f"packcache rho must be in (0, 1], got {self.rho}")
        if self.budget <= 0 or not 0 <= self.b_min <= 1:
            raise ValueError("packcache budget must be > 0 and b_min in [0, 1]")
        if self.selector != "uniform":
            raise ValueError(f"unknown packcache selector {self.selector!r} (available: uniform)")

    def visible_count(self, layout: FrameLayout, visible: torch.Tensor) -> int:
        if not self.drop_masked:
            return layout.grid_tokens
        return int(visible.sum()) - 4

    def frame_budget(self, d: int, v: int) -> int:
        """Grid tokens kept by a frame at distance d (1 = newest) with v visible tokens."""
        decayed = round(self.budget * v * self.rho ** min(d, self.window - 1))
        return min(v, max(math.ceil(self.b_min * v), decayed))

    def select(
        self, frames: Sequence[torch.Tensor], layout: FrameLayout, visible: torch.Tensor
    ) -> list[torch.Tensor | None]:
        v = self.visible_count(layout, visible)
        out: list[torch.Tensor | None] = []
        for d, local in enumerate(frames, 1):
            if d > self.window:
                out.append(None)
                continue
            boundary = boundary_mask(local, layout)
            candidates = ~boundary
            if self.drop_masked:
                candidates &= visible[local]
            cand_pos = torch.nonzero(candidates).flatten()  # positions of grid candidates
            chosen = cand_pos[uniform_subset(cand_pos.numel(), self.frame_budget(d, v))]
            keep = torch.cat((torch.nonzero(boundary).flatten(), chosen))
            out.append(keep.sort().values)
        return out


POLICIES: dict[str, type] = {
    "full": FullPolicy,
    "sliding": SlidingPolicy,
    "packcache": PackCachePolicy,
}


def make_policy(name: str, **params: object) -> CachePolicy:
    """Policy by name with its parameters; unknown names and parameters raise ValueError."""
    if name not in POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; available: {', '.join(POLICIES)}")
    try:
        policy: CachePolicy = POLICIES[name](**params)
        return policy
    except TypeError as e:
        raise ValueError(f"bad parameters for cache policy {name!r}: {e}") from e
