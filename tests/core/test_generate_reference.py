"""The official generation trace, reproduced: every forward of the reference loop, and every
sampler step of our generator with the reference's recorded draws and uniforms injected.

Runs once per reference fixture set (`tests/fixtures/lumos_ref*` and
`$PACKCACHE_REFERENCE_FIXTURES`); nothing here assumes config A's sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from packcache_core.config import CODE_OFFSET
from packcache_core.generate import FrameResult, SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import MASK, NGRID, VIDEO_START, FrameLayout, frame_positions
from packcache_core.model import LumosTransformer
from packcache_core.policy import FullPolicy
from tests.helpers import kv_buffers, rope_inputs

LOGIT_ATOL = 1e-4  # fixture README: ~25x the float32 rounding level
CFG_ATOL = 2e-3  # CFG logits from our own forwards (scale 15 amplifies the difference)


@dataclass(frozen=True)
class Trace:
    meta: dict[str, Any]
    t: dict[str, torch.Tensor]

    @property
    def n(self) -> int:
        return int(self.meta["video_start_index"])

    @property
    def prompt(self) -> list[int]:
        return list(self.meta["prompt_tokens_given"])

    @property
    def layout(self) -> FrameLayout:
        p, n = self.prompt, self.n
        return FrameLayout.from_size_tokens(p[n + 4], p[n + 5])

    def request(self) -> VideoRequest:
        p, n, lay = self.prompt, self.n, self.layout
        frame0 = torch.tensor(p[n + 3 : n + 3 + lay.tokens])
        codes = frame0[lay.code_slots()] - CODE_OFFSET
        return VideoRequest(
            prompt_ids=p[:n],
            first_frame=codes.view(lay.h, lay.w),
            latent_frames=int(self.meta["generated_latent_frames"]) + 1,
            fps=p[n + 2] - NGRID,
            seconds=p[n + 1] - NGRID,
        )

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            steps=int(self.meta["timesteps"]),
            cfg_scale=float(self.meta["cfg"]),
            history_mask_ratio=float(self.meta["mask_history_ratio"]),
        )


@pytest.fixture(scope="module")
def trace(reference_dir: Path) -> Trace:
    meta = json.loads((reference_dir / "generate.json").read_text())
    return Trace(meta, load_file(reference_dir / "generate.safetensors"))


def test_every_reference_forward_replays(trace: Trace, reference_model: LumosTransformer) -> None:
    """Each recorded call, fed on top of our cache cropped as the reference crops it."""
    capacity = max(f["cache_len_before"] + f["fed_len"] for f in trace.meta["forwards"])
    caches = {b: kv_buffers(reference_model, capacity) for b in ("cond", "uncond")}
    for f in trace.meta["forwards"]:
        key = f"fwd{f['index']:02d}"
        start = f["cache_len_before"]
        ids = trace.t[f"{key}.input_ids"]
        cos, sin = rope_inputs(reference_model, trace.t[f"{key}.position_ids"])
        mask = trace.t[f"{key}.attn_allowed"][None, None]  # (1, 1, fed, start + fed)
        with torch.no_grad():
            hidden = reference_model(
                ids[None], cos, sin, mask, kv=caches[f["branch"]], start=start
            )[0]
        logits = reference_model.code_logits(hidden[f["code_positions_in_fed"]])
        torch.testing.assert_close(
            logits,
            trace.t[f"{key}.code_logits"],
            atol=LOGIT_ATOL,
            rtol=0,
            msg=lambda m, k=key: f"{k}: {m}",
        )


@dataclass
class RecordedNoise:
    """Injects the reference's multinomial draws and uniforms, step by step."""

    t: dict[str, torch.Tensor]
    keys: list[str]
    cfg_logits: list[torch.Tensor] = field(default_factory=list)  # rows still to draw only
    rows: list[torch.Tensor] = field(default_factory=list)

    def draw(
        self, logits: torch.Tensor, rows: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.cfg_logits.append(logits.clone())
        self.rows.append(rows.clone())
        samples = self.t[f"{self.keys[len(self.cfg_logits) - 1]}.samples"]
        assert samples.numel() == n, "the reference draws every slot"
        return samples[rows] - CODE_OFFSET, torch.logsumexp(logits, dim=-1)

    def uniform(self, n: int, device: torch.device) -> torch.Tensor:
        return self.t[f"{self.keys[len(self.cfg_logits) - 1]}.uniform"].to(device)


def replay_official_steps(
    model: LumosTransformer,
    request: VideoRequest,
    sampling: SamplingConfig,
    meta: dict[str, Any],
    t: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[VideoGeneration, list[FrameResult]]:
    """Run our generator (`full`) with a trace's draws and uniforms injected; check every
    step's tokens before and after, its CFG logits and both branches' logits against the
    trace. Returns the generation and its finished frames (shared by the t2v trace's test)."""
    steps = meta["steps"]
    keys = [f"step{s['frame']}_{s['step']}" for s in steps]
    noise = RecordedNoise(t, keys)
    branch_logits: list[torch.Tensor] = []
    code_logits = model.code_logits

    def recording(hidden: torch.Tensor) -> torch.Tensor:
        out = code_logits(hidden)
        branch_logits.append(out)
        return out

    monkeypatch.setattr(model, "code_logits", recording)
    gen = VideoGeneration(model, request, sampling, FullPolicy(), noise=noise)
    gen.step()  # prefill
    frames = []
    for key in keys:
        before = gen._frame.ids.clone() if gen._frame is not None else None
        result = gen.step()
        if before is not None:
            assert torch.equal(before, t[f"{key}.tokens_before"]), key
        if result is None:
            assert gen._frame is not None
            assert torch.equal(gen._frame.ids, t[f"{key}.tokens_after"]), key
        else:
            frames.append(result)
            after = result.codes.reshape(-1) + CODE_OFFSET
            assert torch.equal(after, t[f"{key}.tokens_after"]), key
    assert gen.done

    fwd = meta["forwards"]
    for i, (key, s) in enumerate(zip(keys, steps, strict=True)):
        rows = noise.rows[i]  # only the slots still masked: the others keep their codes
        assert rows.numel() == int((t[f"{key}.tokens_before"] == MASK).sum()), key
        torch.testing.assert_close(
            noise.cfg_logits[i], t[f"{key}.cfg_code_logits"][rows], atol=CFG_ATOL, rtol=0
        )
        for row, call in enumerate((s["cond_forward"], s["uncond_forward"])):
            want = t[f"fwd{fwd[call]['index']:02d}.code_logits"][rows]
            torch.testing.assert_close(branch_logits[i][row], want, atol=LOGIT_ATOL, rtol=0)
    return gen, frames


def test_generator_reproduces_every_step(
    trace: Trace, reference_model: LumosTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, frames = replay_official_steps(
        reference_model, trace.request(), trace.sampling(), trace.meta, trace.t, monkeypatch
    )
    assert len(frames) == trace.request().latent_frames - 1

    final = torch.tensor(trace.meta["final_tokens"])
    lay, n = trace.layout, trace.n
    for r in frames:
        start = n + 3 + r.index * lay.tokens
        want = final[start : start + lay.tokens][lay.code_slots()] - CODE_OFFSET
        assert torch.equal(r.codes.reshape(-1), want)


def test_generator_positions_match_reference_calls(trace: Trace) -> None:
    """Frame positions as generation builds them equal the ids fed in each step call."""
    lay, n = trace.layout, trace.n
    for f in trace.meta["forwards"]:
        if f["fed_len"] != lay.tokens:
            continue  # the first call feeds the whole prefix
        text_len = n if f["branch"] == "cond" else 0
        want = trace.t[f"fwd{f['index']:02d}.position_ids"]
        assert torch.equal(frame_positions(lay, f["frame"], text_len), want)
    assert trace.prompt[n] == VIDEO_START
