"""The long clips of `builtin:demo-long`: determinism, camera paths, re-entry, the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packcache_core.demo.long import (
    LONG_HEIGHT,
    LONG_WIDTH,
    SWAY_BACK,
    SWAY_FORWARD,
    make_long_clip,
)
from packcache_core.video import load_video_tokenizer


def first(motion: str, split: str = "heldout") -> int:
    return next(i for i in range(200) if make_long_clip(split, i).motion == motion)


def test_clips_are_pure_functions_of_their_arguments() -> None:
    a = make_long_clip("train", 3, 16).latent_frames(16)
    b = make_long_clip("train", 3, 16).latent_frames(16)
    assert torch.equal(a, b) and a.shape == (16, LONG_HEIGHT, LONG_WIDTH, 3)
    assert not torch.equal(a, make_long_clip("heldout", 3, 16).latent_frames(16))
    with pytest.raises(ValueError, match="unknown split"):
        make_long_clip("test", 0)


def test_sway_goes_forward_then_back_and_drifts() -> None:
    clip = make_long_clip("heldout", first("sway"))
    cols = clip.camera_columns(40)
    moves = np.diff(cols) * clip.sign
    cycle = SWAY_FORWARD + SWAY_BACK
    assert sorted(set(moves.tolist())) == [-1, 1]
    for k in range(cycle, moves.size):  # periodic, 4 forward and 2 back per cycle
        assert moves[k] == moves[k - cycle]
    assert moves[:cycle].sum() == SWAY_FORWARD - SWAY_BACK
    assert clip.reentry(40).sum() > 10  # it keeps returning over ground it left


def test_a_pan_shifts_whole_patches_and_never_reenters() -> None:
    clip = make_long_clip("heldout", first("pan"))
    frames = clip.latent_frames(6)
    step = 8 * clip.sign
    if step > 0:  # content moves left when the camera moves right
        assert torch.equal(frames[1][:, :-step], frames[0][:, step:])
    else:
        assert torch.equal(frames[1][:, -step:], frames[0][:, :step])
    assert not clip.reentry(30).any()


def test_an_object_leaves_and_comes_back() -> None:
    clip = make_long_clip("heldout", first("return"))
    visible = clip.object_visible(40)
    gone = np.flatnonzero(~visible)
    assert gone.size > 0 and visible[0]
    back = next(t for t in range(gone[0], 40) if visible[t])  # it returns within 40 frames
    reentry = clip.reentry(40)
    assert reentry[back] and not reentry[gone].any()  # back: a re-entry; away: none
    assert not reentry[1 : gone[0]].any()


def test_oracle_copies_what_was_seen_and_freezes_the_rest() -> None:
    tok = load_video_tokenizer("builtin:patch-small")
    clip = make_long_clip("heldout", first("sway"))
    codes = torch.stack([tok.encode_image(f) for f in clip.latent_frames(16)])
    oracle = clip.oracle_codes(codes)
    cols = clip.camera_columns(16)
    for t in range(1, 16):
        seen = set().union(*(range(c, c + 8) for c in cols[:t]))
        for j in range(8):
            if cols[t] + j in seen:  # seen before: the oracle is right
                assert torch.equal(oracle[t - 1, :, j], codes[t, :, j])
    freeze = (codes[:-1] == codes[1:]).float().mean()
    assert (oracle == codes[1:]).float().mean() > freeze + 0.2
