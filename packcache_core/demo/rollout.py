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
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import MASK
from packcache_core.model import LumosTransformer
from packcache_core.policy import CachePolicy


class ServedModel:
    """A full-vocabulary `LumosTransformer` for serving code, sharing a compact model's layers."""

    def __init__(self, compact: LumosTransformer, cfg: LumosConfig, vocab: torch.Tensor) -> None:
        with torch.device("meta"):
            model = LumosTransformer(cfg)
        model.model.layers = compact.model.layers  # shared modules: no copy, always current
        model.model.norm = compact.model.norm
        model.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        model.lm_head = nn.Linear(cfg.hidden_size, 1, bias=False)  # never used: replays only
        self.model, self.compact, self.vocab = model, compact, vocab
        self.to_compact = torch.full((cfg.vocab_size,), -1, dtype=torch.int64)
        self.to_compact[vocab] = torch.arange(vocab.numel())

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the compact embedding's rows in (after each optimiser step)."""
        self.model.model.embed_tokens.weight[self.vocab] = self.compact.model.embed_tokens.weight


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


def rollout_loss(
    served: ServedModel,
    request: VideoRequest,
    codes: torch.Tensor,
    targets: list[int],
    policy: CachePolicy,
    tube: torch.Tensor,
    scale: float,
    uncond_weight: float = 0.5,
) -> tuple[float, int, int]:
    """Back-propagate `scale` x the loss of each target frame of one clip; returns (summed
    loss, correct codes, predicted codes).

    codes: (n, h, w) the clip's true codes, frame 0 the conditioning image (for a text-to-video
        request, the first generated frame).
    targets: sorted latent frames to train on, >= 1 when frame 0 is given.
    tube: (h (w + 1),) bool over a frame's grid slice: the target's masked tokens.
    The loss of a target is the cross-entropy over its masked codes on the conditional row
    plus `uncond_weight` times that on the unconditional row (the guidance branch)."""
    gen = VideoGeneration(served.model, request, SamplingConfig(steps=1), policy)
    with torch.no_grad():
        gen.prefill()
    total, correct, count = 0.0, 0, 0
    first = 0 if request.first_frame is None else 1  # text-to-video generates frame 0 too
    for t in range(first, max(targets) + 1):
        if t in targets:
            logits, target = target_logits(served, gen, codes[t], tube)
            loss = F.cross_entropy(logits[0], target)
            loss = loss + uncond_weight * F.cross_entropy(logits[1], target)
            (scale * loss).backward()
            total += float(loss.detach())
            correct += int((logits[0].argmax(-1) == target).sum())
            count += target.numel()
        gen.replay_frame(codes[t])
    gen.close()
    return total, correct, count
