"""Per-layer causal state of one Cosmos decoding stream (one clip decoded latent frame by frame).

What it is: `CausalState`, the memory a causal video decoder needs to decode latent frame t
without re-reading frames 0..t-1: for every temporal convolution, its last `time_pad` input
frames; for every causal temporal attention, the keys and values of earlier frames (all of
them, or the last `window - 1`). The decoder's layers (`cosmos_net.py`) read and update their
own entry when they are given a state; without one they decode a whole clip. What it is not: a
decoder, or anything that knows the layer structure (entries are keyed by the layer object).

Key invariant: with `window=None`, feeding a clip through a state in any split into pushes
gives the whole-clip decode up to floating-point rounding, and the state's size stops growing
only in the attention entries; with a window, every entry has a fixed size once `window`
frames have been pushed, so frame 10,000 costs what frame `window` cost.
"""

from __future__ import annotations

import torch
from torch import nn


class CausalState:
    """Causal state of one stream; see the module docstring.

    Args:
        window: latent frames a frame's temporal attention sees, itself included (None: all
            frames pushed so far, which is exact for any length but grows by one frame of keys
            and values per push).
    """

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"attention window must be None or >= 1, got {window}")
        self.window = window
        self.frames = 0  # latent frames decoded so far; advanced by the decoder, once a push
        self._conv: dict[nn.Module, torch.Tensor] = {}  # layer -> (B, C, time_pad, H, W)
        self._kv: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}  # (BHW, 1, P, C)

    def extend(self, layer: nn.Module, x: torch.Tensor, time_pad: int) -> torch.Tensor:
        """`x` (B, C, T, H, W) with the `time_pad` input frames before it prepended, as the
        whole-clip convolution sees them (frame 0 repeated before the clip's first frame);
        keeps the last `time_pad` frames for the next push."""
        past = self._conv.get(layer)
        if past is None:
            past = x[:, :, :1].expand(-1, -1, time_pad, -1, -1)
        full = torch.cat([past, x], dim=2)  # (B, C, time_pad + T, H, W)
        self._conv[layer] = full[:, :, -time_pad:].clone()  # a copy: `full` is freed
        return full

    def attend(
        self, layer: nn.Module, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """New keys and values (N, 1, T, C) -> the keys and values the T new frames attend to
        (N, 1, P + T, C) and the causal mask among them (None when T = 1: no mask needed);
        keeps what the next push will attend to."""
        past = self._kv.get(layer)
        P = 0 if past is None else past[0].shape[2]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        T = k.shape[2] - P
        mask = None
        if T > 1:  # new frame i sees the past and new frames 0..i
            cols = torch.arange(P + T, device=k.device)
            mask = cols[None, :] <= P + torch.arange(T, device=k.device)[:, None]  # (T, P+T)
        if self.window is None:
            self._kv[layer] = (k, v)  # fresh tensors (cat) or this push's own projections
        elif self.window > 1:
            keep = self.window - 1  # copies, so the longer k and v are freed
            self._kv[layer] = (k[:, :, -keep:].clone(), v[:, :, -keep:].clone())
        return k, v, mask

    @property
    def nbytes(self) -> int:
        """Bytes held now (the decoder's weights and transient activations not counted)."""
        conv = sum(t.nbytes for t in self._conv.values())
        return conv + sum(k.nbytes + v.nbytes for k, v in self._kv.values())
