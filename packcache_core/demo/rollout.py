"""Training targets seen through a served cache: the history exactly as serving builds it.

What it is: `ServedModel`, the inference-path twin of a compact training model (the same layer
and norm modules, shared; a full-vocabulary embedding refreshed from the compact one), and
`rollout_loss`, which runs a clip through a real `VideoGeneration` with a cache policy, writing
every true frame back as serving writes a finished frame (teacher forcing: `replay_frame`), and
at each target frame runs the compact model's forward with gradients over a copy of the cache
as it stands, the frame's codes masked by a tube, and back-propagates its loss at once.

Every key and value a target attends to is the one serving would hold at that frame: computed
when its frame was written (against what was held then), packed and rebased by the policy, the
text re-cached after a prompt change. The history is a constant of the step (no gradient flows
into how earlier frames were written); the whole-clip rows of `train.py` train the writing. What
it is not: the view rows of `views.py` (one forward for several targets, each history frame
recomputed against the others, cheaper but not what serving holds).

Invariant: the cache a target sees is built by the serving code itself (`VideoGeneration`,
`KVCache`, the policy), so training and serving cannot drift apart.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from packcache_core.config import CODE_OFFSET, LumosConfig
from packcache_core.demo.paths import PathClip
from packcache_core.demo.train import FPS
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import MASK
from packcache_core.model import LumosTransformer
from packcache_core.policy import CachePolicy
from packcache_core.text import ByteTextTokenizer, build_prompt_ids


def path_request(
    clip: PathClip,
    codes: torch.Tensor,
    seconds: int,
    size: tuple[int, int],
    text_only: bool = False,
    last: int | None = None,
) -> VideoRequest:
    """The request a user makes for path `clip` (its codes `(n, h, w)`, `size` = (W, H)):
    frame 0's caption, a prompt change wherever the caption changes (up to latent frame `last`),
    text slots for the longest prompt, and the clip's frame 0 as the conditioning image, or
    none (`text_only`: frame 0 generated, on the clip's grid)."""
    W, H = size
    tokenizer = ByteTextTokenizer()

    def ids(caption: str) -> list[int]:
        return build_prompt_ids(tokenizer, caption, W, H, FPS, seconds)

    request = VideoRequest(
        ids(clip.captions[0]),
        None if text_only else codes[0],
        codes.shape[0],
        FPS,
        seconds,
        grid=(codes.shape[1], codes.shape[2]) if text_only else None,
    )
    # a change is keyed, as requests key it, by the generated frame it starts at (latent frame
    # t is the (t + 1 - first_index)-th); the cache holds text slots for the longest prompt
    changes = tuple(
        (t + 1 - request.first_index, ids(c))
        for t, c in clip.changes()
        if last is None or t <= last
    )
    return dataclasses.replace(request, prompt_changes=changes)


class ServedModel:
    """A full-vocabulary `LumosTransformer` for serving code, sharing a compact model's layers;
    its embedding and code-head rows are copied from the compact model's (`sync`)."""

    def __init__(self, compact: LumosTransformer, cfg: LumosConfig, vocab: torch.Tensor) -> None:
        with torch.device("meta"):
            model = LumosTransformer(cfg)
        model.model.layers = compact.model.layers  # shared modules: no copy, always current
        model.model.norm = compact.model.norm
        model.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        model.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)  # code rows used
        self.model, self.compact, self.vocab = model, compact, vocab
        self.to_compact = torch.full((cfg.vocab_size,), -1, dtype=torch.int64)
        self.to_compact[vocab] = torch.arange(vocab.numel())

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the compact embedding's rows and code head in (after each optimiser step)."""
        self.model.model.embed_tokens.weight[self.vocab] = self.compact.model.embed_tokens.weight
        n = self.compact.lm_head.weight.shape[0]
        self.model.lm_head.weight[CODE_OFFSET : CODE_OFFSET + n] = self.compact.lm_head.weight


