"""Request options -> VideoParams: durations, sizes, policies and the configured limits."""

from __future__ import annotations

from typing import Any

import pytest

from packcache_core.policy import PackCachePolicy, SlidingPolicy
from server.api.errors import wire
from server.api.params import to_video_params
from server.api.schemas import GenerationOptions
from server.errors import InvalidRequest
from server.settings import Settings

SETTINGS = Settings(model="builtin:tiny-random", default_policy_params={"window": 3})


def params(**fields: Any) -> Any:
    return to_video_params(GenerationOptions(prompt="a cat", **fields), SETTINGS)


@pytest.mark.parametrize(
    ("fields", "latent"),
    [
        ({}, 3),  # the default clip
        ({"seconds": "1"}, 4),  # ceil((12 - 1) / 4) + 1
        ({"seconds": "0.5"}, 3),
        ({"frames": 9}, 3),
        ({"frames": 10}, 4),  # rounded up to 1 + 4k
        ({"latent_frames": 21}, 21),
    ],
)
def test_clip_length(fields: dict[str, Any], latent: int) -> None:
    assert params(**fields).latent_frames == latent


def test_defaults_and_overrides() -> None:
    p = params()
    assert (p.sampling.steps, p.fps, p.size) == (8, 12, None)  # 8 steps for built-in models
    assert p.policy == PackCachePolicy(window=3)  # the server's default parameters
    p = params(cache_policy="sliding", window=2, seed=5, steps=3, size="64x128")
    assert p.policy == SlidingPolicy(window=2) and (p.seed, p.sampling.steps) == (5, 3)
    assert p.size == (64, 128)
    assert params(guidance_scale=0).sampling.cfg_scale == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"seconds": "0"}, "seconds"),
        ({"latent_frames": 22, "cache_policy": "full"}, "latent_frames"),
        ({"latent_frames": 122}, "latent_frames"),  # a bounded policy's own limit
        ({"size": "64x288"}, "size"),  # aspect above 4
        ({"size": "2048x2048"}, "size"),
        ({"cache_policy": "full", "rho": 0.5}, "cache_policy"),
        ({"model": "other"}, "model"),
        ({"prompt": "x" * 2001}, "prompt"),
    ],
)
def test_limits(fields: dict[str, Any], param: str) -> None:
    fields.setdefault("prompt", "a cat")
    with pytest.raises(InvalidRequest) as e:
        to_video_params(GenerationOptions(**fields), SETTINGS)
    assert e.value.param == param and wire(e.value).status == 400
