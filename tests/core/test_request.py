"""The one request resolver: defaults, the frames formula, size rules, policy defaults."""

from __future__ import annotations

from dataclasses import replace

import pytest

from packcache_core.generate import GenerationDefaults, SamplingConfig
from packcache_core.request import Ask, Limits, RequestError, resolve, resolve_image

# every sampling field off its default: a request gets the card's, not SamplingConfig's
CARD_SAMPLING = SamplingConfig(steps=12, cfg_scale=3.0, history_mask_ratio=0.0, temperature=0.9)
CARD = GenerationDefaults(CARD_SAMPLING, (128, 64), 6, "packcache", {"window": 6})
LIMITS = Limits(
    fps=12,
    max_latent_frames=21,
    max_bounded_latent_frames=61,
    max_steps=100,
    max_video_pixels=512 * 512,
    max_prompt_chars=100,
)


def test_defaults_come_from_the_card() -> None:
    p = resolve(Ask("a pan", seed=1), CARD, LIMITS)
    assert (p.latent_frames, p.sampling, p.seed) == (6, CARD_SAMPLING, 1)
    asked = resolve(Ask("x", steps=5, guidance_scale=1.5), CARD, LIMITS).sampling
    assert asked == replace(CARD_SAMPLING, steps=5, cfg_scale=1.5)
    assert resolve_image("x", (128, 64), CARD, LIMITS).sampling == CARD_SAMPLING
    assert p.policy.name == "packcache" and p.policy.window == 6  # type: ignore[attr-defined]
    assert p.size is None  # the card's size is applied by the pipeline, from the image
    mine = resolve(Ask("x", policy_params={"rho": 0.25}), CARD, LIMITS).policy
    assert (mine.window, mine.rho) == (6, 0.25)  # type: ignore[attr-defined]
    other = resolve(Ask("x", cache_policy="sliding"), CARD, LIMITS).policy
    assert other.name == "sliding" and other.window == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("ask", "latent"),
    [
        (Ask("x", frames=21), 6),
        (Ask("x", frames=22), 7),  # rounded up to 1 + 4k
        (Ask("x", seconds=2.0), 7),  # 24 frames at 12 fps
        (Ask("x", latent_frames=3), 3),
    ],
)
def test_length(ask: Ask, latent: int) -> None:
    assert resolve(ask, CARD, LIMITS).latent_frames == latent


@pytest.mark.parametrize("seconds", [4, 8, 12, 16, 20])  # what the OpenAI SDK offers
@pytest.mark.parametrize("policy", ["sliding", "packcache", "sink"])
def test_a_bounded_policy_has_its_own_length_limit(seconds: int, policy: str) -> None:
    """Memory does not grow with a bounded cache: only `full` is held to max_latent_frames."""
    p = resolve(Ask("x", seconds=float(seconds), cache_policy=policy), CARD, LIMITS)
    assert p.latent_frames == 3 * seconds + 1  # ceil((12 s - 1) / 4) + 1
    with pytest.raises(RequestError, match=r"grows with the video.*up to 61"):
        resolve(Ask("x", seconds=float(seconds + 4), cache_policy="full"), CARD, LIMITS)


@pytest.mark.parametrize(
    ("ask", "param", "words"),
    [
        (Ask("x", frames=9, seconds=1.0), None, "at most one"),
        (Ask("x", latent_frames=22, cache_policy="full"), "latent_frames", "allows 2 to 21"),
        (Ask("x", latent_frames=62), "latent_frames", "allows 2 to 61"),
        (Ask("x", seconds=21.0, cache_policy="sliding"), "seconds", "allows 2 to 61"),
        (Ask("x", seconds=-1.0), "seconds", "positive"),
        (Ask("x", size="100x64"), "size", "multiples of 32"),
        (Ask("x", size="1024x1024"), "size", "at most"),
        (Ask("x", size="tall"), "size", "WxH"),
        (Ask("x", size="512x32"), "size", "aspect"),
        (Ask("x", steps=101), "steps", "limit of 100"),
        (Ask("x", guidance_scale=-1.0), "guidance_scale", ">= 0"),
        (Ask("x", cache_policy="lru"), "cache_policy", "available"),
        (Ask("x", policy_params={"windw": 2}), "cache_policy", "its parameters: window"),
        (Ask("x" * 101), "prompt", "limit is 100"),
    ],
)
def test_refusals_name_the_parameter(ask: Ask, param: str | None, words: str) -> None:
    with pytest.raises(RequestError, match=words) as e:
        resolve(ask, CARD, LIMITS)
    assert e.value.param == param
