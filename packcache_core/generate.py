"""AR-DF generation of a video, one latent frame after another, with a fixed-size cache:
image-to-video (frame 0 given), or text-to-video (frame 0 generated too; one frame is an image).

What it is: `VideoGeneration`, a per-request state machine with its units of work: `prefill()`,
and a denoising step split in two (`prepare_step()` gives its share of a forward,
`finish_step()` samples from the forward's output; the last step of a frame also writes the
frame back and packs the cache); `step()` runs the next unit through the one step loop,
`batch.tick`. Teacher forcing and cache rebuilds use `predict_frame()` and `replay_frame()`.
What it is not: a scheduler (the server ticks many requests together) or a video decoder.

The two guidance branches run as one batched forward (rows 0 = conditional, 1 = unconditional).
Per frame, positions and rotary tables are built once for the current frame's rows; per step
only the frame's tokens change. Steps attend without a mask (each row its own run of cache
slots, `KVCache.row_start`). The output head runs on the current
frame's code slots and the code vocabulary only.

Text-to-video follows the official code (`generate_maskedAR_mmrope_v8_newcache`,
generation_task "t2v"): frame 0 is denoised by the same loop, steps, guidance and running
temperature as every later frame, and written back with the AR-DF history mask like every
generated frame, so the cache has no clean frame anchor: frame 0 is the first history frame,
which each cache policy keeps, packs or drops as it does any history frame.

A video continued from an upload (`VideoRequest.given_frames`) has its frames after frame 0
given, not sampled: `replay_frame` writes them into the cache clean, as the official code
caches the given frames of a video prompt (generation_task "vp": the history mask it applies
to them is undone before they are cached), and sampling starts after the last of them.

Invariant: a request's cache is allocated in the constructor at its final size; `step()` never
allocates cache memory and never syncs with the device except to hand a finished frame's codes
to the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from packcache_core.batch import StepInputs, tick
from packcache_core.cache import CacheSpec, KVCache, plan_cache, visible_tokens
from packcache_core.config import CODE_OFFSET
from packcache_core.layout import (
    HEADER_LEN,
    MASK,
    FrameLayout,
    frame_positions,
    header_tokens,
    history_mask_positions,
    text_positions,
)
from packcache_core.model import LumosTransformer, Segment
from packcache_core.policy import DEFAULT_POLICY, CachePolicy, FullPolicy
from packcache_core.rope import RotaryTables
from packcache_core.sampling import (
    SAMPLE_CHUNK,
    GeneratorNoise,
    SamplerNoise,
    cosine_mask_len,
    draw,
    guided_draw,
    next_temperature,
    remask,
)


@dataclass(frozen=True)
class SamplingConfig:
    """Sampler settings; defaults are the published Lumos-1 scripts'."""

    steps: int = 50
    cfg_scale: float = 15.0
    history_mask_ratio: float = 0.7
    temperature: float = 1.0
    # The reference multiplies the Gumbel temperature across steps AND frames, so it is 0 from
    # the second generated frame on. True restarts it at `temperature` for every frame.
    reset_temperature_per_frame: bool = False
    # Guidance combined in hidden space before the output head (one 64000-code GEMM a step
    # instead of two; the same logits up to float rounding). Opt-in: see README "Exactness".
    hidden_cfg: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.history_mask_ratio < 1.0:
            raise ValueError(f"history_mask_ratio must be in [0, 1), got {self.history_mask_ratio}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class GenerationDefaults:
    """What a model recommends where a request says nothing (a built-in model's card)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    size: tuple[int, int] | None = None  # (width, height); None: Lumos-1's bucket of the image
    latent_frames: int = 7  # conditioning frame included; 7 = "24 frames at 12 fps"
    # cache policy and parameters; {} = the registry's defaults (`policy.py`)
    cache_policy: str = DEFAULT_POLICY
    policy_params: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoRequest:
    """What to generate: prompt ids, conditioning codes (or, for text-to-video, none and the
    latent grid), length."""

    prompt_ids: list[int]  # conditional prefix: BOS + text + SEP
    first_frame: torch.Tensor | None  # (h, w) int64 codes of the conditioning image; None: t2v
    latent_frames: int  # total, frame 0 included (>= 2 with an image, >= 1 without)
    fps: int = 12
    seconds: int = 2
    open_ended: bool = False  # run past `latent_frames` until `stop()` (a bounded policy)
    # (generated latent frame, prompt ids): the prompt in force from that frame on
    prompt_changes: tuple[tuple[int, list[int]], ...] = ()
    text_slots: int = 0  # cache slots held for the text, if more than the prompt's own
    # On a prompt change, forward the conditioning frame and the history again under the new
    # text (LongLive's KV re-cache); False keeps their keys as the old text made them.
    recache: bool = True
    grid: tuple[int, int] | None = None  # (h, w) latent grid of a text-to-video request
    # The first `given_frames` frames after frame 0 are given (an uploaded video), not sampled:
    # `replay_frame` writes them back clean, as the official code caches the given frames of
    # a video prompt (its history mask is undone before they are cached), then sampling starts.
    given_frames: int = 0

    def __post_init__(self) -> None:
        if self.first_frame is None:
            if self.grid is None:
                raise ValueError("a request without a first frame (text-to-video) needs grid")
        elif self.first_frame.dim() != 2:
            raise ValueError("first_frame must be (h, w) codes")
        elif self.grid is not None and tuple(self.first_frame.shape) != tuple(self.grid):
            raise ValueError(f"grid {self.grid} is not the first frame's {self.first_frame.shape}")
        if self.latent_frames < 1 + self.first_index:
            raise ValueError(f"latent_frames must be >= {1 + self.first_index}")
        if self.given_frames and self.first_frame is None:
            raise ValueError("given frames follow a conditioning frame")
        if not self.open_ended and self.given_frames >= self.generated_frames:
            raise ValueError("a video with given frames generates at least one")
        if any(i < 1 for i, _ in self.prompt_changes):
            raise ValueError("a prompt change takes effect at a generated frame (index >= 1)")

    @property
    def first_index(self) -> int:
        """Latent frame number of the first generated frame: 1 after a conditioning image, 0
        for text-to-video (the n-th generated frame is latent frame n - 1 + first_index)."""
        return 0 if self.first_frame is None else 1

    @property
    def generated_frames(self) -> int:
        """Latent frames generated (with a preset end)."""
        return self.latent_frames - self.first_index

    @property
    def layout(self) -> FrameLayout:
        if self.first_frame is None:
            assert self.grid is not None
            return FrameLayout(*self.grid)
        h, w = self.first_frame.shape
        return FrameLayout(int(h), int(w))

    @property
    def text_capacity(self) -> int:
        """Text slots the cache needs: the longest prompt of the video, or `text_slots`."""
        lengths = [len(self.prompt_ids), *(len(ids) for _, ids in self.prompt_changes)]
        return max(self.text_slots, *lengths)

    @property
    def write_backs(self) -> int | None:
        """Frames written back into the cache (the last is not); None: no preset end."""
        return None if self.open_ended else self.generated_frames - 1


class PromptTooLong(ValueError):
    """A new prompt needs more text slots than the video's cache holds."""


@dataclass(frozen=True)
class CacheStats:
    used_tokens: int  # slots in use while denoising, per branch (`KVCache.used_tokens`)
    capacity_tokens: int  # fixed per branch
    history_tokens: int
    history_frames: int
    bytes_used: int  # both branches, all layers, K and V
    bytes_capacity: int


class SamplerState(NamedTuple):
    """What the sampler carries from one frame to the next (a video's record keeps it)."""

    rng: torch.Tensor  # the request's torch.Generator state (uint8)
    temperature: float  # the running Gumbel temperature (see `SamplingConfig`)


@dataclass(frozen=True)
class FrameResult:
    index: int  # n-th generated frame, from 1 (latent frame n - 1 + `VideoRequest.first_index`)
    codes: torch.Tensor  # (h, w) int64 on CPU
    seconds: float  # wall time of the frame, write-back and packing included
    steps: int
    cache: CacheStats
    frame_position: int  # temporal frame index the frame was generated at (after rebase)
    state: SamplerState | None = None  # right after the frame; None with injected noise


@dataclass
class _FrameState:
    ids: torch.Tensor  # (N,) code-slot ids, MASK = unknown
    cos: torch.Tensor  # (2, F, D)
    sin: torch.Tensor
    position: int
    started: float
    step: int = 0


@dataclass
class VideoGeneration:
    """One request's generation; call `step()` until `done`."""

    model: LumosTransformer
    request: VideoRequest
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    policy: CachePolicy = field(default_factory=FullPolicy)
    seed: int = 0
    noise: SamplerNoise | None = None
    spec: CacheSpec | None = None  # the plan admission made (`cache_plan_for`); None: plan now
    frames_done: int = field(init=False, default=0)  # generated frames finished

    def __post_init__(self) -> None:
        m, req = self.model, self.request
        self.device, self.dtype = m.device, m.dtype
        self.layout = req.layout
        self.rope = RotaryTables(m.config.head_dim, m.config.rope_theta, self.device)
        # The generation owns its generator unless noise is injected; only then can its
        # sampler state be recorded and restored (`sampler_state`, `resume`).
        self.generator: torch.Generator | None = None
        if self.noise is None:
            self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
            self.noise = GeneratorNoise(self.generator)
        masked = history_mask_positions(self.layout.grid_tokens, self.sampling.history_mask_ratio)
        self.history_masked = masked.to(self.device)
        self.visible = visible_tokens(self.layout, masked)
        self.text_len = len(req.prompt_ids)
        spec = self.spec or plan_cache(
            m.config,
            self.text_len,
            self.layout,
            self.policy,
            self.visible,
            req.write_backs,
            self.dtype,
            req.text_capacity,
            anchor_frame=req.first_frame is not None,
        )
        assert (spec.text_len, spec.layout) == (self.text_len, self.layout), "plan of another"
        assert spec.text_capacity >= req.text_capacity, "the plan has no room for its prompts"
        self.cache = KVCache(spec, self.policy, self.rope, self.device, self.dtype)
        self.code_slots = self.layout.code_slots(self.device)
        self.temperature = self.sampling.temperature
        self._frame: _FrameState | None = None
        self._prefilled = False
        self._stopped = False
        self._prompt_at = dict(req.prompt_changes)  # frame index -> prompt ids from then on

    @property
    def total_frames(self) -> int | None:
        """Frames to generate; None for an open-ended video (it runs until `stop()`)."""
        return None if self.request.open_ended else self.request.generated_frames

    @property
    def done(self) -> bool:
        total = self.total_frames
        return self._stopped or (total is not None and self.frames_done >= total)

    @property
    def total_steps(self) -> int | None:
        total = self.total_frames
        return None if total is None else total * self.sampling.steps

    @property
    def steps_done(self) -> int:
        current = self._frame.step if self._frame is not None else 0
        return self.frames_done * self.sampling.steps + current

    @property
    def needs_prefill(self) -> bool:
        return not self._prefilled

    def step(self) -> FrameResult | None:
        """Run the next unit of work alone; returns the frame it finished, if any."""
        assert not self.done, "generation already finished"
        (outcome,) = tick([self])
        if outcome.error is not None:
            raise outcome.error
        return outcome.result

    def prepare_step(self) -> StepInputs:
        """Inputs of the next denoising step (after the prefill), for one forward or a batch."""
        assert self._prefilled and not self.done
        assert self.frames_done >= self.request.given_frames, "a given frame is replayed"
        if self._frame is None:
            self._frame = self._start_frame()
        fs = self._frame
        tokens = self._frame_tokens(fs.ids).expand(2, -1)
        return StepInputs(tokens, fs.cos, fs.sin, self._segment())

    @torch.no_grad()
    def finish_step(self, hidden: torch.Tensor) -> FrameResult | None:
        """Sample from the step's final hidden states (2, F, hidden); finish the frame if last."""
        assert self._frame is not None, "prepare_step() first"
        return self._denoise_step(self._frame, hidden)

    @torch.no_grad()
    def predict_frame(self) -> torch.Tensor:
        """Guided code logits (N, n_codes) float32 of the next frame from the cache alone: the
        first denoising step's forward (every code MASK), combined as the sampler combines
        them, without drawing or advancing. With `replay_frame` this is teacher forcing."""
        if not self._prefilled:
            self.prefill()
        inp = self.prepare_step()
        assert self._frame is not None and self._frame.step == 0, "predict before any step"
        hidden = self.model.forward_segments(inp.tokens, inp.cos, inp.sin, [inp.segment])
        out = []
        for i in range(0, self.code_slots.numel(), SAMPLE_CHUNK):
            logits = self.model.code_logits(hidden[:, self.code_slots[i : i + SAMPLE_CHUNK]])
            out.append(
                torch.sub(logits[0], logits[1]).mul_(self.sampling.cfg_scale).add_(logits[1])
            )
        return torch.cat(out)

    @torch.no_grad()
    def replay_frame(self, codes: torch.Tensor) -> FrameResult:
        """Finish the next frame with given codes (h, w) instead of sampling them: the same
        write-back and packing as a sampled frame. Teacher forcing, and rebuilding a cache
        from a record of finished frames, go through here."""
        if not self._prefilled:
            self.prefill()
        if self._frame is None:
            self._frame = self._start_frame()
        self._frame.ids = codes.to(self.device).flatten() + CODE_OFFSET
        return self._finish_frame(self._frame)

    def change_prompt(self, prompt_ids: list[int]) -> int:
        """Follow `prompt_ids` from the next frame that starts; returns that frame's index. The
        text is written again in the slots held for it, and, with `recache`, the conditioning
        frame and the history are forwarded again under it (`_recache`).

        Raises:
            PromptTooLong: the prompt needs more text slots than the cache holds.
        """
        room = self.cache.spec.text_capacity
        if len(prompt_ids) > room:
            raise PromptTooLong(
                f"the new prompt takes {len(prompt_ids)} tokens; this video holds {room} for "
                "its text (set when it was admitted): shorten it"
            )
        index = self.frames_done + (1 if self._frame is None else 2)
        self._prompt_at[index] = prompt_ids
        return index

    def stop(self) -> None:
        """End the video after the frames finished so far (a frame in progress is dropped)."""
        self._stopped = True
        self._frame = None

    def resume(self, codes: list[torch.Tensor], state: SamplerState | None) -> list[FrameResult]:
        """Rebuild the cache from recorded frames (one write-back forward each) and restore
        the sampler as it was after the last: the frames that follow are those an
        uninterrupted run draws. `state` is None only when no frame is recorded, or when all
        of them are the request's given frames (the sampler then starts fresh after them)."""
        assert self.frames_done == 0 and self._frame is None, "resume a fresh generation"
        total = self.total_frames
        assert total is None or len(codes) <= total, "more frames recorded than requested"
        assert len(codes) >= self.request.given_frames, "the given frames come first"
        results = [self.replay_frame(c) for c in codes]
        if state is not None or len(codes) > self.request.given_frames:
            assert state is not None and self.generator is not None, "no sampler to restore"
            self.generator.set_state(state.rng)
            self.temperature = state.temperature
        return results

    def sampler_state(self) -> SamplerState | None:
        if self.generator is None:
            return None
        return SamplerState(self.generator.get_state(), self.temperature)

    # -- phases ---------------------------------------------------------------------------

    @torch.no_grad()
    def prefill(self) -> None:
        """Write text + header (causal) and the conditioning frame, if any, into both branches
        (text-to-video: frame 0 is denoised next, like any frame)."""
        self._write_text(self.request.prompt_ids)
        self._write_first_frame()
        self._prefilled = True

    def _write_first_frame(self) -> None:
        """The conditioning frame, after the text, attending to the anchors before it."""
        if self.request.first_frame is None:
            return  # text-to-video: no clean frame anchor
        frame0 = self.layout.frame_tokens(self.request.first_frame.to(self.device))
        cos, sin = self._frame_tables(0)
        segment = self._segment(self.cache.spec.prefix_tokens)
        self.model.forward_segments(frame0.expand(2, -1), cos, sin, [segment])

    def _write_text(self, prompt_ids: list[int]) -> None:
        """Text + header (causal) into the prefix slots of both rows, right-aligned: the
        conditional row's prompt ends where the first one did, at the same slot and position,
        so the header and every frame keep theirs whatever the length of a later prompt; the
        unconditional row has the header only. Only the slots from the text's first on are fed
        and attended, so slots held for a longer prompt change no bit of the result."""
        req, dev, n = self.request, self.device, len(prompt_ids)
        S = n + HEADER_LEN
        first = self.cache.spec.prefix_tokens - S
        tokens = torch.full((2, S), self.model.config.pad_token_id, dtype=torch.int64)
        tokens[0] = torch.tensor(prompt_ids + header_tokens(req.seconds, req.fps))
        tokens[1, n:] = tokens[0, n:]
        # The header sits at position text_len (conditional) and 0 (unconditional); the
        # unconditional row's pad positions are arbitrary (negative here): they are masked.
        pos = torch.stack(
            [text_positions(S, self.text_len - n, dev), text_positions(S, -n, dev)], dim=1
        )  # (5, 2, S)
        cos, sin = self.rope.cos_sin(pos, self.dtype)
        mask = torch.ones(S, S, dtype=torch.bool, device=dev).tril()[None].repeat(2, 1, 1)
        mask[1, :, :n] = False  # the unconditional row's pads are invisible ...
        mask[1].fill_diagonal_(True)  # ... except to themselves (their rows are discarded)
        segment = Segment(slice(None), mask[:, None], self.cache.layers, first, (first, first))
        self.model.forward_segments(tokens.to(dev), cos, sin, [segment])
        self.cache.hold_text(n)  # after the forward: one that raises leaves the old text in force

    def _recache(self) -> None:
        """KV re-cache after a prompt change: the conditioning frame and then each history
        frame, oldest first, are forwarded again as they were written back, each attending to
        the anchors and the frames already redone; the conditional row's keys and values of the
        tokens a frame holds are replaced (the unconditional row has no text: it stays). Each
        frame is redone in the free slots of the current frame, at its own position."""
        cache, dev = self.cache, self.device
        A, kv = cache.spec.anchor_tokens, cache.layers
        self._write_first_frame()
        scratch, redone = cache.current_start, 0
        for h in cache.history:
            assert h.tokens is not None, "a history frame without its tokens"
            mask = cache.frame_mask(seen=redone)  # the frames redone so far, and itself
            cos, sin = self._frame_tables(h.frame)
            self.model(h.tokens.expand(2, -1), cos, sin, mask, kv, start=scratch)
            src = scratch + h.local.to(dev)
            n = h.local.numel()
            for k, v in kv:
                k[0, :, A + redone : A + redone + n] = k[0, :, src]
                v[0, :, A + redone : A + redone + n] = v[0, :, src]
            redone += n

    def _frame_tables(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (2, F, D), for a frame at temporal index `position` in both rows."""
        pos = torch.stack(
            [frame_positions(self.layout, position, t, self.device) for t in (self.text_len, 0)],
            dim=1,
        )  # (5, 2, F)
        return self.rope.cos_sin(pos, self.dtype)

    def _start_frame(self) -> _FrameState:
        new_prompt = self._prompt_at.pop(self.frames_done + 1, None)
        if new_prompt is not None:
            self._write_text(new_prompt)
            if self.request.recache:
                self._recache()
        if self.sampling.reset_temperature_per_frame:
            self.temperature = self.sampling.temperature
        position = self.cache.next_frame_index
        cos, sin = self._frame_tables(position)
        ids = torch.full((self.layout.n_codes,), MASK, dtype=torch.int64, device=self.device)
        return _FrameState(ids, cos, sin, position, time.perf_counter())

    def _segment(self, start: int | None = None) -> Segment:
        """A frame's forward written at `start` (default: the current frame's slots), each row
        attending its own slots up to it, without a mask."""
        start = self.cache.current_start if start is None else start
        return Segment(slice(None), None, self.cache.layers, start, self.cache.row_start)

    def _forward(self, fs: _FrameState, frame_tokens: torch.Tensor) -> torch.Tensor:
        tokens = frame_tokens.expand(2, -1)
        return self.model.forward_segments(tokens, fs.cos, fs.sin, [self._segment()])

    def _frame_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = self.layout.frame_tokens(None).to(self.device)
        tokens[self.code_slots] = ids
        return tokens

    def _denoise_step(self, fs: _FrameState, hidden: torch.Tensor) -> FrameResult | None:
        T = self.sampling.steps
        assert self.noise is not None
        # Logits only where a code is still to be drawn: a slot drawn at an earlier step keeps
        # its code (`remask`), so its logits would be thrown away. The noise still advances
        # for every slot, so the draws are those of computing them all.
        unknown = fs.ids == MASK  # (N,)
        N = unknown.numel()
        drawn = torch.zeros(N, dtype=torch.int64, device=self.device)
        probs = torch.ones(N, dtype=torch.float32, device=self.device)
        for i in range(0, N, SAMPLE_CHUNK):  # bounds the logits' memory
            need = unknown[i : i + SAMPLE_CHUNK]
            rows = need.nonzero().squeeze(1)  # (m,) a host sync: how many is data-dependent
            slots = self.code_slots[i : i + SAMPLE_CHUNK][rows]
            d, p = self._guided_draw(hidden[:, slots], rows, need.numel())
            drawn[i + rows], probs[i + rows] = d, p
        uniform = self.noise.uniform(fs.ids.numel(), self.device)
        self.temperature = next_temperature(self.temperature, fs.step, T)
        last = fs.step == T - 1
        mask_len = cosine_mask_len(fs.step, T, fs.ids.numel())
        fs.ids = remask(fs.ids, drawn, probs, uniform, self.temperature, mask_len, last)
        fs.step += 1
        if not last:
            return None
        return self._finish_frame(fs)

    def _guided_draw(
        self, hidden: torch.Tensor, rows: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(2, m, hidden) states of the cond and uncond rows -> codes and their probs (m,)."""
        assert self.noise is not None
        cfg = self.sampling.cfg_scale
        if not self.sampling.hidden_cfg:
            logits = self.model.code_logits(hidden)  # (2, m, n_codes): two head GEMMs
            return guided_draw(logits[0], logits[1], cfg, self.noise, rows, n)
        # The head is linear: W(s(c - u) + u) = s(Wc - Wu) + Wu. One GEMM on the mixed state
        # (in float32, then the head's dtype) instead of two; float rounding differs only.
        h = hidden.float()
        mixed = torch.sub(h[0], h[1]).mul_(cfg).add_(h[1]).to(hidden.dtype)  # (m, hidden)
        return draw(self.model.code_logits(mixed), self.noise, rows, n)

    def _finish_frame(self, fs: _FrameState) -> FrameResult:
        self.frames_done += 1
        if not self.done:  # the last frame's write-back would change nothing we output
            tokens = self._frame_tokens(fs.ids)
            if self.frames_done > self.request.given_frames:  # given frames are cached clean
                tokens[3 + self.history_masked] = MASK  # AR-DF history mask, newlines included
            self._forward(fs, tokens)
            self.cache.commit_frame(fs.position, self.visible, tokens)
        codes = (fs.ids - CODE_OFFSET).view(self.layout.h, self.layout.w).cpu()
        self._frame = None
        return FrameResult(
            self.frames_done,
            codes,
            time.perf_counter() - fs.started,
            self.sampling.steps,
            self.cache_stats(),
            fs.position,
            self.sampler_state(),
        )

    def cache_stats(self) -> CacheStats:
        spec, c = self.cache.spec, self.cache
        per_token = spec.bytes // spec.capacity_tokens
        return CacheStats(
            c.used_tokens,
            spec.capacity_tokens,
            c.history_tokens,
            len(c.history),
            per_token * c.used_tokens,
            spec.bytes,
        )

    def close(self) -> None:
        """Free the cache now (the object is unusable afterwards)."""
        self.cache.k.clear()
        self.cache.v.clear()
        self._stopped = True


def cache_plan_for(
    model: LumosTransformer,
    request: VideoRequest,
    policy: CachePolicy,
    sampling: SamplingConfig | None = None,
) -> CacheSpec:
    """The CacheSpec a request would get, without allocating (for admission control)."""
    sampling = sampling or SamplingConfig()
    layout = request.layout
    masked = history_mask_positions(layout.grid_tokens, sampling.history_mask_ratio)
    return plan_cache(
        model.config,
        len(request.prompt_ids),
        layout,
        policy,
        visible_tokens(layout, masked),
        request.write_backs,
        model.dtype,
        request.text_capacity,
        anchor_frame=request.first_frame is not None,
    )
