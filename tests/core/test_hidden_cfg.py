"""Guidance in hidden space (`SamplingConfig.hidden_cfg`) against the official generation trace.

What it is: the reference fixture's whole generation (every sampler step, the reference's draws
and uniforms injected) run with the head applied once to the mixed hidden state instead of to
each branch. The algebra is exact, so the tokens must agree (issue 28: >= 99.9%) and the guided
logits stay within the fixture's CFG tolerance; the measured differences are printed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from packcache_core.config import CODE_OFFSET
from packcache_core.generate import VideoGeneration
from packcache_core.model import LumosTransformer
from packcache_core.policy import FullPolicy
from tests.core.test_generate_reference import CFG_ATOL, RecordedNoise, Trace


@pytest.fixture(scope="module")
def reference_trace(reference_dir: Path) -> Trace:
    meta = json.loads((reference_dir / "generate.json").read_text())
    return Trace(meta, load_file(reference_dir / "generate.safetensors"))


def test_hidden_space_guidance_keeps_the_reference_tokens(
    reference_trace: Trace, reference_model: LumosTransformer
) -> None:
    trace = reference_trace
    keys = [f"step{s['frame']}_{s['step']}" for s in trace.meta["steps"]]
    noise = RecordedNoise(trace.t, keys)
    sampling = replace(trace.sampling(), hidden_cfg=True)
    gen = VideoGeneration(reference_model, trace.request(), sampling, FullPolicy(), noise=noise)
    gen.step()  # prefill
    equal = total = 0
    for key in keys:
        result = gen.step()
        if result is None:
            assert gen._frame is not None
            got = gen._frame.ids
        else:
            got = result.codes.reshape(-1) + CODE_OFFSET
        want = trace.t[f"{key}.tokens_after"]
        equal, total = equal + int((got == want).sum()), total + want.numel()
    worst = max(
        float((logits - trace.t[f"{key}.cfg_code_logits"][rows]).abs().max())
        for key, logits, rows in zip(keys, noise.cfg_logits, noise.rows, strict=True)
    )
    print(f"hidden-space CFG: {equal}/{total} tokens equal, max |cfg logit diff| {worst:.2e}")
    assert equal / total >= 0.999
    assert worst < CFG_ATOL
