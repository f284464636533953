"""Cache invariants over one policy matrix, and the equivalences of packcache-method.md §3.

A new policy is one line in POLICIES; every invariant below then runs on it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from packcache_core.cache import KVCache, plan_cache, simulate_history, visible_tokens
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest, cache_plan_for
from packcache_core.layout import FrameLayout, frame_positions, history_mask_positions
from packcache_core.loading import load_model
from packcache_core.model import LumosTransformer
from packcache_core.policy import (
    CachePolicy,
    FullPolicy,
    PackCacheFloorsPolicy,
    PackCachePolicy,
    SinkPolicy,
    SlidingPolicy,
    boundary_mask,
    make_policy,
    policy_from_spec,
)
from packcache_core.rope import RotaryTables, apply_rotary, rerotate

POLICIES: list[CachePolicy] = [
    FullPolicy(),
    SlidingPolicy(window=1),
    SlidingPolicy(window=3, rebase=False),
    PackCachePolicy(),
    PackCachePolicy(window=4),
    PackCachePolicy(window=2, rho=0.7, budget=0.5, rebase=False),
    PackCachePolicy(drop_masked=True),
    PackCachePolicy(selector="knorm", budget=2.0),
    PackCacheFloorsPolicy(),
    PackCacheFloorsPolicy(floor=0.3),
    PackCacheFloorsPolicy(window=3, rho=0.7, budget=0.5, rebase=False),
    SinkPolicy(),
    SinkPolicy(sink=2, window=2, budget=2.0, rebase=False),
]
LAYOUT = FrameLayout(4, 8)
FRAMES = 9  # latent frames, conditioning included
PROMPT = [0, *range(16000, 16012), 8710]


@pytest.fixture(scope="module")
def model() -> LumosTransformer:
    return load_model("builtin:tiny-random")


def request(frames: int = FRAMES, layout: FrameLayout = LAYOUT) -> VideoRequest:
    codes = torch.randint(
        0, 64000, (layout.h, layout.w), generator=torch.Generator().manual_seed(5)
    )
    return VideoRequest(PROMPT, codes, frames, fps=12, seconds=2)


def run(
    model: LumosTransformer,
    policy: CachePolicy,
    frames: int = FRAMES,
    seed: int = 0,
    steps: int = 2,
    check=None,
) -> list:  # type: ignore[no-untyped-def,type-arg]
    gen = VideoGeneration(model, request(frames), SamplingConfig(steps=steps), policy, seed)
    out = []
    while not gen.done:
        r = gen.step()
        if r is not None:
            out.append(r)
            if check is not None:
                check(gen, r)
    return out


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p))
def test_invariants(model: LumosTransformer, policy: CachePolicy) -> None:
    anchors: dict[str, torch.Tensor] = {}

    def check(gen: VideoGeneration, r) -> None:  # type: ignore[no-untyped-def]
        c, spec = gen.cache, gen.cache.spec
        assert c.used_tokens <= spec.capacity_tokens
        assert c.history_tokens <= spec.history_capacity
        A = spec.anchor_tokens
        snap = torch.cat([k[:, :, :A] for k in c.k])
        if "k" in anchors:  # anchors never move or change
            assert torch.equal(snap, anchors["k"])
        anchors["k"] = snap
        for h in c.history:  # every kept frame keeps its four boundary tokens
            assert int(boundary_mask(h.local, spec.layout).sum()) == 4
        packcache = PackCachePolicy | PackCacheFloorsPolicy
        if isinstance(policy, packcache | SlidingPolicy) and policy.rebase:
            # the current frame never sits later than frame W + 1
            assert r.frame_position <= policy.window + 1
            assert [h.frame for h in c.history] == list(range(1, len(c.history) + 1))
        grid = [int((~boundary_mask(h.local, spec.layout)).sum()) for h in reversed(c.history)]
        if isinstance(policy, PackCachePolicy):
            g = policy.candidates(spec.layout, gen.visible)
            assert grid == policy.frame_counts(len(grid), g)
            assert len(c.history) == min(c.frames_written, policy.window)
        if isinstance(policy, PackCacheFloorsPolicy):
            v = policy.visible_count(spec.layout, gen.visible)
            assert grid == [policy.frame_budget(d, v, spec.layout) for d in range(1, len(grid) + 1)]
            assert len(c.history) <= policy.window
        if isinstance(policy, SinkPolicy):
            assert len(c.history) <= policy.sink + policy.window
            if policy.rebase:
                assert r.frame_position <= policy.sink + policy.window + 1
            if c.frames_written > policy.sink + policy.window:  # the first frames stay
                assert [h.frame for h in c.history[: policy.sink]] == (
                    list(range(1, policy.sink + 1))
                )

    out = run(model, policy, check=check)
    assert [r.index for r in out] == list(range(1, FRAMES))
    assert all(r.codes.shape == (LAYOUT.h, LAYOUT.w) for r in out)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p))
def test_capacity_is_known_before_start(model: LumosTransformer, policy: CachePolicy) -> None:
    spec = cache_plan_for(model, request(), policy, SamplingConfig(steps=2))
    gen = VideoGeneration(model, request(), SamplingConfig(steps=2), policy)
    assert gen.cache.spec == spec
    assert gen.cache.k[0].shape[2] == spec.capacity_tokens
    per_layer = gen.cache.k[0].numel() * gen.cache.k[0].element_size()
    assert spec.bytes == 2 * len(gen.cache.k) * per_layer


def test_packcache_capacity_does_not_depend_on_length(model: LumosTransformer) -> None:
    caps = {
        n: cache_plan_for(model, request(n), PackCachePolicy()).capacity_tokens
        for n in (8, 100, 1000)
    }
    assert len(set(caps.values())) == 1
    full = [cache_plan_for(model, request(n), FullPolicy()).capacity_tokens for n in (8, 100)]
    assert full[1] > full[0]


def test_packcache_floors_capacity_formula() -> None:
    """Floors, then the rest of `budget` frames by decay; history = sum(n_d) + 4W."""
    lay = FrameLayout(48, 84)
    masked = history_mask_positions(lay.grid_tokens, 0.7)
    vis = visible_tokens(lay, masked)
    p = PackCacheFloorsPolicy(window=4)
    v = p.visible_count(lay, vis)
    assert v == 4080  # masked tokens are kept by default: every grid token is a candidate
    assert PackCacheFloorsPolicy(drop_masked=True).visible_count(lay, vis) == 1224  # 30% survive
    # floor ceil(4080 / 8) = 510 each; (4084 - 16 - 4 * 510) = 2028 shared 8:4:2:1
    budgets = [p.frame_budget(d, v, lay) for d in range(1, 5)]
    assert budgets == [510 + 1082, 510 + 541, 510 + 271, 510 + 136]
    assert simulate_history(p, lay, vis, write_backs=20) == sum(budgets) + 4 * 4
    cfg = load_model("builtin:tiny-random", device="meta").config
    spec = plan_cache(cfg, 200, lay, p, vis, 20, torch.bfloat16)
    assert spec.capacity_tokens == (200 + 3 + 4084) + sum(budgets) + 16 + 4084


@pytest.mark.parametrize("budget", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("layout", [FrameLayout(4, 8), FrameLayout(8, 16), FrameLayout(24, 44)])
def test_budget_is_history_memory_in_frames(budget: float, layout: FrameLayout) -> None:
    """`budget` frames of memory, at most W tokens over; equal memory to a window is one knob."""
    vis = visible_tokens(layout, history_mask_positions(layout.grid_tokens, 0.7))
    specs = (
        f"packcache-floors:budget={budget}",
        f"packcache-floors:budget={budget},window=6,rho=0.8",
    )
    for spec in specs:
        p = policy_from_spec(spec)
        held = simulate_history(p, layout, vis, write_backs=30)
        W = p.window  # type: ignore[attr-defined]
        floors = W * (4 + math.ceil(p.floor * layout.grid_tokens))  # type: ignore[attr-defined]
        # below the floors only if they exceed it; at most W whole frames
        target = min(max(budget * layout.tokens, floors), W * layout.tokens)
        assert target <= held <= target + W
    sink = SinkPolicy(budget=budget, window=2)
    held = simulate_history(sink, layout, vis, write_backs=30)
    target = min(budget * layout.tokens, 3 * layout.tokens)  # at most three whole frames
    assert target <= held <= target + 3
    window = simulate_history(SlidingPolicy(window=1), layout, vis, write_backs=30)
    assert window == layout.tokens


def test_knorm_keeps_the_smallest_key_norms(model: LumosTransformer) -> None:
    """What `knorm` keeps of the newest frame are exactly its lowest-scoring grid tokens."""
    policy = PackCachePolicy(selector="knorm", budget=0.5)  # the first frame is cut to half
    gen = VideoGeneration(model, request(4), SamplingConfig(steps=1), policy, seed=3)
    gen.step()  # prefill
    seen: list[torch.Tensor] = []
    original = gen.cache.token_scores

    def spy() -> torch.Tensor:
        seen.append(original())
        return seen[-1]

    gen.cache.token_scores = spy  # type: ignore[method-assign]
    gen.step()  # frame 1: written back, scored, packed
    (h,) = gen.cache.history
    score = seen[0]
    grid = torch.nonzero(~boundary_mask(torch.arange(LAYOUT.tokens), LAYOUT)).flatten()
    (n,) = policy.frame_counts(1, LAYOUT.grid_tokens)
    want = grid[torch.argsort(score[grid], stable=True)[:n]].sort().values
    kept = h.local[~boundary_mask(h.local, LAYOUT)]
    assert torch.equal(kept, want)
    assert h.score is not None and torch.equal(h.score, score[h.local])
    uniform = PackCachePolicy(budget=0.5).select([torch.arange(LAYOUT.tokens)], LAYOUT, gen.visible)
    assert not torch.equal(uniform[0], h.local)  # the selector changed which tokens stay


def test_packcache_keeping_everything_equals_full(model: LumosTransformer) -> None:
    keep_all = PackCachePolicy(window=FRAMES, budget=2.0 ** (FRAMES - 1))
    full = run(model, FullPolicy(), seed=11)
    packed = run(model, keep_all, seed=11)
    for a, b in zip(full, packed, strict=True):
        assert torch.equal(a.codes, b.codes)
        assert a.cache.used_tokens == b.cache.used_tokens


def test_steps_attend_without_a_mask_each_row_its_own_slots(
    model: LumosTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the prefill every forward (denoising steps and write-backs) calls SDPA with no
    mask, per row over one contiguous run of slots ending at the frame: the conditional row
    from its text's first slot, the unconditional row from the header (3 slots before frame
    0, its text slots held back)."""
    sdpa = F.scaled_dot_product_attention
    calls: list[tuple[int, int, bool]] = []

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: object) -> torch.Tensor:
        calls.append((q.shape[0], k.shape[2], kw.get("attn_mask") is None))
        return sdpa(q, k, v, **kw)  # type: ignore[arg-type]

    gen = VideoGeneration(model, request(5), SamplingConfig(steps=2), PackCachePolicy(), 0)
    gen.prefill()
    P, F_ = gen.cache.spec.prefix_tokens, LAYOUT.tokens
    assert gen.cache.row_start == (P - 3 - len(PROMPT), P - 3)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    while not gen.done:
        end = gen.cache.current_start + F_
        calls.clear()
        gen.step()
        first = gen.cache.row_start
        per_forward = [(1, end - first[0], True), (1, end - first[1], True)]
        assert calls and calls == per_forward * (len(calls) // 2)


def test_text_slots_held_for_a_new_prompt_change_no_bit(model: LumosTransformer) -> None:
    """A video that holds 200 text slots (a stream, for a prompt change) computes what the
    same request without them does, bit for bit: the held slots lie outside every row's range."""
    plain, held = (
        VideoGeneration(
            model, replace(request(5), text_slots=n), SamplingConfig(steps=2), PackCachePolicy(), 4
        )
        for n in (0, 200)
    )
    assert held.cache.spec.prefix_tokens == plain.cache.spec.prefix_tokens + 200 - len(PROMPT)
    assert torch.equal(plain.predict_frame(), held.predict_frame())
    codes: list[list[torch.Tensor]] = [[], []]
    for gen, out in zip((plain, held), codes, strict=True):
        while not gen.done:
            if (r := gen.step()) is not None:
                out.append(r.codes)
    assert len(codes[0]) == 4 and all(map(torch.equal, *codes))


def test_a_prompt_of_another_length_ends_where_the_first_did(model: LumosTransformer) -> None:
    """A layer-0 key depends on its token and position only: after a change to a longer, then
    a shorter prompt, the conditional row's header keys are those the first prompt wrote (same
    slots, same positions), and each row attends from the new text's first slot on."""
    req = replace(request(5), text_slots=40)
    gen = VideoGeneration(model, req, SamplingConfig(steps=2), PackCachePolicy(), 0)
    gen.prefill()
    P, k0 = gen.cache.spec.prefix_tokens, gen.cache.k[0]
    header = k0[:, :, P - 3 : P].clone()
    for prompt in ([0, *range(16100, 16130), 8710], [0, 16200, 8710]):
        gen._write_text(prompt)
        assert gen.cache.row_start == (P - 3 - len(prompt), P - 3)
        torch.testing.assert_close(k0[:, :, P - 3 : P], header, rtol=0, atol=1e-6)
    # the same header tokens at another position (the unconditional row's 0) have other keys
    assert not torch.allclose(header[0], header[1], atol=1e-3)


def test_same_seed_same_tokens_whatever_runs_beside(model: LumosTransformer) -> None:
    alone = run(model, PackCachePolicy(), seed=7)
    a = VideoGeneration(model, request(), SamplingConfig(steps=2), PackCachePolicy(), seed=7)
    b = VideoGeneration(model, request(), SamplingConfig(steps=2), FullPolicy(), seed=8)
    interleaved = []
    while not a.done:
        r = a.step()
        if not b.done:
            b.step()
        if r is not None:
            interleaved.append(r)
    assert all(torch.equal(x.codes, y.codes) for x, y in zip(alone, interleaved, strict=True))
    other = run(model, PackCachePolicy(), seed=8)
    assert not all(torch.equal(x.codes, y.codes) for x, y in zip(alone, other, strict=True))


def test_rerotate_round_trip() -> None:
    keys = torch.randn(2, 2, 50, 32)
    delta = torch.randn(2, 50, 16).double() * 100
    back = rerotate(rerotate(keys, delta), -delta)
    torch.testing.assert_close(back, keys, atol=1e-5, rtol=0)


def test_rebased_cache_equals_keys_rotated_from_scratch() -> None:
    """Pack with eviction + rebase, then compare every kept key, and the attention output of a
    query over the cache, with keys rotated at the rebased positions from scratch."""
    cfg = load_model("builtin:tiny-random", device="meta").config
    lay, text_len, D = LAYOUT, len(PROMPT), cfg.head_dim
    policy = SlidingPolicy(window=2)
    vis = visible_tokens(lay, history_mask_positions(lay.grid_tokens, 0.7))
    rope = RotaryTables(D, cfg.rope_theta, "cpu")
    cache = KVCache(
        plan_cache(cfg, text_len, lay, policy, vis, 3, torch.float32),
        policy,
        rope,
        torch.device("cpu"),
        torch.float32,
    )
    A, n_kv = cache.spec.anchor_tokens, cfg.num_key_value_heads
    raw = torch.randn(3, 2, n_kv, lay.tokens, D)  # pre-RoPE keys of frames 1..3

    def rotated(k: torch.Tensor, frame: int) -> torch.Tensor:
        pos = torch.stack([frame_positions(lay, frame, t) for t in (text_len, 0)], 1)
        cos, sin = rope.cos_sin(pos, torch.float32)  # (2, F, D)
        return apply_rotary(k, cos, sin)

    for f in range(3):  # write frames 1, 2, 3 at their absolute positions, packing after each
        start = cache.current_start
        cache.k[0][:, :, start : start + lay.tokens] = rotated(raw[f], f + 1)
        cache.commit_frame(f + 1, vis)
    assert [h.frame for h in cache.history] == [1, 2]  # frame 1 left; 2, 3 renumbered
    want = torch.cat([rotated(raw[1], 1), rotated(raw[2], 2)], dim=2)  # (2, n_kv, 2F, D)
    got = cache.k[0][:, :, A : A + 2 * lay.tokens]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    q = torch.randn(2, n_kv, 5, D)
    att = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(att(q, got, got), att(q, want, want), atol=2e-5, rtol=0)


def test_hundred_latent_frames_with_packcache(model: LumosTransformer) -> None:
    out = run(model, PackCachePolicy(), frames=100, steps=1)
    assert len(out) == 99
    caps = {r.cache.capacity_tokens for r in out}
    assert len(caps) == 1
    assert out[-1].frame_position == PackCachePolicy().window + 1
    used_after_fill = {r.cache.used_tokens for r in out[5:]}
    assert len(used_after_fill) == 1  # constant size once the window is full


def test_make_policy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown cache policy"):
        make_policy("lru")
    with pytest.raises(ValueError, match="bad parameters"):
        make_policy("packcache", windw=3)
    with pytest.raises(ValueError, match="window"):
        make_policy("sliding", window=0)
    assert math.isclose(make_policy("packcache", rho=0.25).rho, 0.25)  # type: ignore[attr-defined]


def test_rebase_at_keeps_positions_until_it_saturates_there() -> None:
    """`rebase_at` R: frames keep their own positions until the video reaches R, then the frame
    being made stays at R and the kept ones sit right before it, re-rotated exactly."""
    cfg = load_model("builtin:tiny-random", device="meta").config
    lay, text_len, D = LAYOUT, len(PROMPT), cfg.head_dim
    policy = SlidingPolicy(window=2, rebase_at=4)
    vis = visible_tokens(lay, history_mask_positions(lay.grid_tokens, 0.7))
    rope = RotaryTables(D, cfg.rope_theta, "cpu")
    cache = KVCache(
        plan_cache(cfg, text_len, lay, policy, vis, None, torch.float32),
        policy,
        rope,
        torch.device("cpu"),
        torch.float32,
    )
    A, n_kv = cache.spec.anchor_tokens, cfg.num_key_value_heads
    raw = torch.randn(7, 2, n_kv, lay.tokens, D)

    def rotated(k: torch.Tensor, frame: int) -> torch.Tensor:
        pos = torch.stack([frame_positions(lay, frame, t) for t in (text_len, 0)], 1)
        cos, sin = rope.cos_sin(pos, torch.float32)
        return apply_rotary(k, cos, sin)

    made = []
    for f in range(7):
        position = cache.next_frame_index
        made.append(position)
        start = cache.current_start
        cache.k[0][:, :, start : start + lay.tokens] = rotated(raw[f], position)
        cache.commit_frame(position, vis)
    assert made == [1, 2, 3, 4, 4, 4, 4]
    assert [h.frame for h in cache.history] == [2, 3] and cache.next_frame_index == 4
    want = torch.cat([rotated(raw[5], 2), rotated(raw[6], 3)], dim=2)
    torch.testing.assert_close(cache.k[0][:, :, A : A + 2 * lay.tokens], want, atol=5e-5, rtol=0)
