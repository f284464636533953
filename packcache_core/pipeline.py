"""Image (or none, or a video to continue) in, RGB frames out: the whole path of one request,
image-to-video or text-to-video (text-to-image is text-to-video of one latent frame); a video
to continue is its first frame as the image plus the later frames, encoded by `prepare` as
the request's given frames.

What it is: `Pipeline` holds the warm parts (transformer, video tokenizer, text tokenizer) and
turns a request into a `VideoRun`: conditioning image -> resolution bucket -> codes (or, without
an image, the size asked or the official text-to-video size), caption -> prompt ids, then one
`step()` at a time, decoding each finished latent frame to RGB at once.
What it is not: a scheduler or a server; nothing here knows about threads, HTTP or metrics.

Several runs can share a denoising forward: `batch.tick` over them (the server's engine does);
`step()` is a tick of one run alone, so a run gives the same frames either way.

Invariant: everything a request needs in memory is known from `plan()` before `start()`
allocates it; `step_memory()` says how its transient memory adds up in a shared forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from packcache_core.batch import StepInputs, tick
from packcache_core.builtin import model_defaults, model_tokenizer
from packcache_core.cache import CacheSpec
from packcache_core.generate import (
    FrameResult,
    GenerationDefaults,
    SamplerState,
    SamplingConfig,
    VideoGeneration,
    VideoRequest,
    cache_plan_for,
)
from packcache_core.image import choose_bucket, crop_size_list, fixed_size_preprocess
from packcache_core.layout import FrameLayout, rgb_frames
from packcache_core.loading import load_model
from packcache_core.model import LumosTransformer
from packcache_core.policy import CachePolicy, FullPolicy
from packcache_core.sampling import SAMPLE_CHUNK
from packcache_core.text import TextTokenizer, build_prompt_ids, load_text_tokenizer
from packcache_core.video import VideoTokenizer, load_video_tokenizer
from packcache_core.video.base import StreamDecoder

BUILTIN_TARGET_SIZE = 128  # built-in models: small frames that run on a CPU
LUMOS_TARGET_SIZE = 528  # the published 384p setting (672x384 for 16:9)
# Latent frames an open-ended request's stream decoder is sized for: a day at 12 fps, i.e. no end
# (a windowed decoder's state stops growing long before).
OPEN_ENDED_DECODE_FRAMES = 24 * 3600 * 12 // 4
# (width, height) of a text-to-video request that names no size, per target size: the official
# `inference_t2v.py` table (`resolution_dict`); other target sizes take the bucket of a 7:4 frame.
TEXT_TO_VIDEO_SIZES = {352: (448, 256), 528: (672, 384), 656: (768, 480)}


@dataclass(frozen=True)
class VideoParams:
    """What a user asks for (validated by the caller's schema; checked again here)."""

    prompt: str
    latent_frames: int = 7  # total, frame 0 included (7 = "24 frames at 12 fps"); 1: an image
    fps: int = 12
    size: tuple[int, int] | None = None  # (width, height); None = Lumos-1 bucket of the image
    seed: int = 0
    policy: CachePolicy = field(default_factory=FullPolicy)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # No preset end: `latent_frames` is then only the length the prompt states, and the video
    # runs until stopped (a policy whose cache stays bounded).
    open_ended: bool = False
    # (generated latent frame, prompt): the prompt in force from that frame on
    prompt_changes: tuple[tuple[int, str], ...] = ()
    text_slots: int = 0  # text tokens the cache holds, if more than the prompts need
    recache: bool = True  # a prompt change forwards the history again (`VideoRequest`)
    # The duration the prompt states, if not the one `latent_frames` covers (an extension
    # keeps its source's, so the source's frames replay exactly).
    stated_seconds: int | None = None
    text_only: bool = False  # no conditioning image: frame 0 is generated (text-to-video)
    # Latent frames after frame 0 that came with the request (an uploaded video), cached clean
    # as the official code caches the given frames of a video prompt; generation starts after.
    given_frames: int = 0

    @property
    def first_index(self) -> int:
        """Latent frame number of the first generated frame (1 after an image, else 0)."""
        return 0 if self.text_only else 1

    @property
    def num_frames(self) -> int:
        """RGB frames in the output: 1 + 4 (latent_frames - 1)."""
        return rgb_frames(self.latent_frames)

    @property
    def seconds(self) -> int:
        """Duration token: whole seconds covering the frames after the first (at least 1)."""
        if self.stated_seconds is not None:
            return self.stated_seconds
        return max(1, -(-(self.num_frames - 1) // self.fps))

    def prompt_at(self, index: int) -> str:
        """The prompt in force at generated latent frame `index` (of several changes sent for
        one frame, the last sent, as generation follows it)."""
        prompt = self.prompt
        for start, text in sorted(self.prompt_changes, key=lambda change: change[0]):
            if start <= index:
                prompt = text
        return prompt


@dataclass(frozen=True)
class Prepared:
    """A request turned into tokens: what `plan` and `start` consume."""

    params: VideoParams
    image: torch.Tensor | None  # (H, W, 3) uint8, after bucket resize and crop; None: t2v
    request: VideoRequest
    size: tuple[int, int]  # (width, height) of the video
    # (given_frames, h, w) codes of an uploaded video's frames after frame 0; None when none
    # came with it (or they come from the video's record: a job resumed)
    given: torch.Tensor | None = None

    @property
    def layout(self) -> FrameLayout:
        return self.request.layout


@dataclass(frozen=True)
class FrameOutput:
    """A finished latent frame, decoded."""

    result: FrameResult
    rgb: torch.Tensor  # (n, H, W, 3) uint8: 4 frames per generated latent frame


class VideoRun:
    """One request in flight: `first_rgb()` once, then `step()` until `done`."""

    def __init__(
        self,
        generation: VideoGeneration,
        decoder: StreamDecoder,
        first_codes: torch.Tensor | None,
        prompt_ids: Callable[[str], list[int]],
        size: tuple[int, int],
    ) -> None:
        self.generation = generation
        self.decoder = decoder
        self._first_codes = first_codes  # None: text-to-video
        self._prompt_ids = prompt_ids  # a caption -> this video's prompt ids
        self.size = size  # (width, height)

    @property
    def done(self) -> bool:
        return self.generation.done

    def first_rgb(self) -> torch.Tensor:
        """(1, H, W, 3) uint8: the tokenizer's reconstruction of the conditioning image;
        (0, H, W, 3) for text-to-video, whose frame 0 comes out of its first `step`."""
        if self._first_codes is None:
            W, H = self.size
            return torch.zeros((0, H, W, 3), dtype=torch.uint8)
        return self.decoder.push(self._first_codes)

    @property
    def model(self) -> LumosTransformer:
        return self.generation.model

    @property
    def needs_prefill(self) -> bool:
        """The next unit of work is the prefill, which runs alone (prompts differ in length)."""
        return self.generation.needs_prefill

    def prefill(self) -> None:
        self.generation.prefill()

    @property
    def layout(self) -> FrameLayout:
        """The frame geometry; runs with the same one can share a denoising forward."""
        return self.generation.layout

    def step(self) -> FrameOutput | None:
        """One unit of work alone (`batch.tick`): the prefill, or a denoising step (decoding
        the frame it finishes, if any)."""
        (outcome,) = tick([self])
        if outcome.error is not None:
            raise outcome.error
        return outcome.result

    def prepare_step(self) -> StepInputs:
        """The next denoising step's inputs: this run's share of a (batched) forward."""
        return self.generation.prepare_step()

    def finish_step(self, hidden: torch.Tensor) -> FrameOutput | None:
        """Sample from the step's final hidden states (2, F, hidden); decode a finished frame."""
        result = self.generation.finish_step(hidden)
        if result is None:
            return None
        rgb = self.decoder.push(result.codes.to(self.generation.device))
        return FrameOutput(result, rgb)

    def resume(self, codes: list[torch.Tensor], state: SamplerState | None) -> list[FrameOutput]:
        """Carry on from recorded frames (after `first_rgb`): the cache is rebuilt by replaying
        them, and each is decoded again, so the video's frames are whole from the start."""
        device = self.generation.device
        return [
            FrameOutput(r, self.decoder.push(r.codes.to(device)))
            for r in self.generation.resume(codes, state)
        ]

    def change_prompt(self, prompt: str) -> int:
        """Follow `prompt` from the next frame that starts; returns that frame's index
        (ValueError: a prompt the tokenizer refuses or too long for the text slots)."""
        return self.generation.change_prompt(self._prompt_ids(prompt))

    def stop(self) -> None:
        """End an open-ended (or any) video after the frames finished so far."""
        self.generation.stop()

    def close(self) -> None:
        self.generation.close()


@dataclass
class Pipeline:
    model: LumosTransformer
    video_tokenizer: VideoTokenizer
    text_tokenizer: TextTokenizer
    target_size: int
    # The model's recommendations (a built-in model's card): `prepare` uses `defaults.size`
    # when a request gives no size; callers take `defaults.sampling` and
    # `defaults.latent_frames` for requests that name none.
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)

    @classmethod
    def load(
        cls,
        model: str,
        tokenizer: str | None = None,
        text_tokenizer: str | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        target_size: int | None = None,
    ) -> Pipeline:
        """Load the warm parts. The video tokenizer defaults to a built-in model's own (its
        card's, else `builtin:patch`); a checkpoint folder must name it. Built-in models use
        the byte text tokenizer."""
        builtin = model.startswith("builtin:")
        tokenizer = tokenizer or model_tokenizer(model)
        if tokenizer is None and Path(model).is_dir():  # a missing folder: load_model says so
            raise ValueError(
                f"{model}: a checkpoint folder needs its video tokenizer: a Cosmos DV4x8x8 "
                "folder with encoder.jit and decoder.jit (--tokenizer, PACKCACHE_TOKENIZER)"
            )
        lm = load_model(model, device, dtype)
        assert tokenizer is not None  # a checkpoint folder that loaded is a folder
        vt = load_video_tokenizer(tokenizer, device=device)
        if vt.n_codes != lm.config.n_codes:
            raise ValueError(
                f"video tokenizer {tokenizer!r} has {vt.n_codes} codes but model "
                f"{model!r} predicts {lm.config.n_codes}"
            )
        tt = load_text_tokenizer(text_tokenizer or ("builtin:bytes" if builtin else model))
        size = target_size or (BUILTIN_TARGET_SIZE if builtin else LUMOS_TARGET_SIZE)
        return cls(lm, vt, tt, size, model_defaults(model))

    def output_size(self, width: int, height: int, params: VideoParams) -> tuple[int, int]:
        """(width, height) of the video for an image of `width` x `height`: the request's size,
        else the model card's, else the Lumos-1 resolution bucket that keeps most of the image."""
        size = params.size or self.defaults.size
        return size or choose_bucket(width, height, crop_size_list(self.target_size))

    def text_size(self, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(width, height) of a request without an image: `size` (the request's), else the
        model card's, else the official text-to-video size for this target size."""
        official = TEXT_TO_VIDEO_SIZES.get(self.target_size)
        bucket = official or choose_bucket(7, 4, crop_size_list(self.target_size))
        return size or self.defaults.size or bucket

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) sizes this model makes from text alone: the model card's, else the
        resolution buckets of the target size (`image.crop_size_list`)."""
        if self.defaults.size is not None:
            return [self.defaults.size]
        return crop_size_list(self.target_size)

    def prepare(
        self, image: Image.Image | None, params: VideoParams, clip: torch.Tensor | None = None
    ) -> Prepared:
        """Tokens of a request; `image` None for text-to-video (frame 0 is generated). `clip`:
        an uploaded video at the video's size, (1 + 4 given_frames, H, W, 3) uint8, whose
        first frame is `image`: its later frames are encoded as the given frames."""
        if (image is None) != params.text_only:
            given = "no image" if image is None else "an image"
            raise ValueError(f"{given} for a request with text_only={params.text_only}")
        pixels: torch.Tensor | None = None
        codes: torch.Tensor | None = None
        if image is None:
            W, H = self.text_size(params.size)
        else:
            size = self.output_size(image.width, image.height, params)
            pixels = fixed_size_preprocess(image, *size)
            H, W, _ = pixels.shape
            codes = self.video_tokenizer.encode_image(pixels.to(self.model.device)).cpu()  # (h, w)
        stride = self.video_tokenizer.spatial_stride
        given_codes = None if clip is None else self._given_codes(clip, params, (W, H))
        ids = self._prompt_encoder(params, W, H)
        req = VideoRequest(
            ids(params.prompt),
            codes,
            params.latent_frames,
            params.fps,
            params.seconds,
            params.open_ended,
            tuple((i, ids(text)) for i, text in params.prompt_changes),
            params.text_slots,
            params.recache,
            grid=None if codes is not None else (H // stride, W // stride),
            given_frames=params.given_frames,
        )
        return Prepared(params, pixels, req, (W, H), given_codes)

    def _given_codes(
        self, clip: torch.Tensor, params: VideoParams, size: tuple[int, int]
    ) -> torch.Tensor:
        """(given_frames, h, w) codes of a clip's frames after its first."""
        W, H = size
        stride = self.video_tokenizer.temporal_stride
        if tuple(clip.shape[1:]) != (H, W, 3) or clip.shape[0] != 1 + stride * params.given_frames:
            raise ValueError(
                f"a clip of {tuple(clip.shape)} for {params.given_frames} given latent frames "
                f"of a {W}x{H} video"
            )
        return self.video_tokenizer.encode_video(clip.to(self.model.device))[1:]

    def _prompt_encoder(
        self, params: VideoParams, width: int, height: int
    ) -> Callable[[str], list[int]]:
        """caption -> prompt ids of a video of this size, rate and stated duration."""
        return partial(
            build_prompt_ids,
            self.text_tokenizer,
            width=width,
            height=height,
            fps=params.fps,
            seconds=params.seconds,
        )

    def plan(self, prepared: Prepared) -> CacheSpec:
        p = prepared.params
        return cache_plan_for(self.model, prepared.request, p.policy, p.sampling)

    def decode_probe(self) -> None:
        """Two latent frames of codes through a fresh stream decoder at the largest size this
        model makes (the first push decodes one RGB frame, later ones `temporal_stride`): what
        a server runs at warm-up to measure the transient peak of decoding one frame."""
        W, H = max(self.image_sizes(), key=lambda size: size[0] * size[1])
        stride = self.video_tokenizer.spatial_stride
        codes = torch.zeros((H // stride, W // stride), dtype=torch.int64, device=self.model.device)
        decoder = self.video_tokenizer.stream_decoder()
        for _ in range(2):
            decoder.push(codes)

    def decoder_bytes(self, prepared: Prepared) -> int:
        """The most a request's stream decoder holds between frames (kept for its life, like
        its cache): the tokenizer's `stream_state_bytes` at its size and length. An open-ended
        request counts as unbounded: a decoder whose state is windowed caps it; one that keeps
        every frame cannot serve it."""
        W, H = prepared.size
        p = prepared.params
        frames = OPEN_ENDED_DECODE_FRAMES if p.open_ended else p.latent_frames
        return self.video_tokenizer.stream_state_bytes(H, W, frames)

    def step_memory(self, spec: CacheSpec) -> StepMemory:
        """Estimated transient memory of one step of a request planned as `spec`."""
        return step_memory(self.model, spec)

    def start(self, prepared: Prepared, spec: CacheSpec | None = None) -> VideoRun:
        """Allocate the request's cache (as `spec`, the plan admission made, when given)."""
        p = prepared.params
        gen = VideoGeneration(self.model, prepared.request, p.sampling, p.policy, p.seed, spec=spec)
        W, H = prepared.size
        first = prepared.request.first_frame
        return VideoRun(
            gen,
            self.video_tokenizer.stream_decoder(),
            None if first is None else first.to(self.model.device),
            self._prompt_encoder(p, W, H),
            prepared.size,
        )


@dataclass(frozen=True)
class StepMemory:
    """Transient memory of one request's step beyond its cache, split by how it adds up when
    requests share a forward (`batch.forward_together`)."""

    rows: int  # the forward's activations of the request's two rows: a shared forward holds all
    attention: int  # one request's attention temporaries: requests attend one after another
    sample: int  # output head and sampler over one chunk of slots: requests sample in turn

    @property
    def alone(self) -> int:
        """The step run by itself."""
        return self.rows + self.attention + self.sample


def step_memory(model: LumosTransformer, spec: CacheSpec) -> StepMemory:
    """Upper estimate of the memory one step allocates and frees again, beyond the cache.

    Counted: the two-row forward of a frame (or of the text prefix, whichever is longer) against
    the full cache, with float32 attention scores and probabilities (the math path of SDPA;
    fused kernels use less) and grouped K/V expanded to all heads, per request; the MLP, the
    residual stream, q/k/v and float32 RoPE copies per row; then, per chunk of `SAMPLE_CHUNK`
    slots, the float32 code logits of both rows and the sampler's temporaries (the CFG combine,
    the exp and its padded copy). Not counted: the video decoder (its state between frames is
    `decoder_bytes`; the peak of decoding one frame is measured on a device that can, by
    running `decode_probe`) and the allocator's fragmentation, which a server's headroom
    covers. Measured on a CPU (profiler,
    `tests/server/test_batching.py`): the peak of a step alone or of four batched is 0.66-0.70
    of the estimate; the sampler's (slots, codes) temporaries dominate both.
    """
    cfg, layout = model.config, spec.layout
    act = torch.empty(0, dtype=model.dtype).element_size()
    S = max(layout.tokens, spec.prefix_tokens)  # rows fed in one forward
    K, H, D = spec.capacity_tokens, cfg.num_attention_heads, cfg.head_dim
    attention = 2 * (2 * H * S * K * 4) + 2 * (2 * H * K * D * act)  # scores, probs; K, V
    mlp = 3 * 2 * S * cfg.intermediate_size * act
    hidden = 8 * 2 * S * cfg.hidden_size * 4  # residual, q/k/v, float32 RoPE copies
    n, V = min(layout.n_codes, SAMPLE_CHUNK), cfg.n_codes
    # one chunk's logits (2, n, V) (in a low-precision model the activation-dtype copy is freed
    # before the sampler's temporaries exist), then three (n, V) float32 temporaries
    sample = 2 * n * V * 4 + 3 * n * V * 4
    return StepMemory(mlp + hidden, attention, sample)
