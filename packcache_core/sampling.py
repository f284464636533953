"""One MaskGIT denoising step of Lumos-1's AR-DF sampler, on the video-code range only.

What it is: classifier-free guidance, a categorical draw per code slot, confidence re-masking
on the cosine schedule, and the reference's Gumbel temperature. What it is not: a forward
pass, or anything that sees the full 129536-id vocabulary: logits arrive as (.., n_codes).

Equivalence to the reference (the official Lumos-1 sampler; its numbers are in
`tests/fixtures/lumos_ref`): the reference draws
`torch.multinomial(softmax(logits))` per slot over the whole vocabulary; we draw from the same
distribution over the code range (everything else has probability 0) by inverting the CDF at
one uniform per slot, without a per-entry random number or a normalised probability table.
Everything after the draw (confidence, `mask_len` from the total slot count, cut at the sorted
value, last step keeps all) follows the reference exactly, so with injected draws and uniforms
the tokens match.

Invariant: known slots never change; unknown slots become known or stay MASK; after the last
step every slot is known.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from packcache_core.config import CODE_OFFSET
from packcache_core.layout import MASK

FLOAT_MAX_LOG = math.log(torch.finfo(torch.float32).max)
SAMPLE_CHUNK = 1024  # code slots per sampling chunk: bounds the (chunk, n_codes) temporaries
SAMPLE_BLOCK = 256  # vocabulary block of the two-level inverse CDF


class SamplerNoise(Protocol):
    """Source of the step's randomness (replaceable in tests by recorded draws)."""

    def draw(
        self, logits: torch.Tensor, rows: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Categorical draw per row of float32 logits (m, V) -> (index (m,), logsumexp (m,)).

        The logits are rows `rows` (m,) of a chunk of `n` slots (the slots still to draw);
        the randomness advances as if all `n` were drawn, so which slots are still masked
        never changes the draws of the others (or of later steps)."""
        ...

    def uniform(self, n: int, device: torch.device) -> torch.Tensor:
        """(n,) float32 U(0, 1) behind the Gumbel confidence noise."""
        ...


def inverse_cdf_draw(logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One categorical draw per row of softmax(logits), by inverting the CDF at u.

    logits (N, V) float32, u (N,) U(0, 1). Returns (index (N,), log-sum-exp (N,)). Two levels
    keep it cheap: block sums pick the block (float64 prefix over V/256 blocks), then a
    256-wide prefix picks the entry, so no (N, V) cumulative sum or per-entry random number is
    ever made (one exp pass and one reduction over the logits).
    """
    N, V = logits.shape
    block = min(SAMPLE_BLOCK, V)
    m = logits.max(dim=-1, keepdim=True).values  # (N, 1)
    p = torch.sub(logits, m).exp_()  # (N, V) unnormalised; one temporary, exp in place
    if V % block:
        p = torch.nn.functional.pad(p, (0, -V % block))  # (N, V+pad)
    p = p.view(N, -1, block)  # (N, nb, block)
    cdf = p.sum(-1).double().cumsum(-1)  # (N, nb)
    total = cdf[:, -1:]  # (N, 1)
    target = u.double()[:, None] * total  # (N, 1)
    b = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[1] - 1)  # (N, 1)
    before = torch.where(b > 0, cdf.gather(1, (b - 1).clamp(min=0)), 0.0)  # (N, 1)
    inner = p.gather(1, b[:, :, None].expand(-1, -1, block)).squeeze(1).double().cumsum(-1)
    j = torch.searchsorted(inner, target - before, right=True).clamp_(max=block - 1)
    idx = (b * block + j).squeeze(1).clamp_(max=V - 1)
    return idx, (m + total.log().float()).squeeze(1)


class GeneratorNoise:
    """Draws from a request's own `torch.Generator`: same seed, same tokens."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def draw(
        self, logits: torch.Tensor, rows: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return inverse_cdf_draw(logits, self.uniform(n, logits.device)[rows])

    def uniform(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.rand(n, device=device, generator=self.generator)


def cosine_mask_len(step: int, steps: int, n_slots: int) -> int:
    """Slots to re-mask after `step` before clamping: floor(N cos(pi/2 (step+1)/T)), float32."""
    ratio = torch.tensor((step + 1) / steps, dtype=torch.float32)
    return int(torch.floor(n_slots * torch.cos(math.pi / 2 * ratio)))


def next_temperature(temperature: float, step: int, steps: int) -> float:
    """The reference's running product: temperature *= 1 - (step+1)/T before each step."""
    return temperature * (1 - (step + 1) / steps)


def guided_draw(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    noise: SamplerNoise,
    rows: torch.Tensor,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CFG then one draw per slot, for the slots `rows` (m,) of a chunk of `n` (see
    `SamplerNoise.draw`).

    cond, uncond: float32 (m, V) code logits. Returns (codes (m,) int64, prob of each drawn code
    (m,) float32)."""
    # (m, V) float32: scale * (c - u) + u as the reference combines them, op for op, in one
    # temporary (the same roundings, so the same bits)
    return draw(torch.sub(cond, uncond).mul_(scale).add_(uncond), noise, rows, n)


def draw(
    logits: torch.Tensor, noise: SamplerNoise, rows: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per slot from guided float32 (m, V) logits -> (codes (m,), their probs (m,))."""
    drawn, lse = noise.draw(logits, rows, n)
    return drawn, (logits.gather(-1, drawn[:, None]).squeeze(-1) - lse).exp()


def remask(
    ids: torch.Tensor,
    drawn: torch.Tensor,
    probs: torch.Tensor,
    uniform: torch.Tensor,
    temperature: float,
    mask_len: int,
    last: bool,
) -> torch.Tensor:
    """New slot ids after one step.

    ids: (N,) current ids (MASK = unknown); drawn: (N,) code indices; probs: (N,) probability of
    each draw; uniform: (N,) U(0,1); mask_len: the unclamped cosine count. No host sync.
    """
    unknown = ids == MASK
    merged = torch.where(unknown, drawn + CODE_OFFSET, ids)
    if last:
        return merged
    gumbel = -torch.log(torch.clamp(-torch.log(torch.clamp(uniform, min=1e-20)), min=1e-20))
    log_p = torch.log(torch.clamp(probs, min=1e-20))
    conf = torch.where(unknown, log_p, torch.full_like(log_p, FLOAT_MAX_LOG)) + temperature * gumbel
    n_unknown = unknown.sum()
    k = torch.clamp(torch.clamp(n_unknown - 1, max=mask_len), min=1)  # device scalar
    cut = conf.sort().values.gather(0, k.reshape(1))
    return torch.where(conf < cut, torch.full_like(merged, MASK), merged)
