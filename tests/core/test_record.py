"""A video's record: resuming from recorded frames gives the frames of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from packcache_core.generate import SamplerState, SamplingConfig
from packcache_core.pipeline import Pipeline, VideoParams
from packcache_core.policy import POLICIES, make_policy
from packcache_core.record import FrameRecord, request_from_json, request_to_json


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load("builtin:tiny-random")


def _params(policy: str) -> VideoParams:
    knobs = {"window": 1} if policy in ("sliding", "packcache", "sink") else {}
    return VideoParams(
        "a red ball rolls",
        latent_frames=7,
        size=(32, 32),
        seed=11,
        policy=make_policy(policy, **knobs),
        sampling=SamplingConfig(steps=3, temperature=1.0, reset_temperature_per_frame=False),
    )


def _image() -> Image.Image:
    g = torch.Generator().manual_seed(0)
    return Image.fromarray(
        torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8).numpy()
    )


CASES = [(p, 2) for p in sorted(POLICIES)] + [("packcache", 0), ("packcache", 6)]


@pytest.mark.parametrize(("policy", "cut"), CASES)
def test_resume_continues_as_if_uninterrupted(
    pipeline: Pipeline, policy: str, cut: int, tmp_path: Path
) -> None:
    prepared = pipeline.prepare(_image(), _params(policy))
    whole = pipeline.start(prepared)
    first = whole.first_rgb()
    outs = []
    while not whole.done:
        if (o := whole.step()) is not None:
            outs.append(o)
    record = FrameRecord(tmp_path)
    for o in outs[:cut]:
        assert o.result.state is not None
        record.append(o.result.index, o.result.codes, o.result.state)

    recorded = record.read()
    assert len(recorded.codes) == cut
    resumed = pipeline.start(pipeline.prepare(_image(), _params(policy)))
    assert torch.equal(resumed.first_rgb(), first)
    replayed = resumed.resume(recorded.codes, recorded.state)
    rest = []
    while not resumed.done:
        if (o := resumed.step()) is not None:
            rest.append(o)
    again = replayed + rest
    assert [o.result.index for o in again] == [o.result.index for o in outs]
    for a, b in zip(again, outs, strict=True):
        assert torch.equal(a.result.codes, b.result.codes), a.result.index
        assert torch.equal(a.rgb, b.rgb), a.result.index
    if 0 < cut < len(outs):  # the sampler, not the codes, carries the randomness on
        fresh = pipeline.start(pipeline.prepare(_image(), _params(policy)))
        fresh.first_rgb()
        fresh.resume(recorded.codes, SamplerState(torch.Generator().get_state(), 1.0))
        while not fresh.done:
            last = fresh.step()
        assert last is not None and not torch.equal(last.result.codes, outs[-1].result.codes)


def test_a_torn_frame_file_ends_the_record(tmp_path: Path) -> None:
    record = FrameRecord(tmp_path)
    state = SamplerState(torch.Generator().manual_seed(1).get_state(), 0.5)
    for i in (1, 2, 4):  # 3 is missing: a crash before it was renamed into place
        record.append(i, torch.full((2, 3), i), state)
    record.path(3).with_suffix(".part").write_bytes(b"half a fil")
    got = record.read()
    assert [int(c[0, 0]) for c in got.codes] == [1, 2]
    assert got.state is not None and got.state.temperature == 0.5
    assert torch.equal(got.state.rng, state.rng)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_request_round_trips_through_json(policy: str) -> None:
    params = _params(policy)
    assert request_from_json(request_to_json(params)) == params


def test_prompt_at_follows_the_last_change_sent_for_a_frame() -> None:
    """Two changes sent for one latent frame: generation follows the last one sent, so the
    prompt in force there is that one, whatever the texts' alphabetical order."""
    params = VideoParams("pan", prompt_changes=((3, "zebra"), (5, "b"), (3, "apple")))
    assert [params.prompt_at(i) for i in (2, 3, 4, 5)] == ["pan", "apple", "apple", "b"]
    params = VideoParams("pan", prompt_changes=((3, "apple"), (3, "zebra")))
    assert params.prompt_at(3) == "zebra"


def test_a_record_with_a_sampling_setting_this_version_lacks_is_refused_by_name() -> None:
    """A newer replica's record: a ValueError naming the setting (the resume path fails that
    job with the reason), not a TypeError that would escape it."""
    raw = request_to_json(VideoParams("a pan", latent_frames=3, seed=1))
    raw["sampling"] = raw["sampling"] | {"added_later": 1}
    with pytest.raises(ValueError, match="added_later"):
        request_from_json(raw)