def target_logits(
    served: ServedModel, gen: VideoGeneration, codes: torch.Tensor, tube: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(code logits (2, m, n_codes) float32 of both rows, true codes (m,)) of the frame `gen`
    makes next, its true `codes` (h, w) fed with the tube's tokens masked, attending to a copy
    of the cache as it stands; with gradients to the compact model."""
    layout = gen.layout
    hidden_slots = torch.zeros(layout.tokens, dtype=torch.bool)
    hidden_slots[3 : 3 + layout.grid_tokens] = tube
    is_code = torch.zeros(layout.tokens, dtype=torch.bool)
    is_code[layout.code_slots()] = True
    where = hidden_slots & is_code
    with torch.no_grad():
        inp = gen.prepare_step()  # starts the frame: a prompt change, its temporal index
    tokens = layout.frame_tokens(codes)
    target = tokens[where] - CODE_OFFSET
    tokens[hidden_slots] = MASK
    kv = [(k.clone(), v.clone()) for k, v in gen.cache.layers]  # (2, Hkv, C, D) each
    segment = dataclasses.replace(inp.segment, kv=kv)
    ids = served.to_compact[tokens].expand(2, -1)
    hidden = served.compact.forward_segments(ids, inp.cos, inp.sin, [segment])  # (2, F, hid)
    return served.compact.lm_head(hidden[:, where]).float(), target


def frame_loss(
    served: ServedModel,
    gen: VideoGeneration,
    codes: torch.Tensor,
    tube: torch.Tensor,
    scale: float,
    uncond_weight: float,
) -> tuple[float, int, int]:
    """Back-propagate `scale` x the loss of the frame `gen` makes next against `codes` (h, w):
    the cross-entropy over the tube's codes on the conditional row plus `uncond_weight` times
    that on the unconditional row (the guidance branch). Returns (loss, correct, predicted)."""
    logits, target = target_logits(served, gen, codes, tube)
    loss = F.cross_entropy(logits[0], target)
    loss = loss + uncond_weight * F.cross_entropy(logits[1], target)
    (scale * loss).backward()
    correct = int((logits[0].argmax(-1) == target).sum())
    return float(loss.detach()), correct, target.numel()


def rollout_loss(
    served: ServedModel,
    request: VideoRequest,
    codes: torch.Tensor,
    targets: list[int],
    policy: CachePolicy,
    tube: torch.Tensor,
    scale: float,
    history_mask_ratio: float = SamplingConfig.history_mask_ratio,
    uncond_weight: float = 0.5,
) -> tuple[float, int, int]:
    """Back-propagate `scale` x the loss of each target frame of one clip; returns (summed
    loss, correct codes, predicted codes).

    codes: (n, h, w) the clip's true codes, frame 0 the conditioning image (for a text-to-video
        request, the first generated frame).
    targets: sorted latent frames to train on, >= 1 when frame 0 is given.
    tube: (h (w + 1),) bool over a frame's grid slice: the target's masked tokens.
    history_mask_ratio: the write-back mask of each true frame (`SamplingConfig`'s).
    The loss of a target is `frame_loss`'s."""
    sampling = SamplingConfig(steps=1, history_mask_ratio=history_mask_ratio)
    gen = VideoGeneration(served.model, request, sampling, policy)
    with torch.no_grad():
        gen.prefill()
    total, correct, count = 0.0, 0, 0
    for t in range(request.first_index, max(targets) + 1):  # text to video: from frame 0
        if t in targets:
            loss, hit, m = frame_loss(served, gen, codes[t], tube, scale, uncond_weight)
            total, correct, count = total + loss, correct + hit, count + m
        gen.replay_frame(codes[t])
    gen.close()
    return total, correct, count


def pan_target(previous: torch.Tensor, true: torch.Tensor, step: tuple[int, int]) -> torch.Tensor:
    """(h, w) codes of the next frame if the camera moves by `step` = (dy, dx) patches from the
    frame `previous` (h, w): `previous` moved with the window where it stays in view, `true`
    (the clip's own next frame) where the move reveals new ground. On a true pan of whole
    patches, `pan_target(true[t - 1], true[t], step) == true[t]`."""
    dy, dx = step
    h, w = previous.shape
    out = true.clone()
    out[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = previous[
        max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def own_rollout_loss(
    served: ServedModel,
    request: VideoRequest,
    codes: torch.Tensor,
    steps: list[tuple[int, int]],
    policy: CachePolicy,
    sampling: SamplingConfig,
    seed: int,
    tube: torch.Tensor,
    scale: float,
    uncond_weight: float = 0.5,
) -> tuple[float, int, int, list[torch.Tensor]]:
    """Back-propagate `scale` x the loss of every generated frame of one clip, each frame
    sampled by the model (`sampling`, `seed`) and written back as serving does; returns
    (summed loss, correct codes, predicted codes, the (h, w) codes drawn per frame).

    codes: (n, h, w) the clip's true codes: the conditioning frame (or, for text to video, frame
        0's target) and the new ground each pan reveals.
    steps: (n,) the window's move into each frame, (dy, dx) patches ((0, 0): still).
    A frame's target is `pan_target` of the frame drawn before it (text to video: frame 0 is
    the clip's own). The loss is `frame_loss`'s."""
    gen = VideoGeneration(served.model, request, sampling, policy, seed=seed)
    with torch.no_grad():
        gen.prefill()
    total, correct, count, drawn = 0.0, 0, 0, []
    previous = codes[0]
    for t in range(request.first_index, codes.shape[0]):
        target_codes = codes[t] if t == 0 else pan_target(previous, codes[t], steps[t])
        loss, hit, m = frame_loss(served, gen, target_codes, tube, scale, uncond_weight)
        total, correct, count = total + loss, correct + hit, count + m
        with torch.no_grad():
            result = None
            while result is None:
                result = gen.step()
        previous = result.codes
        drawn.append(previous)
    gen.close()
    return total, correct, count, drawn
