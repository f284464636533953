"""Given frames (an uploaded video continued): cached clean, as the official code caches the
given frames of a video prompt; a run resumed from its record draws what the first drew."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from packcache_core.generate import SamplingConfig
from packcache_core.layout import MASK
from packcache_core.pipeline import FrameOutput, Pipeline, VideoParams, VideoRun
from packcache_core.policy import make_policy
from packcache_core.record import request_from_json, request_to_json

GIVEN = 2  # latent frames after the first that the clip brings


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load("builtin:tiny-random")


def _clip() -> torch.Tensor:
    """(1 + 4 GIVEN, 32, 32, 3) uint8 frames at the video's size."""
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (1 + 4 * GIVEN, 32, 32, 3), generator=g, dtype=torch.uint8)


def _params(policy: str = "full") -> VideoParams:
    return VideoParams(
        "a red ball rolls",
        latent_frames=1 + GIVEN + 2,
        size=(32, 32),
        seed=5,
        policy=make_policy(policy),
        sampling=SamplingConfig(steps=2),
        given_frames=GIVEN,
    )


def _run(pipeline: Pipeline, params: VideoParams) -> tuple[VideoRun, torch.Tensor]:
    clip = _clip()
    prepared = pipeline.prepare(Image.fromarray(clip[0].numpy()), params, clip)
    assert prepared.given is not None and prepared.given.shape[0] == GIVEN
    run = pipeline.start(prepared)
    run.first_rgb()
    return run, prepared.given


def _rest(run: VideoRun) -> list[FrameOutput]:
    out = []
    while not run.done:
        if (o := run.step()) is not None:
            out.append(o)
    return out


def test_given_frames_are_cached_clean_and_generated_ones_masked(pipeline: Pipeline) -> None:
    run, given = _run(pipeline, _params())
    replayed = run.resume(list(given), None)
    assert all(torch.equal(r.result.codes, g) for r, g in zip(replayed, given, strict=True))
    made = _rest(run)
    assert len(made) == 2
    history = run.generation.cache.history
    assert len(history) == GIVEN + 1  # the last generated frame is not written back
    for h in history[:GIVEN]:
        assert h.tokens is not None and not (h.tokens == MASK).any()  # clean
    last = history[GIVEN].tokens
    assert last is not None and (last == MASK).sum() > 0  # AR-DF history mask


def test_a_given_frame_is_never_sampled(pipeline: Pipeline) -> None:
    run, _ = _run(pipeline, _params())
    with pytest.raises(AssertionError, match="given frame"):
        run.step()  # the prefill
        run.step()


@pytest.mark.parametrize("policy", ["full", "sliding"])
def test_resumed_from_the_record_it_draws_the_same_frames(pipeline: Pipeline, policy: str) -> None:
    run, given = _run(pipeline, _params(policy))
    replayed = run.resume(list(given), None)
    made = _rest(run)
    # the record: the given frames with the sampler as they left it, then each made frame
    recorded = [o.result.codes for o in [*replayed, *made[:1]]]
    again = pipeline.start(pipeline.prepare(Image.fromarray(_clip()[0].numpy()), _params(policy)))
    again.first_rgb()
    again.resume(recorded, made[0].result.state)
    assert torch.equal(_rest(again)[0].result.codes, made[1].result.codes)


def test_the_record_keeps_given_frames() -> None:
    params = dataclasses.replace(_params(), given_frames=3)
    assert request_from_json(request_to_json(params)).given_frames == 3
