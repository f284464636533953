"""The sampler step: schedule, temperature, draws and re-masking."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from packcache_core.config import CODE_OFFSET
from packcache_core.layout import MASK
from packcache_core.sampling import (
    GeneratorNoise,
    cosine_mask_len,
    guided_draw,
    inverse_cdf_draw,
    next_temperature,
    remask,
)


def test_schedule_matches_reference_counts() -> None:
    """lumos1-inference.md §4: with T = 50 and 4032 slots, still masked after steps 0, 1, 2, ...
    is 4030, 4024, 4014, 4000, 3982, ..., 379, 253, 126; step 0 reveals only 2."""
    counts = [cosine_mask_len(s, 50, 4032) for s in range(49)]
    assert counts[:5] == [4030, 4024, 4014, 4000, 3982]
    assert counts[-3:] == [379, 253, 126]
    assert all(a > b for a, b in itertools.pairwise(counts))


def test_temperature_is_a_running_product() -> None:
    temps, t = [], 1.0
    for s in range(4):
        t = next_temperature(t, s, 4)
        temps.append(t)
    assert temps == [0.75, 0.375, 0.09375, 0.0]
    assert next_temperature(0.0, 0, 4) == 0.0  # later frames: pure confidence ordering


@pytest.mark.parametrize("V", [7, 300, 64000])
def test_inverse_cdf_draw_follows_softmax(V: int) -> None:
    """Empirical frequencies match softmax within a chi-square bound (p < 1e-6 to fail)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(V, generator=g)
    logits[8:] -= 8  # most mass on 8 entries, the tail pooled into one cell
    N = 20000 if V < 1000 else 1500  # (N, V) float32 temporaries stay under ~0.5 GB
    idx, lse = inverse_cdf_draw(logits.expand(N, V).contiguous(), torch.rand(N, generator=g))
    p = torch.softmax(logits.double(), -1)
    torch.testing.assert_close(
        lse[0].double(), torch.logsumexp(logits.double(), -1), atol=1e-5, rtol=0
    )
    top = p.argsort(descending=True)[:8]  # cells with expected count >= 5 (others pooled)
    counts = torch.bincount(idx, minlength=V).double()
    obs = torch.cat([counts[top], (N - counts[top].sum())[None]])
    exp = torch.cat([p[top] * N, (N * (1 - p[top].sum()))[None]])
    keep = exp > 5
    chi2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 12 * math.sqrt(2 * dof) + 20, (chi2, dof)


def test_draw_never_picks_an_impossible_code() -> None:
    logits = torch.full((512, 64000), float("-inf"))
    allowed = torch.tensor([5, 17, 63999])
    logits[:, allowed] = 0.0
    idx, _ = inverse_cdf_draw(logits, torch.rand(512, generator=torch.Generator().manual_seed(1)))
    assert bool(torch.isin(idx, allowed).all())


def test_same_seed_same_draws() -> None:
    logits = torch.randn(64, 1000)
    rows = torch.arange(64)

    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = GeneratorNoise(torch.Generator().manual_seed(seed))
        return guided_draw(logits, logits * 0.5, 15.0, noise, rows, 64)

    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_drawing_some_slots_draws_what_drawing_all_does() -> None:
    """Logits of the slots still masked only: those slots get the draws of the full chunk,
    and the generator ends where it would, so later draws do not change either."""
    logits = torch.randn(64, 1000)
    rows = torch.tensor([0, 3, 4, 17, 40, 63])
    g_all, g_some = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    every, p_every = guided_draw(
        logits, logits * 0.5, 15.0, GeneratorNoise(g_all), rows.new_tensor(range(64)), 64
    )
    some, p_some = guided_draw(
        logits[rows], logits[rows] * 0.5, 15.0, GeneratorNoise(g_some), rows, 64
    )
    assert torch.equal(some, every[rows]) and torch.equal(p_some, p_every[rows])
    assert torch.equal(g_all.get_state(), g_some.get_state())


def test_remask_keeps_known_and_hides_least_confident() -> None:
    N = 32
    ids = torch.full((N,), MASK)
    ids[:4] = CODE_OFFSET + torch.arange(4)  # known
    drawn = torch.arange(N) + 100
    probs = torch.linspace(0.01, 0.9, N)
    u = torch.full((N,), 0.5)
    out = remask(ids, drawn, probs, u, temperature=0.0, mask_len=10, last=False)
    assert torch.equal(out[:4], ids[:4])
    hidden = out == MASK
    assert int(hidden.sum()) == 10
    # with temperature 0 the least probable unknown slots (4..13) are the ones hidden again
    assert bool(hidden[4:14].all())
    final = remask(ids, drawn, probs, u, temperature=0.0, mask_len=10, last=True)
    assert not bool((final == MASK).any())
    assert torch.equal(final[4:], drawn[4:] + CODE_OFFSET)


def test_remask_clamps_to_leave_one_revealed() -> None:
    ids = torch.full((8,), MASK)
    out = remask(ids, torch.arange(8), torch.full((8,), 0.1), torch.rand(8), 1.0, 100, False)
    assert int((out == MASK).sum()) == 7  # mask_len clamped to n_unknown - 1
