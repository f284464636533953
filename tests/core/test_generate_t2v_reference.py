"""The official text-to-video trace, reproduced (`tests/fixtures/lumos_t2v`): every forward of
the reference loop with generation_task "t2v", and every sampler step of our generator, frame 0
included, with the reference's recorded draws and uniforms injected, under the `full` policy.

The fixture's model is config A of `tests/fixtures/lumos_ref` (the folder its manifest names);
what differs from image-to-video is that frame 0 is generated, by the same loop and running
temperature, and written back with the AR-DF history mask like every later frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from packcache_core.config import CODE_OFFSET
from packcache_core.generate import SamplingConfig, VideoRequest
from packcache_core.layout import MASK, NGRID, FrameLayout, frame_positions, prompt_text
from packcache_core.loading import load_checkpoint
from packcache_core.model import LumosTransformer
from tests.core.test_generate_reference import LOGIT_ATOL, replay_official_steps
from tests.helpers import FIXTURES, ReferenceSet, kv_buffers, rope_inputs

T2V = FIXTURES / "lumos_t2v"


@dataclass(frozen=True)
class Trace:
    meta: dict[str, Any]
    t: dict[str, torch.Tensor]

    @property
    def layout(self) -> FrameLayout:
        return FrameLayout(int(self.meta["grid_h"]), int(self.meta["grid_w"]))

    def request(self) -> VideoRequest:
        fps, seconds = self.meta["fps_duration"]
        lay = self.layout
        return VideoRequest(
            prompt_ids=list(self.meta["prompt_ids"]),
            first_frame=None,
            latent_frames=int(self.meta["latent_frames"]),
            fps=fps,
            seconds=seconds,
            grid=(lay.h, lay.w),
        )

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            steps=int(self.meta["timesteps"]),
            cfg_scale=float(self.meta["cfg"]),
            history_mask_ratio=float(self.meta["mask_history_ratio"]),
            temperature=float(self.meta["temperature"]),
        )


@pytest.fixture(scope="module")
def trace() -> Trace:
    meta = json.loads((T2V / "generate.json").read_text())
    return Trace(meta, load_file(T2V / "generate.safetensors"))


@pytest.fixture(scope="module")
def t2v_model(tmp_path_factory: pytest.TempPathFactory) -> LumosTransformer:
    """The float32 model of the set the manifest names, loaded back through the loader."""
    manifest = json.loads((T2V / "manifest.json").read_text())
    ref = ReferenceSet.read((T2V / manifest["weights_from"]).resolve())
    folder = ref.write_weights(tmp_path_factory.mktemp("t2v_weights"))
    return load_checkpoint(folder, device="cpu", dtype=torch.float32)


def test_prompt_is_the_official_template(trace: Trace) -> None:
    """The instruction the official t2v path tokenizes, for the size the request names."""
    (w, h), (fps, seconds) = trace.meta["video_resolution_wh"], trace.meta["fps_duration"]
    asked = trace.meta["question_after_placeholder"]
    caption = asked.split("prompt:\n ", 1)[1]
    assert prompt_text(caption, w, h, fps, seconds) == asked
    assert trace.request().layout.pixel_size == (h, w)


def test_every_reference_forward_replays(trace: Trace, t2v_model: LumosTransformer) -> None:
    """Each recorded call, fed on top of our cache cropped as the reference crops it; frame 0's
    first call runs the text, the header and an all-MASK frame 0 on an empty cache."""
    forwards = trace.meta["forwards"]
    assert forwards[0]["frame"] == 0 and forwards[0]["cache_len_before"] == 0
    capacity = max(f["cache_len_before"] + f["fed_len"] for f in forwards)
    caches = {b: kv_buffers(t2v_model, capacity) for b in ("cond", "uncond")}
    for f in forwards:
        key = f"fwd{f['index']:02d}"
        start = f["cache_len_before"]
        cos, sin = rope_inputs(t2v_model, trace.t[f"{key}.position_ids"])
        mask = trace.t[f"{key}.attn_allowed"][None, None]
        ids = trace.t[f"{key}.input_ids"][None]
        with torch.no_grad():
            hidden = t2v_model(ids, cos, sin, mask, kv=caches[f["branch"]], start=start)[0]
        logits = t2v_model.code_logits(hidden[f["code_positions_in_fed"]])
        torch.testing.assert_close(
            logits, trace.t[f"{key}.code_logits"], atol=LOGIT_ATOL, rtol=0, msg=key
        )


def test_frame_zero_is_written_back_with_the_history_mask(trace: Trace) -> None:
    """The official write-back of generated frame 0 carries MASK at the AR-DF pattern: it is a
    history frame, not a clean anchor (which is why our cache holds no frame-0 anchor)."""
    lay = trace.layout
    wb = next(f for f in trace.meta["forwards"] if f["frame"] == 0 and f["kind"] == "writeback")
    fed = trace.t[f"fwd{wb['index']:02d}.input_ids"]
    n_masked = int((fed[3:-1] == MASK).sum())
    assert n_masked == round(trace.meta["mask_history_ratio"] * lay.grid_tokens)


def test_generator_reproduces_every_step(
    trace: Trace, t2v_model: LumosTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our generator with the official draws injected: every step of every frame, frame 0's
    included, exactly; no frame-0 anchor in the cache; frame 0 at temporal index 0."""
    request = trace.request()
    gen, frames = replay_official_steps(
        t2v_model, request, trace.sampling(), trace.meta, trace.t, monkeypatch
    )
    assert gen.cache.spec.anchor_tokens == gen.cache.spec.prefix_tokens  # no frame anchor
    assert len(frames) == trace.meta["latent_frames"]
    assert [r.frame_position for r in frames] == list(range(len(frames)))

    final = torch.tensor(trace.meta["final_tokens"])
    lay, n = trace.layout, len(trace.meta["prompt_ids"])
    for r in frames:
        start = n + 3 + (r.index - 1) * lay.tokens  # the n-th generated frame is frame n - 1
        want = final[start : start + lay.tokens][lay.code_slots()] - CODE_OFFSET
        assert torch.equal(r.codes.reshape(-1), want)


def test_generator_positions_match_reference_calls(trace: Trace) -> None:
    """Frame positions as generation builds them (frame 0 first) equal the ids fed."""
    lay, n = trace.layout, len(trace.meta["prompt_ids"])
    checked = 0
    for f in trace.meta["forwards"]:
        if f["fed_len"] != lay.tokens:
            continue  # the first call feeds the whole prefix
        text_len = n if f["branch"] == "cond" else 0
        want = trace.t[f"fwd{f['index']:02d}.position_ids"]
        assert torch.equal(frame_positions(lay, f["frame"], text_len), want)
        checked += 1
    assert checked == len(trace.meta["forwards"]) - 2
    assert trace.meta["final_tokens"][n : n + 3] == [
        9004,
        NGRID + trace.meta["fps_duration"][1],
        NGRID + trace.meta["fps_duration"][0],
    ]
