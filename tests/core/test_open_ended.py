"""Videos without a preset end: open-ended runs, prompt changes, extensions from a record."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from packcache_core.generate import SamplingConfig
from packcache_core.pipeline import FrameOutput, Pipeline, VideoParams, VideoRun
from packcache_core.policy import POLICIES, make_policy, open_ended_refusal

BOUNDED = {"window": 1}  # the windowed policies' knob, small so packing happens early


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load("builtin:tiny-random")


def _params(policy: str = "packcache", **kw: object) -> VideoParams:
    knobs = BOUNDED if policy in ("sliding", "packcache", "sink") else {}
    base = VideoParams(
        "a red ball rolls",
        latent_frames=4,
        size=(32, 32),
        seed=5,
        policy=make_policy(policy, **knobs),
        sampling=SamplingConfig(steps=2),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _image() -> Image.Image:
    g = torch.Generator().manual_seed(1)
    return Image.fromarray(
        torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8).numpy()
    )


def _start(pipeline: Pipeline, params: VideoParams) -> VideoRun:
    run = pipeline.start(pipeline.prepare(_image(), params))
    run.first_rgb()
    return run


def _frames(run: VideoRun, n: int | None = None) -> list[FrameOutput]:
    """Step until `n` more frames are out (or the run is done)."""
    out: list[FrameOutput] = []
    while not run.done and (n is None or len(out) < n):
        if (o := run.step()) is not None:
            out.append(o)
    return out


def _codes(outs: list[FrameOutput]) -> list[torch.Tensor]:
    return [o.result.codes for o in outs]


def _same(a: list[FrameOutput], b: list[FrameOutput]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) for x, y in zip(_codes(a), _codes(b), strict=True)
    )


def test_open_ended_runs_past_its_length_at_a_fixed_cache_until_stopped(
    pipeline: Pipeline,
) -> None:
    run = _start(pipeline, _params(open_ended=True))
    outs = _frames(run, 9)  # more than the 3 its `latent_frames` states
    assert len(outs) == 9 and not run.done
    assert run.generation.total_steps is None
    assert {o.result.cache.bytes_capacity for o in outs} == {outs[0].result.cache.bytes_capacity}
    assert max(o.result.frame_position for o in outs) <= 1 + BOUNDED["window"]  # rebased
    run.step()  # a frame in progress ...
    run.stop()  # ... is dropped
    assert run.done and run.generation.frames_done == 9
    # Its frames are those of a fixed-length run that states the same duration.
    fixed = _start(pipeline, _params(latent_frames=10, stated_seconds=_params().seconds))
    assert _same(_frames(fixed), outs)


@pytest.mark.parametrize("policy", ["full", "sliding:rebase=false"])
def test_open_ended_refuses_a_cache_or_positions_that_grow(pipeline: Pipeline, policy: str) -> None:
    name, _, knob = policy.partition(":")
    p = _params(name, open_ended=True)
    if knob:
        p = dataclasses.replace(p, policy=make_policy(name, window=1, rebase=False))
    with pytest.raises(ValueError, match="rebase" if knob else "grows"):
        pipeline.plan(pipeline.prepare(_image(), p))


def test_prompt_change_takes_effect_at_the_frame_it_names(pipeline: Pipeline) -> None:
    plain = _frames(_start(pipeline, _params(latent_frames=6)))
    # The same prompt again, history kept: the text is rewritten with identical keys.
    same = _start(pipeline, _params(latent_frames=6, recache=False))
    first = _frames(same, 2)
    assert same.change_prompt("a red ball rolls") == 3
    assert _same(first + _frames(same), plain)
    # Another prompt, longer than the first (text slots held for it): frames 1-2 as before,
    # later ones follow it; a change scheduled in the request gives the same frames.
    longer = "a blue cube slides slowly to the left of the picture"
    live = _start(pipeline, _params(latent_frames=6, text_slots=200))
    before = _frames(live, 2)
    assert live.change_prompt(longer) == 3
    after = _frames(live)
    assert _same(before, plain[:2]) and not _same(after, plain[2:])
    planned = _frames(_start(pipeline, _params(latent_frames=6, prompt_changes=((3, longer),))))
    assert _same(before + after, planned)


def test_recache_under_the_same_prompt_rebuilds_the_same_cache(pipeline: Pipeline) -> None:
    """With every frame whole (`full`), forwarding the history again under the same text gives
    the keys and values the write-backs gave (up to summation order)."""
    run = _start(pipeline, _params("full", latent_frames=6))
    _frames(run, 3)
    gen = run.generation
    end = gen.cache.current_start
    before = [(k[:, :, :end].clone(), v[:, :, :end].clone()) for k, v in gen.cache.layers]
    gen._write_text(gen.request.prompt_ids)
    gen._recache()
    for (k0, v0), (k, v) in zip(before, gen.cache.layers, strict=True):
        torch.testing.assert_close(k[:, :, :end], k0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v[:, :, :end], v0, atol=1e-5, rtol=1e-5)
    # and a re-cache under another prompt does change the history's conditional keys
    other = pipeline.prepare(_image(), _params("full", prompt="a blue cube")).request.prompt_ids
    gen._write_text(other)
    gen._recache()
    A = gen.cache.spec.anchor_tokens
    k, _ = gen.cache.layers[-1]
    assert not torch.allclose(k[0, :, A:end], before[-1][0][0, :, A:end], atol=1e-3)
    assert torch.equal(k[1, :, A:end], before[-1][0][1, :, A:end])  # no text in that row


def test_prompt_change_mid_frame_waits_for_the_next_frame(pipeline: Pipeline) -> None:
    run = _start(pipeline, _params(latent_frames=6, text_slots=200))
    _frames(run, 1)
    run.step()  # frame 2 is under way
    assert run.change_prompt("pan right") == 3


def test_prompt_longer_than_the_held_slots_is_refused(pipeline: Pipeline) -> None:
    run = _start(pipeline, _params(latent_frames=6))
    with pytest.raises(ValueError, match="tokens; this video holds"):
        run.change_prompt("x" * 500)
    assert _frames(run, 1)  # and the video goes on


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("new_prompt", [None, "the ball stops"])
def test_extension_from_the_record_equals_one_uninterrupted_run(
    pipeline: Pipeline, policy: str, new_prompt: str | None
) -> None:
    """A source of 4 latent frames extended by 3: the 3 new frames are those of one run of 7
    latent frames that states the source's duration (and changes prompt where it did)."""
    source = _params(policy)
    src_out = _frames(_start(pipeline, source))
    last = src_out[-1].result
    assert last.state is not None
    changes = () if new_prompt is None else ((source.latent_frames, new_prompt),)
    total = dataclasses.replace(
        source, latent_frames=7, stated_seconds=source.seconds, prompt_changes=changes
    )
    extension = _start(pipeline, total)
    replayed = extension.resume(_codes(src_out), last.state)
    new = _frames(extension)
    assert len(new) == 3 and [o.result.index for o in new] == [4, 5, 6]
    whole = _frames(_start(pipeline, total))
    assert _same(replayed + new, whole)
    assert all(torch.equal(a.rgb, b.rgb) for a, b in zip(replayed + new, whole, strict=True))


def test_a_policy_that_does_not_say_what_it_holds_is_not_open_ended() -> None:
    """`frames_held` is optional on a policy: leaving it out counts as a growing history."""

    @dataclasses.dataclass(frozen=True)
    class Minimal:
        name: str = "minimal"
        rebase: bool = True
        uses_scores: bool = False

        def select(self, frames, layout, visible, scores=None):  # type: ignore[no-untyped-def]
            return [torch.arange(f.numel()) for f in frames]

    assert "grows" in (open_ended_refusal(Minimal()) or "")
    assert open_ended_refusal(make_policy("packcache")) is None
