"""Finite scalar quantisation (FSQ) index arithmetic: index <-> digits <-> codes.

What it is: the mixed-radix bookkeeping of an FSQ codebook, vectorised over any leading shape.
Cosmos DV4x8x8 uses levels (8, 8, 8, 5, 5, 5), i.e. 64000 codes with basis
[1, 8, 64, 512, 2560, 12800]. What it is not: the learned part of a quantiser (Cosmos squashes
its latent with a tanh before rounding; that lives in the network, see `cosmos_net.py`).

Key invariant: for every index i in [0, n_codes), `codes_to_indices(indices_to_codes(i)) == i`,
and `indices_to_codes` only produces values on the grid (d - L//2) / (L//2), d in [0, L).
For an even L the grid is asymmetric ([-1, 1 - 2/L]); for an odd L it is [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FSQ:
    """A codebook of `prod(levels)` codes; digit i of an index has `levels[i]` values."""

    levels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.levels or any(level < 2 for level in self.levels):
            raise ValueError(f"FSQ levels must be a non-empty tuple of ints >= 2: {self.levels}")

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def n_codes(self) -> int:
        return math.prod(self.levels)

    @property
    def basis(self) -> tuple[int, ...]:
        """Place value of each digit: basis[i] = prod(levels[:i])."""
        return tuple(math.prod(self.levels[:i]) for i in range(self.dim))

    def _consts(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = torch.tensor(self.levels, dtype=torch.int64, device=device)
        basis = torch.tensor(self.basis, dtype=torch.int64, device=device)
        return levels, basis, levels // 2

    def indices_to_digits(self, indices: torch.Tensor) -> torch.Tensor:
        """int (...) -> int64 (..., dim), digit i in [0, levels[i])."""
        levels, basis, _ = self._consts(indices.device)
        return (indices.to(torch.int64).unsqueeze(-1) // basis) % levels

    def digits_to_indices(self, digits: torch.Tensor) -> torch.Tensor:
        """int (..., dim) -> int64 (...)."""
        _, basis, _ = self._consts(digits.device)
        return (digits.to(torch.int64) * basis).sum(-1)

    def digits_to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        """int (..., dim) -> float32 (..., dim) on the grid (d - L//2) / (L//2)."""
        _, _, half = self._consts(digits.device)
        return (digits.to(torch.int64) - half).to(torch.float32) / half.to(torch.float32)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """int (...) -> float32 (..., dim): what the decoder's inverse quantiser feeds on."""
        return self.digits_to_codes(self.indices_to_digits(indices))

    def quantize_digits(self, x: torch.Tensor) -> torch.Tensor:
        """Digits of the nearest grid point of each coordinate: float (..., dim) -> int64.

        Values outside the grid clamp to its ends. Exact ties round half to even
        (`torch.round`), so a value midway between two levels goes to the even digit.
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected a last dimension of {self.dim}, got shape {tuple(x.shape)}")
        levels, _, half = self._consts(x.device)
        d = torch.round(x.to(torch.float32) * half + half)  # (..., dim), real-valued digit
        return torch.minimum(d.clamp(min=0).to(torch.int64), levels - 1)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest grid point of each coordinate: float (..., dim) -> (codes, int64 indices)."""
        digits = self.quantize_digits(x)
        return self.digits_to_codes(digits), self.digits_to_indices(digits)


COSMOS_FSQ = FSQ((8, 8, 8, 5, 5, 5))
