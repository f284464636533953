"""Training sequences as a request's cache shows the past: anchors, the packed history, a frame.

What it is: `cache_views`, which replays a policy's write-backs through a real `KVCache` (with no
layers, so no tensors move) and reports, before each target frame, which frames it holds, which
of their tokens, and at which temporal indices (rebased, for a rebasing policy); and
`view_sequence`, one training row holding several such views of one clip under one caption:

    [text] [header] [frame 0] [history of view 1] [frame t1] [history of view 2] [frame t2] ...

Each view's tokens attend the shared prefix and frame 0, then only their own view: its history
frames in order (each bidirectional within itself, as a write-back forward is) and the target
frame after them, so one forward trains several target frames, each seeing exactly the tokens,
positions and MASK pattern that serving gives it: the history frames as written back (the AR-DF
history mask's MASK tokens at the inference positions), the target frame with a tube of masked
codes to predict. What it is not: the whole-clip sequences of `train.py` (absolute positions,
every frame seen whole), or exact in one respect: a history frame's deeper-layer keys are
computed here against the other held frames as they are now, where a served cache keeps those
computed when the frame was written (against what was held then), except after a prompt change,
whose re-cache recomputes them as here.

Invariant: the frames, tokens and temporal indices of a view are those `KVCache` holds when the
target frame is generated (tested against a real generation), and positions come from the same
`layout` functions inference uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from packcache_core.cache import CacheSpec, KVCache, visible_tokens
from packcache_core.config import CODE_OFFSET
from packcache_core.generate import SamplingConfig
from packcache_core.layout import (
    MASK,
    FrameLayout,
    frame_positions,
    history_mask_positions,
    text_positions,
)
from packcache_core.policy import CachePolicy
from packcache_core.rope import RotaryTables

HISTORY_MASK_RATIO = SamplingConfig.history_mask_ratio  # Lumos-1's write-back mask


@dataclass(frozen=True)
class HeldFrame:
    frame: int  # latent frame of the clip (1 = the first generated)
    local: torch.Tensor  # (n,) sorted frame-local token indices the cache holds of it
    index: int  # temporal index its tokens are positioned at


@dataclass(frozen=True)
class CacheView:
    target: int  # the latent frame being generated
    index: int  # its temporal index
    held: tuple[HeldFrame, ...]  # oldest first


def cache_views(
    policy: CachePolicy, layout: FrameLayout, targets: list[int], text_len: int = 0
) -> list[CacheView]:
    """What the cache holds when each of `targets` (sorted, >= 1) is generated, replaying the
    write-backs of frames 1 .. max(targets) - 1 through a `KVCache` with no layers."""
    visible = history_visible(layout)
    spec = CacheSpec(text_len, layout, 10**9, n_layers=0, n_kv=1, head_dim=2, dtype_bytes=4)
    cache = KVCache(spec, policy, RotaryTables(2, 100.0, "cpu"), torch.device("cpu"), torch.float32)
    views = []
    for t in range(1, max(targets) + 1):
        if t in targets:
            first = t - len(cache.history)  # the held frames are the newest ones, in order
            held = tuple(
                HeldFrame(first + i, h.local, h.frame) for i, h in enumerate(cache.history)
            )
            views.append(CacheView(t, cache.next_frame_index, held))
        cache.commit_frame(cache.next_frame_index, visible)
    return views


def history_mask(layout: FrameLayout) -> torch.Tensor:
    """Grid-slice indices the write-back replaces by MASK (the inference positions)."""
    return history_mask_positions(layout.grid_tokens, HISTORY_MASK_RATIO)


def history_visible(layout: FrameLayout) -> torch.Tensor:
    return visible_tokens(layout, history_mask(layout))


@dataclass(frozen=True)
class Row:
    """One training sequence with its own positions and attention pattern."""

    ids: torch.Tensor  # (L,) int64 model ids
    targets: torch.Tensor  # (L,) code index where a code is to be predicted, -1 elsewhere
    positions: torch.Tensor  # (5, L) int64
    allowed: torch.Tensor  # (L, L) bool, True = query may attend key


def view_sequence(
    prefix: list[int],
    codes: dict[int, torch.Tensor],
    views: list[CacheView],
    layout: FrameLayout,
    tube: torch.Tensor,
) -> Row:
    """One row: `prefix` (text and header, or the header alone for the unguided branch), frame
    0 and each view's history and target frame.

    codes: latent frame -> (h, w) codes, for frame 0 and every frame a view holds or targets.
    tube: (h (w + 1),) bool over a frame's grid slice, the target frames' masked tokens.
    """
    text_len = len(prefix) - 3  # tokens before VIDEO_START
    masked = history_mask(layout)
    is_code = torch.zeros(layout.tokens, dtype=torch.bool)
    is_code[layout.code_slots()] = True
    hidden = torch.zeros(layout.tokens, dtype=torch.bool)
    hidden[3 : 3 + layout.grid_tokens] = tube
    ids = [torch.tensor(prefix, dtype=torch.int64), layout.frame_tokens(codes[0])]
    pos = [text_positions(len(prefix)), frame_positions(layout, 0, text_len)]
    # per token: the view it belongs to (-1: shared) and its block (attends blocks <= its own)
    view_of = [torch.full((len(prefix) + layout.tokens,), -1)]
    block = [torch.arange(len(prefix)), torch.full((layout.tokens,), len(prefix))]
    next_block = len(prefix) + 1
    targets = [torch.full((len(prefix) + layout.tokens,), -1)]
    for v, view in enumerate(views):
        for h in view.held:
            tokens = layout.frame_tokens(codes[h.frame])
            tokens[3 + masked] = MASK  # as the write-back feeds it
            n = h.local.numel()
            ids.append(tokens[h.local])
            pos.append(frame_positions(layout, h.index, text_len)[:, h.local])
            view_of.append(torch.full((n,), v))
            block.append(torch.full((n,), next_block))
            targets.append(torch.full((n,), -1))
            next_block += 1
        tokens = layout.frame_tokens(codes[view.target])
        target = torch.full_like(tokens, -1)
        target[hidden & is_code] = tokens[hidden & is_code] - CODE_OFFSET
        tokens[hidden] = MASK
        ids.append(tokens)
        pos.append(frame_positions(layout, view.index, text_len))
        view_of.append(torch.full((layout.tokens,), v))
        block.append(torch.full((layout.tokens,), next_block))
        targets.append(target)
        next_block += 1
    owner, blk = torch.cat(view_of), torch.cat(block)
    allowed = (blk[None, :] <= blk[:, None]) & (
        (owner[None, :] == -1) | (owner[None, :] == owner[:, None])
    )
    return Row(torch.cat(ids), torch.cat(targets), torch.cat(pos, dim=1), allowed)
