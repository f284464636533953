"""Lumos-1's AR-DF training objective at a tiny size, for the built-in demo model.

What it is: the demo config, the ids the demo model ever sees (its compact vocabulary), one
training sequence per clip in the exact inference layout, the batch (positions, rotary tables,
attention mask, targets) and the masked-code loss. What it is not: the training loop (see
`scripts/train_demo_model.py`) or a general trainer.

The objective follows Lumos-1's published training flags (`--MaskedAR --mask_type tube
--min_masking_rate 0.7 --mask_schedule cosine`, text dropped with probability 0.1):
- one whole sequence per clip, BOS + text + SEP + header + frames, fed at once with the
  inference attention mask (causal text, bidirectional within each frame, causal across frames)
  and the inference MM-RoPE positions;
- per clip a mask ratio r = cos(pi/2 u), u ~ U(0, 1), raised to at least 0.7, and one random set
  of round(r G) positions of a frame's grid slice (codes and row newlines, G = h (w + 1)) that
  is masked in every generated frame alike (a "tube"); the conditioning frame stays clean, as it
  does in the inference cache (a text-to-video sequence has none: its frame 0 is generated);
- cross-entropy on the masked code positions of the generated frames only (newlines are given
  at inference, never predicted), over the code vocabulary;
- with probability 0.1 the text is dropped: the sequence starts at VIDEO_START, which is exactly
  the unconditional branch of classifier-free guidance.
Because every history frame is masked at the current frame's positions, a masked code can only
be recovered from other positions of earlier frames: the model learns to use the 70%-masked
history that inference writes back, and, for a pan, to copy codes shifted by one per frame.

Invariant: a training sequence is token for token what inference feeds for the same clip (with
the tube's MASK tokens where inference would have sampled or write-back-masked ones), so
positions and masks come from the same `layout` functions inference uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from packcache_core.config import CODE_OFFSET, LumosConfig
from packcache_core.demo.views import Row
from packcache_core.layout import (
    BOS,
    IMAGE_END,
    IMAGE_START,
    MASK,
    NEWLINE,
    NGRID,
    SEP,
    VIDEO_START,
    FrameLayout,
    attention_allowed,
    header_tokens,
    positions_from_tokens,
    text_positions,
)
from packcache_core.model import LumosTransformer
from packcache_core.rope import RotaryTables
from packcache_core.text import BYTE_OFFSET, ByteTextTokenizer, build_prompt_ids
from packcache_core.video.builtin import SMALL_FSQ

N_CODES = SMALL_FSQ.n_codes  # builtin:patch-small
MAX_NGRID = 32  # n-grid tokens NGRID + 0 .. 32: sizes (px / 32), seconds, fps
FPS = 12

# hidden 128, 4 layers, 4 heads of 32 (2 K/V heads). rope_theta 100 instead of Lumos-1's 10000:
# with head_dim 32 there are only 16 frequencies, and at theta 10000 the fastest w frequency
# turns by 0.25 rad per column, too little to tell a one-column shift apart; at 100 it turns by
# 1.4 rad per column and 4 rad per frame.
DEMO_CONFIG = LumosConfig(
    vocab_size=CODE_OFFSET + N_CODES,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=100.0,
)


def vocabulary(n_codes: int = N_CODES) -> torch.Tensor:
    """(K,) sorted int64 ids the demo model is ever fed or asked for: structural tokens,
    n-grid tokens, the byte text tokenizer's 256 ids and the codes."""
    special = [BOS, SEP, VIDEO_START, MASK, IMAGE_START, IMAGE_END, NEWLINE]
    ngrid = range(NGRID, NGRID + MAX_NGRID + 1)
    text = range(BYTE_OFFSET, BYTE_OFFSET + 256)
    codes = range(CODE_OFFSET, CODE_OFFSET + n_codes)
    return torch.tensor(sorted({*special, *ngrid, *text, *codes}), dtype=torch.int64)


def tube_mask(grid_tokens: int, min_rate: float, g: torch.Generator) -> torch.Tensor:
    """(grid_tokens,) bool, True = masked: round(r G) random positions, r = max(cos(pi u / 2),
    min_rate) with u ~ U(0, 1) (Lumos-1's cosine schedule clipped from below)."""
    u = float(torch.rand((), generator=g))
    rate = max(math.cos(math.pi / 2 * u), min_rate)
    n = max(1, round(rate * grid_tokens))
    return torch.randperm(grid_tokens, generator=g) < n


