"""Token layout at real Lumos-1 sizes: frame geometry, headers, prompt text, positions, masks.

What it is: checks of `packcache_core.layout` against the numbers the spec derives for 384p and
256p (4084-token frames, P0 = n + 6, the 70% tube pattern), and agreement between the
geometry-based and token-based position builders. What it is not: the fixture comparison (see
`test_reference_model.py`, which checks the same functions against the reference's own ids).

Invariant: every expected number here comes from the spec (`lumos1-inference.md` §2-4), not
from running the code under test.
"""

from __future__ import annotations

import pytest
import torch

from packcache_core.config import CODE_OFFSET
from packcache_core.layout import (
    BOS,
    IMAGE_END,
    IMAGE_START,
    MASK,
    NEWLINE,
    SEP,
    VIDEO_END,
    VIDEO_START,
    FrameLayout,
    attention_allowed,
    frame_positions,
    header_tokens,
    history_mask_positions,
    latent_frames_for,
    positions_from_tokens,
    prompt_text,
    text_positions,
)

P384 = FrameLayout(48, 84)  # 672x384
P256 = FrameLayout(32, 56)  # 448x256


def branch_sequence(layout: FrameLayout, text_len: int, n_frames: int, seed: int = 0) -> list[int]:
    """[BOS] text [SEP] header, then `n_frames` frames of random codes (text_len = n)."""
    g = torch.Generator().manual_seed(seed)
    ids = [BOS] + [16000 + i for i in range(text_len - 2)] + [SEP] + header_tokens(2, 12)
    for _ in range(n_frames):
        codes = torch.randint(0, 64000, (layout.h, layout.w), generator=g)
        ids += layout.frame_tokens(codes).tolist()
    return ids


def test_frame_geometry_384p_and_256p() -> None:
    assert (P384.tokens, P384.grid_tokens, P384.n_codes) == (4084, 4080, 4032)
    assert P384.size_tokens == (8816, 8825)  # 384 / 32 = 12, 672 / 32 = 21
    assert P384.pixel_size == (384, 672)
    assert (P256.tokens, P256.n_codes, P256.pixel_size) == (1828, 1792, (256, 448))
    assert FrameLayout.from_size_tokens(8816, 8825) == P384


@pytest.mark.parametrize(("h", "w"), [(0, 84), (48, 0), (46, 84), (48, 82), (-4, 8)])
def test_frame_geometry_rejects_bad_grids(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        FrameLayout(h, w)


def test_frame_tokens() -> None:
    layout = FrameLayout(4, 8)
    codes = torch.arange(32).reshape(4, 8)
    frame = layout.frame_tokens(codes)
    assert frame.shape == (layout.tokens,)
    assert frame[:3].tolist() == [IMAGE_START, 8805, 8806] and int(frame[-1]) == IMAGE_END
    rows = frame[3:-1].reshape(4, 9)  # (h, w + 1)
    assert torch.equal(rows[:, :8], codes + CODE_OFFSET)
    assert (rows[:, 8] == NEWLINE).all()
    assert torch.equal(frame[layout.code_slots()], codes.flatten() + CODE_OFFSET)
    empty = layout.frame_tokens(None)
    assert (empty[layout.code_slots()] == MASK).all()
    assert int((empty == MASK).sum()) == layout.n_codes


@pytest.mark.parametrize(("rgb_frames", "latent"), [(1, 1), (5, 2), (12, 4), (24, 7), (48, 13)])
def test_latent_frames(rgb_frames: int, latent: int) -> None:
    assert latent_frames_for(rgb_frames) == latent


def test_header_and_prompt_text() -> None:
    assert header_tokens(seconds=2, fps=12) == [VIDEO_START, 8806, 8816]
    text = prompt_text("A cat.", width=672, height=384, fps=12, seconds=2)
    assert text == (
        "Generate a video with a resolution of 672x384, consisting of 24 frames at 12 frames "
        "per second, according to the following prompt:\n A cat."
    )


@pytest.mark.parametrize(("length", "n_masked"), [(4080, 2856), (1824, 1277), (36, 25)])
def test_history_pattern_counts(length: int, n_masked: int) -> None:
    pattern = history_mask_positions(length, 0.7)
    assert pattern.shape == (n_masked,)
    assert bool((pattern[1:] > pattern[:-1]).all()) and int(pattern[-1]) < length


def test_history_pattern_384p_keeps_2_5_8_mod_10() -> None:
    masked = set(history_mask_positions(4080, 0.7).tolist())
    kept = [i for i in range(4080) if i not in masked]
    assert {i % 10 for i in kept} == {2, 5, 8}
    assert len(kept) == 3 * 408
    assert history_mask_positions(4080, 0.0).numel() == 0


def test_positions_384p_match_spec_table() -> None:
    n = 266  # BOS + text + SEP in the repo's training sample
    p0 = n + 6
    pos = frame_positions(P384, frame=2, text_len=n)  # (5, 4084)
    start = n + 3 + 4084 * 2
    assert pos[0].tolist() == list(range(start, start + 4084))
    assert pos[4, :3].tolist() == [0, 0, 0] and int(pos[4, -1]) == 0
    assert int(pos[4].sum()) == P384.grid_tokens
    r, c = 5, 84  # the newline closing row 5
    j = 3 + 85 * r + c
    assert pos[1:4, j].tolist() == [p0 + 8, p0 + 8 * r, p0 + 672]
    assert pos[1:4, 3].tolist() == [p0 + 8, p0, p0]  # first code of frame 2


def test_uncond_positions_are_cond_shifted() -> None:
    n = 20
    cond = torch.tensor(branch_sequence(P256, n, n_frames=2))
    uncond = cond[n:]
    pc, pu = positions_from_tokens(cond), positions_from_tokens(uncond)
    assert torch.equal(pu[:4], pc[:4, n:] - n)
    assert torch.equal(pu[4], pc[4, n:])
    assert int(pu[1, torch.nonzero(pu[4])[0]]) == 6  # P0 = 6 in the uncond branch


def test_token_and_geometry_positions_agree_at_384p() -> None:
    n = 40
    ids = torch.tensor([*branch_sequence(P384, n, n_frames=3), VIDEO_END])
    parts = [text_positions(n + 3)]
    parts += [frame_positions(P384, f, n) for f in range(3)]
    parts.append(text_positions(1, start=ids.shape[0] - 1))
    assert torch.equal(positions_from_tokens(ids), torch.cat(parts, dim=1))


def test_positions_without_frames_are_1d() -> None:
    ids = torch.tensor([BOS, 16000, 16001, SEP, VIDEO_START])
    assert torch.equal(positions_from_tokens(ids), text_positions(5))


def test_attention_mask_structure() -> None:
    layout, n = FrameLayout(4, 8), 6
    ids = torch.tensor(branch_sequence(layout, n, n_frames=3))
    allowed = attention_allowed(ids)
    L = ids.shape[0]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    frame0 = slice(n + 3, n + 3 + layout.tokens)
    frame1 = slice(frame0.stop, frame0.stop + layout.tokens)
    assert torch.equal(allowed[: frame0.start], causal[: frame0.start])  # text + header causal
    assert allowed[frame0, frame0].all() and allowed[frame1, frame1].all()  # bidirectional
    assert not allowed[frame0, frame1].any()  # no frame sees a later one
    assert allowed[frame1, : frame0.stop].all()  # ... but sees all that came before
    expected = causal.clone()
    for f in range(3):
        s = n + 3 + f * layout.tokens
        expected[s : s + layout.tokens, s : s + layout.tokens] = True
    assert torch.equal(allowed, expected)
