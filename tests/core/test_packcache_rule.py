"""`packcache` is the paper's rule, exactly (`packcache-method.md` section 3.1).

The shares table, the integer counts, the history after every write-back on Lumos-1's grid, the
nesting of what a frame keeps, and the equivalences the rule implies: with its defaults the
first two generated frames are those of a one-frame sliding window, bit for bit.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from packcache_core.cache import plan_cache, simulate_history, visible_tokens
from packcache_core.demo.rollout import pan_target
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import FrameLayout, history_mask_positions
from packcache_core.loading import load_model
from packcache_core.model import LumosTransformer
from packcache_core.policy import (
    POLICIES,
    CachePolicy,
    PackCachePolicy,
    PolicyError,
    boundary_mask,
    decay_shares,
    make_policy,
)

LUMOS = FrameLayout(48, 84)  # 672x384: G = 4080 grid tokens, 4084 a frame
G = LUMOS.grid_tokens
# Section 3.1 with rho = 1/2: the shares of the n frames held, newest first.
SHARES = {
    1: [1.0],
    2: [1 / 2, 1 / 2],
    3: [1 / 2, 1 / 4, 1 / 4],
    4: [1 / 2, 1 / 4, 1 / 8, 1 / 8],
    5: [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 16],
}


def held_after_each_write_back(
    policy: CachePolicy, layout: FrameLayout, write_backs: int
) -> list[list[torch.Tensor]]:
    """Per write-back, the frame-local tokens each held frame keeps (newest first)."""
    visible = visible_tokens(layout, history_mask_positions(layout.grid_tokens, 0.7))
    frames: list[torch.Tensor] = []
    out = []
    for _ in range(write_backs):
        frames.insert(0, torch.arange(layout.tokens))
        keep = policy.select(frames, layout, visible)
        frames = [f[k] for f, k in zip(frames, keep, strict=True) if k is not None]
        out.append(list(frames))
    return out


def grid_counts(frames: list[torch.Tensor], layout: FrameLayout) -> list[int]:
    return [int((~boundary_mask(f, layout)).sum()) for f in frames]


def test_registry_defaults_are_the_papers() -> None:
    p = make_policy("packcache")
    assert p == POLICIES["packcache"]()
    assert (p.window, p.rho, p.budget, p.drop_masked, p.selector, p.rebase) == (  # type: ignore[attr-defined]
        3,
        0.5,
        1.0,
        False,
        "uniform",
        True,
    )
    assert p.rebase_at == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("W", [2, 3, 4, 5])
def test_shares_table(W: int) -> None:
    """Fill, pack, slide: after the k-th write-back the n = min(k, W) frames held keep the
    shares of the table, each of G grid tokens (G divisible by 16 on Lumos-1's grid)."""
    for n in range(1, W + 1):
        assert decay_shares(n, 0.5) == SHARES[n]
    for k, frames in enumerate(held_after_each_write_back(PackCachePolicy(window=W), LUMOS, 8), 1):
        n = min(k, W)
        assert grid_counts(frames, LUMOS) == [round(s * G) for s in SHARES[n]]


@pytest.mark.parametrize("g", [36, 37, 136, 4080, 4081])
@pytest.mark.parametrize("budget", [0.5, 1.0, 2.0, 4.0])
def test_integer_counts(g: int, budget: float) -> None:
    """Floors, then the tokens left one by one to the newest frames: the counts sum to exactly
    min(G n, budget G) (floored), fall with distance, and never exceed a whole frame."""
    p = PackCachePolicy(budget=budget)
    for n in (1, 2, 3):
        counts = p.frame_counts(n, g)
        assert sum(counts) == min(g * n, math.floor(budget * g))
        assert counts == sorted(counts, reverse=True) and max(counts) <= g
        floors = [math.floor(min(g, budget * s * g)) for s in decay_shares(n, 0.5)]
        extra = [c - f for c, f in zip(counts, floors, strict=True) if f < g]  # not whole
        assert set(extra) <= {0, 1} and extra == sorted(extra, reverse=True)  # newest first


def test_clamp_at_budgets_above_one() -> None:
    """What the whole-frame clamp frees is not given to the others; 2^(W-1) keeps all whole."""
    assert PackCachePolicy(budget=2).frame_counts(3, G) == [G, G // 2, G // 2]
    assert PackCachePolicy(budget=2).frame_counts(1, G) == [G]
    assert PackCachePolicy(budget=3).frame_counts(3, G) == [G, 3 * G // 4, 3 * G // 4]
    assert PackCachePolicy(budget=4).frame_counts(3, G) == [G, G, G]


def test_history_on_lumos_grid_after_every_write_back() -> None:
    """Grid tokens exactly G, and G + 4 min(n, W) in all: 4084 / 4088 / 4092, then flat."""
    policy = PackCachePolicy()
    totals = []
    for frames in held_after_each_write_back(policy, LUMOS, 7):
        assert sum(grid_counts(frames, LUMOS)) == G
        totals.append(sum(f.numel() for f in frames))
    assert totals == [4084, 4088, 4092, 4092, 4092, 4092, 4092]
    vis = visible_tokens(LUMOS, history_mask_positions(G, 0.7))
    assert simulate_history(policy, LUMOS, vis, None) == 4092  # the open-ended capacity


@pytest.mark.parametrize("policy", [PackCachePolicy(), PackCachePolicy(window=5, rho=0.7)])
def test_a_frame_keeps_a_subset_of_what_it_kept(policy: PackCachePolicy) -> None:
    history = held_after_each_write_back(policy, FrameLayout(8, 16), 9)
    for before, after in itertools.pairwise(history):
        # after the next write-back, the frame at d + 1 is the one that was at d
        for old, new in zip(before, after[1:], strict=False):
            assert set(new.tolist()) <= set(old.tolist())
            assert int(boundary_mask(new, FrameLayout(8, 16)).sum()) == 4


def test_uniform_keeps_the_same_positions_in_every_frame() -> None:
    """`uniform` (our reading of the paper's "most informative" tokens) keeps the same raster
    positions in every held frame: the two older frames keep one quarter, within the newest
    frame's half. So how much of the next frame the history holds depends on the motion: on the demo
    grid with three frames held, half for a still camera, 11/16 for one moving a patch a frame
    sideways and 5/8 vertically (README, "What stops the text-only pan")."""
    lay = FrameLayout(8, 16)
    held = held_after_each_write_back(PackCachePolicy(), lay, 5)[-1]  # newest first

    def grid(local: torch.Tensor) -> torch.Tensor:
        kept = torch.zeros(lay.tokens, dtype=torch.bool)
        kept[local] = True
        return kept[lay.code_slots()].view(lay.h, lay.w)

    grids = [grid(f) for f in held]
    assert [int(g.sum()) for g in grids] == [64, 32, 32]
    assert torch.equal(grids[1], grids[2]) and bool((grids[1] <= grids[0]).all())

    def covered(dy: int, dx: int) -> float:
        """Share of the next frame held, the camera moving (dy, dx) patches a frame."""
        found = torch.zeros(lay.h, lay.w, dtype=torch.bool)
        for d, g in enumerate(grids, 1):  # frame t - d is d moves away
            found |= pan_target(g, torch.zeros_like(g), (d * dy, d * dx))
        return float(found.float().mean())

    assert covered(0, 0) == 0.5
    assert covered(0, 1) == covered(0, -1) == 11 / 16
    assert covered(1, 0) == 5 / 8


@pytest.fixture(scope="module")
def model() -> LumosTransformer:
    return load_model("builtin:tiny-random")


def frames_with_logits(
    model: LumosTransformer, policy: CachePolicy, frames: int = 5
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(first-step guided logits, sampled codes) of every generated frame."""
    layout = FrameLayout(4, 8)
    codes = torch.randint(
        0, 64000, (layout.h, layout.w), generator=torch.Generator().manual_seed(5)
    )
    req = VideoRequest([0, *range(16000, 16012), 8710], codes, frames, fps=12, seconds=2)
    gen = VideoGeneration(model, req, SamplingConfig(steps=2), policy, seed=3)
    out = []
    while not gen.done:
        logits = gen.predict_frame()
        result = None
        while result is None:
            result = gen.step()
        out.append((logits, result.codes))
    return out


def test_first_two_frames_are_a_one_frame_windows(model: LumosTransformer) -> None:
    """Frames 1 and 2 hold nothing, then frame 1 whole at its own position, like `sliding`
    window 1: bitwise equal logits and tokens. At frame 3 the window has rebased frame 2 next
    to the anchors, while PackCache holds two half frames: the logits differ."""
    packed = frames_with_logits(model, make_policy("packcache"))
    window = frames_with_logits(model, make_policy("sliding", window=1))
    for (la, ca), (lb, cb) in zip(packed[:2], window[:2], strict=True):
        assert torch.equal(la, lb) and torch.equal(ca, cb)
    assert not torch.allclose(packed[2][0], window[2][0])


def test_b_min_is_the_window_said_another_way() -> None:
    assert make_policy("packcache", b_min=0.125).window == 4  # type: ignore[attr-defined]
    assert make_policy("packcache", b_min=0.25, window=3).window == 3  # type: ignore[attr-defined]
    with pytest.raises(PolicyError, match="4-frame window") as e:
        make_policy("packcache", b_min=0.125, window=3)
    assert e.value.param == "b_min"
    with pytest.raises(PolicyError, match=r"2\^-\(W-1\)") as e:
        make_policy("packcache", b_min=0.3)
    assert e.value.param == "b_min"


def test_a_budget_that_leaves_a_frame_no_grid_token_is_refused() -> None:
    """On a 4x8 grid (36 grid tokens) budget 0.05 gives the oldest frame 0.45 of a token."""
    cfg = load_model("builtin:tiny-random", device="meta").config
    layout = FrameLayout(4, 8)
    vis = visible_tokens(layout, history_mask_positions(layout.grid_tokens, 0.7))
    with pytest.raises(PolicyError, match="no grid token") as e:
        plan_cache(cfg, 10, layout, PackCachePolicy(budget=0.05), vis, 8, torch.float32)
    assert e.value.param == "budget"
    lumos_vis = visible_tokens(LUMOS, history_mask_positions(G, 0.7))
    plan_cache(cfg, 10, LUMOS, PackCachePolicy(budget=0.05), lumos_vis, 8, torch.float32)
