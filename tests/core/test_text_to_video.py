"""Text-to-video through the one generation path: every cache policy, frame 0 as the first
history frame (written with the AR-DF mask, as the official code writes it), text-to-image as
one latent frame, resume, and the pipeline without an image.

Exactness against the official code is `test_generate_t2v_reference.py`; this file runs the
policy matrix of `test_cache_policies.py` on the same mechanics.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import MASK, history_mask_positions
from packcache_core.model import LumosTransformer
from packcache_core.pipeline import Pipeline, VideoParams
from packcache_core.policy import (
    CachePolicy,
    FullPolicy,
    PackCachePolicy,
    SinkPolicy,
    SlidingPolicy,
    frames_held,
)
from tests.core.test_cache_policies import LAYOUT, POLICIES, PROMPT

FRAMES = 4  # latent frames, all generated


def t2v(frames: int = FRAMES) -> VideoRequest:
    return VideoRequest(PROMPT, None, frames, fps=12, seconds=2, grid=(LAYOUT.h, LAYOUT.w))


def generate(
    model: LumosTransformer, policy: CachePolicy, frames: int = FRAMES, seed: int = 0
) -> tuple[VideoGeneration, list]:  # type: ignore[type-arg]
    gen = VideoGeneration(model, t2v(frames), SamplingConfig(steps=1), policy, seed)
    out = []
    while not gen.done:
        r = gen.step()
        if r is not None:
            out.append(r)
            c = gen.cache
            assert c.used_tokens <= c.spec.capacity_tokens, "over capacity"
            assert c.history_tokens <= c.spec.history_capacity
    return gen, out


@pytest.fixture(scope="module")
def model() -> LumosTransformer:
    from packcache_core.loading import load_model

    return load_model("builtin:tiny-random")


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p))
def test_every_policy_runs_text_to_video(model: LumosTransformer, policy: CachePolicy) -> None:
    gen, out = generate(model, policy)
    spec = gen.cache.spec
    assert spec.anchor_tokens == spec.prefix_tokens, "no clean frame-0 anchor"
    assert [r.index for r in out] == list(range(1, FRAMES + 1))
    assert out[0].frame_position == 0  # frame 0 is generated at temporal index 0
    for r in out:
        assert r.codes.shape == (LAYOUT.h, LAYOUT.w)
        assert int(r.codes.min()) >= 0 and int(r.codes.max()) < model.config.n_codes
    held = frames_held(policy)
    history = gen.cache.history
    if held is not None:
        assert len(history) <= held
    if policy.rebase:  # the retained history sits right before the next frame, from 0
        assert [h.frame for h in history] == list(range(len(history)))
    else:
        assert [h.frame for h in history] == sorted(h.frame for h in history)


def test_frame_zero_is_a_history_frame(model: LumosTransformer) -> None:
    """Frame 0 is written back with the AR-DF mask (its grid at the mask pattern is MASK), and a
    policy treats it as it treats any history frame: `full` keeps it, a one-frame window drops
    it once a newer frame is written, a sink keeps it for good."""
    gen, _ = generate(model, FullPolicy(), frames=3)
    first = gen.cache.history[0]
    assert first.frame == 0 and first.tokens is not None
    masked = history_mask_positions(LAYOUT.grid_tokens, 0.7)
    assert bool((first.tokens[3 + masked] == MASK).all())
    assert [h.frame for h in gen.cache.history] == [0, 1]

    gen, _ = generate(model, SlidingPolicy(window=1, rebase=False), frames=4)
    assert [h.frame for h in gen.cache.history] == [2]  # frame 0 left the window
    gen, _ = generate(model, SinkPolicy(sink=1, window=1, rebase=False), frames=5)
    assert [h.frame for h in gen.cache.history] == [0, 3]  # frame 0 is the sink


def test_text_to_image_is_one_latent_frame(model: LumosTransformer) -> None:
    gen, out = generate(model, PackCachePolicy(), frames=1)
    assert len(out) == 1 and gen.total_frames == 1
    assert gen.cache.spec.history_capacity == 0 and gen.cache.frames_written == 0
    with pytest.raises(ValueError, match="grid"):
        VideoRequest(PROMPT, None, 1)
    with pytest.raises(ValueError, match="latent_frames"):
        VideoRequest(PROMPT, None, 0, grid=(4, 8))


@pytest.mark.parametrize("policy", [FullPolicy(), PackCachePolicy()], ids=repr)
def test_resume_gives_the_uninterrupted_frames(
    model: LumosTransformer, policy: CachePolicy
) -> None:
    """Rebuilt from recorded frames 0 and 1 (and the sampler state after them), the rest of a
    text-to-video run is the one an uninterrupted run draws."""
    _, whole = generate(model, policy, seed=3)
    gen = VideoGeneration(model, t2v(), SamplingConfig(steps=1), policy, seed=3)
    replayed = gen.resume([r.codes for r in whole[:2]], whole[1].state)
    assert [r.frame_position for r in replayed] == [r.frame_position for r in whole[:2]]
    rest = []
    while not gen.done:
        if (r := gen.step()) is not None:
            rest.append(r)
    assert len(rest) == FRAMES - 2
    for a, b in zip(rest, whole[2:], strict=True):
        assert torch.equal(a.codes, b.codes) and a.frame_position == b.frame_position


def test_pipeline_without_an_image() -> None:
    """`prepare(None, ...)`: the size asked, no conditioning frame; the RGB frames come from
    the generated latent frames only, as many as an image-to-video run of the same length."""
    pipe = Pipeline.load("builtin:tiny-random")
    params = VideoParams(
        "a red square",
        latent_frames=3,
        size=(64, 32),
        sampling=SamplingConfig(steps=1),
        text_only=True,
    )
    with pytest.raises(ValueError, match="text_only"):
        pipe.prepare(None, replace(params, text_only=False))
    prepared = pipe.prepare(None, params)
    assert prepared.image is None and prepared.size == (64, 32)
    assert prepared.request.first_frame is None and prepared.request.first_index == 0
    run = pipe.start(prepared, pipe.plan(prepared))
    assert tuple(run.first_rgb().shape) == (0, 32, 64, 3)
    rgb = []
    while not run.done:
        if (o := run.step()) is not None:
            rgb.append(o.rgb)
    run.close()
    video = torch.cat(rgb)
    assert video.shape == (params.num_frames, 32, 64, 3) and video.dtype == torch.uint8
    assert [int(f.shape[0]) for f in rgb] == [1, 4, 4]

    # No size asked and no card size: the official t2v table, else the 7:4 bucket.
    assert pipe.defaults.size is None
    assert pipe.text_size() == (160, 96)
    assert replace(pipe, target_size=528).text_size() == (672, 384)
    assert replace(pipe, target_size=352).text_size() == (448, 256)


def test_a_prompt_change_recaches_frame_zero_as_history(model: LumosTransformer) -> None:
    """A prompt change mid-video (LongLive's re-cache) redoes the history, frame 0 included,
    under the new text; frames before the change are those of the unchanged video."""
    other = [0, *range(16100, 16120), 8710]
    plain = generate(model, FullPolicy(), seed=4)[1]
    request = VideoRequest(
        PROMPT, None, FRAMES, grid=(LAYOUT.h, LAYOUT.w), prompt_changes=((3, other),)
    )
    gen = VideoGeneration(model, request, SamplingConfig(steps=1), FullPolicy(), seed=4)
    changed = []
    while not gen.done:
        if (r := gen.step()) is not None:
            changed.append(r)
    assert [r.index for r in changed] == list(range(1, FRAMES + 1))
    assert all(a.codes.equal(b.codes) for a, b in zip(plain[:2], changed[:2], strict=True))
    assert not all(a.codes.equal(b.codes) for a, b in zip(plain[2:], changed[2:], strict=True))