def clip_sequence(
    codes: torch.Tensor,
    caption: str,
    seconds: int,
    masked: torch.Tensor,
    drop_text: bool,
    text_to_video: bool = False,
    fps: int = FPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sequence: (ids (L,), targets (L,)); targets hold the code index at masked
    code slots of frames 1.. (of every frame for `text_to_video`) and -1 elsewhere.

    codes: (n, h, w) codes of the clip's latent frames, frame 0 the conditioning image, or for
        `text_to_video` the first generated frame (masked by the tube like the others, as the
        text-to-video cache holds it: a history frame written with the AR-DF mask).
    masked: (h (w + 1),) bool tube over a frame's grid slice.
    fps: the stated frame rate (the images route states an image as 1 s at 1 fps).
    """
    n, h, w = codes.shape
    layout = FrameLayout(h, w)
    H, W = layout.pixel_size
    text = [] if drop_text else build_prompt_ids(ByteTextTokenizer(), caption, W, H, fps, seconds)
    prefix = torch.tensor(text + header_tokens(seconds, fps), dtype=torch.int64)
    is_code = torch.zeros(layout.tokens, dtype=torch.bool)
    is_code[layout.code_slots()] = True
    hidden = torch.zeros(layout.tokens, dtype=torch.bool)
    hidden[3 : 3 + layout.grid_tokens] = masked
    frames, targets = [], []
    for f in range(n):
        tokens = layout.frame_tokens(codes[f])
        target = torch.full_like(tokens, -1)
        if f > 0 or text_to_video:
            target[hidden & is_code] = tokens[hidden & is_code] - CODE_OFFSET
            tokens[hidden] = MASK
        frames.append(tokens)
        targets.append(target)
    ids = torch.cat([prefix, *frames])
    return ids, torch.cat([torch.full_like(prefix, -1), *targets])


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # (B, L) compact ids (index into `vocabulary()`)
    cos: torch.Tensor  # (B, L, D)
    sin: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, 1, L, L) bool, True = may attend
    targets: torch.Tensor  # (B, L) code index at masked code slots, -1 elsewhere


def whole_clip_row(ids: torch.Tensor, targets: torch.Tensor) -> Row:
    """A `clip_sequence` as a row: the reference positions and attention mask of its ids."""
    return Row(ids, targets, positions_from_tokens(ids), attention_allowed(ids))


def _padded(row: Row, L: int) -> Row:
    """`row` right-padded to L tokens. Padding comes after every real token and no real token
    attends it; each pad attends what precedes it (so no attention row is empty); no targets."""
    n, pad = row.ids.numel(), L - row.ids.numel()
    allowed = torch.ones(L, L, dtype=torch.bool).tril()
    allowed[:n, :n] = row.allowed
    allowed[:n, n:] = False
    return Row(
        torch.cat([row.ids, torch.full((pad,), BOS, dtype=torch.int64)]),
        F.pad(row.targets, (0, pad), value=-1),
        torch.cat([row.positions, text_positions(pad, start=n)], dim=1),
        allowed,
    )


def make_batch(rows: list[Row], vocab: torch.Tensor, rope: RotaryTables) -> Batch:
    """Rows right-padded to one length, in the compact vocabulary, with their rotary tables."""
    L = max(r.ids.numel() for r in rows)
    to_compact = torch.full((int(vocab.max()) + 1,), -1, dtype=torch.int64)
    to_compact[vocab] = torch.arange(vocab.numel())
    padded = [_padded(r, L) for r in rows]
    tokens = torch.stack([to_compact[r.ids] for r in padded])
    assert bool((tokens >= 0).all()), "a token outside the demo vocabulary"
    pos = torch.stack([r.positions for r in padded], dim=1)  # (5, B, L)
    cos, sin = rope.cos_sin(pos, torch.float32)  # (B, L, D) each
    return Batch(
        tokens,
        cos,
        sin,
        torch.stack([r.allowed for r in padded])[:, None],
        torch.stack([r.targets for r in padded]),
    )


def compact_model(
    cfg: LumosConfig, n_rows: int, seed: int, qk_norm_init: float = 1.0
) -> LumosTransformer:
    """A trainable `LumosTransformer` whose embedding has only `n_rows` rows (the compact
    vocabulary) and whose output head has only the code rows; everything else is the inference
    model's own modules and forward.

    Init (GPT-2 style): Linear and embedding weights N(0, 0.02), the two projections that write
    into the residual stream (o_proj, down_proj) scaled by 1/sqrt(2 n_layers), norms at their
    identity (weight 1, bias 0), except the qk-norm weights, which start at `qk_norm_init`:
    after qk-norm an attention logit is at most sqrt(head_dim) w^2 (5.7 at w = 1, head_dim 32),
    so larger values start attention sharper. The shipped model starts at 1.0 and learns its
    sharpness (an earlier 1500-step run from 1.5 reached a lower loss, 0.78, but its pans
    followed the caption with `packcache` in 10 of 16 held-out clips, against 32 of 32 here).
    """
    with torch.device("meta"):
        model = LumosTransformer(cfg)
    model.model.embed_tokens = nn.Embedding(n_rows, cfg.hidden_size, device="meta")
    model.lm_head = nn.Linear(cfg.hidden_size, cfg.n_codes, bias=False, device="meta")
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * cfg.num_hidden_layers)
    for name, p in sorted(model.named_parameters()):
        with torch.no_grad():
            if name.endswith("norm.bias"):
                p.zero_()
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.fill_(qk_norm_init)
            elif name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def masked_code_loss(model: LumosTransformer, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, accuracy) over the masked code slots of the batch."""
    hidden = model(batch.tokens, batch.cos, batch.sin, batch.mask)  # (B, L, hidden)
    where = batch.targets >= 0  # (B, L)
    logits = model.lm_head(hidden[where]).float()  # (N, n_codes)
    target = batch.targets[where]  # (N,)
    loss = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(-1) == target).float().mean()
    return loss, accuracy
