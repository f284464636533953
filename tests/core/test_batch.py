"""Step-level batching gives every request exactly the tokens it gets alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from packcache_core.batch import tick
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import FrameLayout
from packcache_core.loading import load_model
from packcache_core.model import LumosTransformer, Segment
from packcache_core.policy import CachePolicy, FullPolicy, PackCachePolicy, SlidingPolicy

POLICIES: list[CachePolicy] = [FullPolicy(), PackCachePolicy(window=2), SlidingPolicy()]


@pytest.fixture(scope="module")
def model() -> LumosTransformer:
    return load_model("builtin:tiny-random")


def generation(model: LumosTransformer, i: int, layout: FrameLayout) -> VideoGeneration:
    g = torch.Generator().manual_seed(i)
    codes = torch.randint(0, 64000, (layout.h, layout.w), generator=g)
    prompt = [0, *range(16000, 16003 + 4 * i), 8710]  # different prompt lengths
    req = VideoRequest(prompt, codes, latent_frames=3 + i % 3)  # different clip lengths
    return VideoGeneration(model, req, SamplingConfig(steps=2), POLICIES[i % 3], seed=i)


def run_alone(gen: VideoGeneration) -> list[torch.Tensor]:
    out = []
    while not gen.done:
        r = gen.step()
        if r is not None:
            out.append(r.codes)
    return out


def run_batched(gens: list[VideoGeneration], stagger: int) -> list[list[torch.Tensor]]:
    """Requests join one after another (`stagger` units apart) and leave when done."""
    out: list[list[torch.Tensor]] = [[] for _ in gens]
    n = 0
    while any(not g.done for g in gens):
        active = [i for i, g in enumerate(gens) if not g.done and i * stagger <= n]
        for i, r in zip(active, [o.result for o in tick([gens[i] for i in active])], strict=True):
            if r is not None:
                out[i].append(r.codes)
        n += 1
    return out


def test_a_failing_run_fails_alone(model: LumosTransformer) -> None:
    """One run's broken step (its own part, or a batched forward it poisons) is its outcome
    only: the others' tokens are what they get alone, and the forward is retried per run."""
    lay = FrameLayout(4, 8)
    alone = [run_alone(generation(model, i, lay)) for i in (0, 3)]
    gens = [generation(model, i, lay) for i in (0, 3, 6)]
    bad = gens[2]
    tick(gens)  # prefills
    good_prepare = bad.prepare_step

    def poisoned():  # type: ignore[no-untyped-def]
        inp = good_prepare()
        return inp._replace(tokens=inp.tokens[:, :-1])  # a wrong shape breaks the forward

    bad.prepare_step = poisoned  # type: ignore[method-assign]
    outcomes = tick(gens)
    assert [o.error is None for o in outcomes] == [True, True, False]
    assert [o.batch for o in outcomes[:2]] == [1, 1]  # retried alone after the forward failed
    assert len({o.forward for o in outcomes[:2]}) == 2
    out: list[list[torch.Tensor]] = [[], []]
    while not (gens[0].done and gens[1].done):
        live = [i for i in (0, 1) if not gens[i].done]
        for i, o in zip(live, tick([gens[i] for i in live]), strict=True):
            assert o.error is None and (o.batch == len(live))
            if o.result is not None:
                out[i].append(o.result.codes)
    for want, got in zip(alone, out, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


@pytest.mark.parametrize("concurrency", [1, 2, 4, 8])
def test_same_tokens_with_and_without_batching(model: LumosTransformer, concurrency: int) -> None:
    assert_same_tokens(model, concurrency)


@pytest.mark.gpu
def test_same_tokens_with_and_without_batching_on_cuda() -> None:
    """The same on a GPU, where a GEMM's kernel may depend on its row count (e.g. split-K):
    a batched row must still come out bit for bit as it does alone."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    assert_same_tokens(load_model("builtin:tiny-random", "cuda"), 8)


@pytest.mark.gpu
def test_steps_run_on_the_flash_kernel_on_cuda() -> None:
    """A bf16 request's prefill, denoising steps and write-backs on a GPU, with SDPA allowed
    only its flash kernel: a step that passed a mask (or any other shape flash refuses) would
    find no kernel and raise."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = load_model("builtin:tiny-random", "cuda", torch.bfloat16)
    gen = generation(model, 0, FrameLayout(4, 8))
    gen.prefill()  # the prefix is causal: the one forward with a mask
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        while not gen.done:
            gen.step()


@pytest.mark.gpu
def test_prefix_and_recache_avoid_the_math_kernel_on_cuda() -> None:
    """The forwards that pass a mask (the causal prefix, a prompt change's re-cache) run on
    a fused kernel on a GPU although the model shares K/V heads: with the math kernel
    disallowed, a whole video with a prompt change still runs."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = load_model("builtin:tiny-random", "cuda", torch.bfloat16)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    gen = generation(model, 2, FrameLayout(4, 8))  # 5 latent frames
    gen = VideoGeneration(
        model, replace(gen.request, text_slots=64), gen.sampling, gen.policy, seed=2
    )
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        while gen.frames_done < 1:
            gen.step()
        gen.change_prompt([0, *range(16000, 16040), 8710])
        while not gen.done:
            gen.step()


def assert_same_tokens(model: LumosTransformer, concurrency: int) -> None:
    layouts = [FrameLayout(4, 8), FrameLayout(4, 4)]  # two geometries: two forwards per tick
    alone = [run_alone(generation(model, i, layouts[i % 2])) for i in range(concurrency)]
    together = run_batched(
        [generation(model, i, layouts[i % 2]) for i in range(concurrency)], stagger=3
    )
    for a, b in zip(alone, together, strict=True):
        assert len(a) == len(b) > 0
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_batched_forward_equals_per_request_forwards(model: LumosTransformer) -> None:
    """Hidden states of a batched step match the same steps run one by one."""
    gens = [generation(model, i, FrameLayout(4, 8)) for i in range(3)]
    for g in gens:
        g.step()  # prefill
    inputs = [g.prepare_step() for g in gens]
    with torch.no_grad():
        alone = [model.forward_segments(i.tokens, i.cos, i.sin, [i.segment]) for i in inputs]
        segs = [
            Segment(
                slice(2 * j, 2 * j + 2),
                i.segment.mask,
                i.segment.kv,
                i.segment.start,
                i.segment.first,
            )
            for j, i in enumerate(inputs)
        ]
        batched = model.forward_segments(
            torch.cat([i.tokens for i in inputs]),
            torch.cat([i.cos for i in inputs]),
            torch.cat([i.sin for i in inputs]),
            segs,
        )
    torch.testing.assert_close(batched, torch.cat(alone), atol=1e-5, rtol=0)
