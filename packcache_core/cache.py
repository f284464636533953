"""Per-request KV storage: fixed buffers for both guidance branches, packed in place.

What it is: one K and one V buffer per layer, shape (2, n_kv, C, D) (row 0 the conditional
branch, row 1 the unconditional one), allocated once when a request is admitted, plus explicit
host-side bookkeeping of which frame-local tokens each history frame holds and at which
temporal frame index they are positioned. What it is not: a policy (that decides what to keep,
see `policy.py`) or a generator.

Slot layout (same for both rows, so every write is one slice):
    [ pad | text | header (3) | frame 0 (F) | history (packed) | current frame (F) ]
      <----- prefix P = text capacity + 3 ---->
Text-to-video has no frame 0 slots (`anchor_frame` False): its generated frame 0 is written
back with the AR-DF mask, as the official code does, and is the first history frame.
The prefix is right-aligned: the conditional row's text ends where the header begins, and the
unconditional row has no text (all its text slots are padding). So each row attends one
contiguous run of slots, from its first valid one (`row_start`) to the end, and a denoising step
needs no attention mask at all (which lets a GPU use its flash kernels).

Invariants: occupancy never exceeds the capacity fixed at construction; anchors (text, header,
frame 0) are never moved; a history frame only ever loses tokens; after `pack` the retained
history is contiguous and, with rebase, positioned right before the next frame (frames 1..m, or
up to `rebase_at`) with keys re-rotated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from packcache_core.config import LumosConfig
from packcache_core.layout import BOUNDARY, HEADER_LEN, FrameLayout, frame_positions
from packcache_core.policy import (
    CachePolicy,
    PolicyError,
    frames_held,
    open_ended_refusal,
    rebase_at,
)
from packcache_core.rope import RotaryTables, rerotate


@dataclass(frozen=True)
class CacheSpec:
    """Memory math of one request's cache, known before anything is allocated."""

    # conditional tokens before VIDEO_START (BOS + text + SEP) of the first prompt: the
    # conditional row's frames are positioned after them for the whole video
    text_len: int
    layout: FrameLayout
    history_capacity: int  # most history tokens ever held (from simulating the policy)
    n_layers: int
    n_kv: int
    head_dim: int
    dtype_bytes: int
    text_slots: int = 0  # slots for the text, if more than text_len: room for a new prompt
    anchor_frame: bool = True  # a clean conditioning frame 0 among the anchors (False: t2v)

    @property
    def first_generated(self) -> int:
        """Temporal index of the first generated frame: 1 after a conditioning frame, else 0."""
        return 1 if self.anchor_frame else 0

    @property
    def text_capacity(self) -> int:
        """Slots the conditional row's text may use (a prompt changed mid-video included)."""
        return max(self.text_len, self.text_slots)

    @property
    def prefix_tokens(self) -> int:
        return self.text_capacity + HEADER_LEN

    @property
    def anchor_tokens(self) -> int:
        return self.prefix_tokens + (self.layout.tokens if self.anchor_frame else 0)

    @property
    def capacity_tokens(self) -> int:
        """Slots per branch: anchors + history + the current frame."""
        return self.anchor_tokens + self.history_capacity + self.layout.tokens

    @property
    def bytes(self) -> int:
        """K and V, all layers, both branches."""
        return (
            2
            * 2
            * self.n_layers
            * self.n_kv
            * self.capacity_tokens
            * self.head_dim
            * self.dtype_bytes
        )


@dataclass
class HistoryFrame:
    frame: int  # temporal frame index its tokens are rotated for
    local: torch.Tensor  # (n,) sorted frame-local indices held, in slot order (CPU int64)
    score: torch.Tensor | None = None  # (n,) float32 per held token, for scoring policies
    tokens: torch.Tensor | None = None  # (tokens,) the frame as written back (for a re-cache)


def visible_tokens(layout: FrameLayout, masked: torch.Tensor) -> torch.Tensor:
    """(tokens,) bool: frame-local tokens that keep content after the AR-DF write-back, where
    `masked` are the grid-slice indices the history mask replaces by MASK."""
    vis = torch.ones(layout.tokens, dtype=torch.bool)
    vis[3 + masked] = False
    return vis


def simulate_history(
    policy: CachePolicy, layout: FrameLayout, visible: torch.Tensor, write_backs: int | None
) -> int:
    """Largest history (tokens) the policy holds over `write_backs` frames: the capacity.
    None: a video without a preset end, for a policy whose history is bounded (ValueError
    otherwise): past twice the frames it holds, its history only repeats itself."""
    if write_backs is None:
        if (reason := open_ended_refusal(policy)) is not None:
            raise ValueError(reason)
        held = frames_held(policy)
        assert held is not None
        write_backs = 2 * (held + 1)
    frames: list[torch.Tensor] = []  # newest first
    peak = 0
    for _ in range(write_backs):
        peak = max(peak, sum(f.numel() for f in frames))
        frames.insert(0, torch.arange(layout.tokens))
        keep = policy.select(frames, layout, visible)
        frames = [f[k] for f, k in zip(frames, keep, strict=True) if k is not None]
        if any(f.numel() <= BOUNDARY for f in frames):
            raise PolicyError(
                f"cache policy {policy.name!r} with these parameters would keep a history frame "
                f"with no grid token on this model's {layout.h}x{layout.w} latent grid "
                f"({layout.grid_tokens} grid tokens a frame): raise budget",
                "budget",
            )
    return max(peak, sum(f.numel() for f in frames))


@dataclass
class KVCache:
    """Storage for one request (2 rows: cond, uncond); see the module docstring."""

    spec: CacheSpec
    policy: CachePolicy
    rope: RotaryTables
    device: torch.device
    dtype: torch.dtype
    k: list[torch.Tensor] = field(init=False)
    v: list[torch.Tensor] = field(init=False)
    history: list[HistoryFrame] = field(init=False, default_factory=list)  # oldest first
    frames_written: int = field(init=False, default=0)  # generated frames written back so far
    row_start: tuple[int, int] = field(init=False)  # first slot each row attends (`hold_text`)

    def __post_init__(self) -> None:
        s = self.spec
        shape = (2, s.n_kv, s.capacity_tokens, s.head_dim)
        self.k = [
            torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(s.n_layers)
        ]
        self.v = [
            torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(s.n_layers)
        ]
        self.hold_text(s.text_len)

    def hold_text(self, n: int) -> None:
        """The conditional row's text is `n` tokens long from now on: set each row's first
        attended slot (`row_start`; the unconditional row starts at the header)."""
        assert n <= self.spec.text_capacity, "more text than the slots held for it"
        header = self.spec.prefix_tokens - HEADER_LEN
        self.row_start = (header - n, header)

    @classmethod
    def allocate(
        cls,
        cfg: LumosConfig,
        text_len: int,
        layout: FrameLayout,
        policy: CachePolicy,
        visible: torch.Tensor,
        write_backs: int,
        rope: RotaryTables,
        device: torch.device,
        dtype: torch.dtype,
    ) -> KVCache:
        spec = plan_cache(cfg, text_len, layout, policy, visible, write_backs, dtype)
        return cls(spec, policy, rope, device, dtype)

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self.k, self.v, strict=True))

    @property
    def history_tokens(self) -> int:
        return sum(h.local.numel() for h in self.history)

    @property
    def current_start(self) -> int:
        """First slot of the frame being denoised (and of the next write-back)."""
        return self.spec.anchor_tokens + self.history_tokens

    @property
    def used_tokens(self) -> int:
        """Slots in use while denoising the next frame (per branch): up to the frame's end,
        counted from slot 0 (each row attends those from its `row_start` on)."""
        return self.current_start + self.spec.layout.tokens

    @property
    def next_frame_index(self) -> int:
        """Temporal frame index for the next frame: the absolute frame number (no rebase), or
        right after the retained history (rebase), or with `rebase_at` R the absolute number
        until it reaches R and then R (never below right after the retained history)."""
        return self._next_index(len(self.history))

    def _next_index(self, kept: int) -> int:
        first = self.spec.first_generated
        if not self.policy.rebase:
            return first + self.frames_written
        saturate = rebase_at(self.policy)
        if not saturate:
            return first + kept
        return max(first + kept, min(first + self.frames_written, saturate))

    def _rebased(self, kept: int) -> range:
        """Temporal indices of `kept` retained frames with rebase: contiguous, right before
        the next frame."""
        start = self._next_index(kept) - kept
        return range(start, start + kept)

    def frame_mask(self, seen: int) -> torch.Tensor:
        """(2, 1, 1, used_tokens) additive mask (cache dtype) for a frame fed while only the
        first `seen` history tokens are valid (a re-cache redoing the history in order): 0 on
        each row's slots from `row_start` on, the history up to `seen` and the current frame,
        -inf elsewhere. Denoising steps need no mask (`row_start` alone)."""
        slot = torch.arange(self.used_tokens, device=self.device)
        first = torch.tensor(self.row_start, device=self.device)[:, None]
        history_end = self.spec.anchor_tokens + seen
        valid = (slot >= first) & ((slot < history_end) | (slot >= self.current_start))
        mask = torch.zeros(valid.shape, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(~valid, float("-inf"))[:, None, None, :]

    def commit_frame(
        self, frame: int, visible: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> None:
        """Register the frame just written back at `current_start` (its `tokens`, kept so it
        can be forwarded again) and pack the history."""
        assert self.used_tokens <= self.spec.capacity_tokens, "cache capacity exceeded"
        score = self.token_scores() if self.policy.uses_scores else None
        local = torch.arange(self.spec.layout.tokens)
        self.history.append(HistoryFrame(frame, local, score, tokens))
        self.frames_written += 1
        self.pack(visible)

    def token_scores(self) -> torch.Tensor:
        """(tokens,) float32 on the CPU: the L2 norm of each key of the frame just written
        (conditional branch), averaged over layers and K/V heads. Rotation keeps norms, so the
        score does not change when a frame is rebased. One small device-to-host copy per
        frame, made only for policies that read scores."""
        s, F = self.current_start, self.spec.layout.tokens
        norms = torch.stack([k[0, :, s : s + F].float().norm(dim=-1).mean(0) for k in self.k])
        return norms.mean(0).cpu()

    def pack(self, visible: torch.Tensor) -> None:
        """Apply the policy: one gather (and, on rebase, one re-rotation) per layer."""
        layout, A = self.spec.layout, self.spec.anchor_tokens
        newest_first = [h.local for h in reversed(self.history)]
        scores = None
        if self.policy.uses_scores:
            scores = [h.score for h in reversed(self.history) if h.score is not None]
        keep = self.policy.select(newest_first, layout, visible, scores)
        keep = list(reversed(keep))  # oldest first
        src, kept, offset = [], [], A
        for h, k in zip(self.history, keep, strict=True):
            if k is not None:
                src.append(offset + k)
                score = None if h.score is None else h.score[k]
                kept.append(HistoryFrame(h.frame, h.local[k], score, h.tokens))
            offset += h.local.numel()
        targets = self._rebased(len(kept))
        moved = self.policy.rebase and any(h.frame != t for t, h in zip(targets, kept, strict=True))
        if not moved and sum(k.numel() for k in src) == offset - A:
            return  # nothing evicted or dropped: the gather would be the identity
        index = torch.cat(src).to(self.device) if src else torch.zeros(0, dtype=torch.int64)
        delta = self._rebase_angles(kept, targets) if moved else None
        n = index.numel()
        for buf in self.k:
            packed = buf.index_select(2, index)  # (2, Hkv, n, D)
            buf[:, :, A : A + n] = packed if delta is None else rerotate(packed, delta)
        for buf in self.v:
            buf[:, :, A : A + n] = buf.index_select(2, index)
        if self.policy.rebase:
            kept = [
                HistoryFrame(t, h.local, h.score, h.tokens)
                for t, h in zip(targets, kept, strict=True)
            ]
        self.history = kept

    def _rebase_angles(self, kept: list[HistoryFrame], targets: range) -> torch.Tensor:
        """(2, n, D/2) angle change of every kept token when its frame moves to its target.

        Per branch, the difference of the exact float32 angles at the old and new positions,
        taken in float64: the re-rotated key equals the key rotated at its new position from
        scratch, up to multiplication rounding."""
        layout = self.spec.layout
        rows = []
        for text_len in (self.spec.text_len, 0):
            old = torch.cat(
                [frame_positions(layout, h.frame, text_len)[:, h.local] for h in kept], 1
            )
            new = torch.cat(
                [
                    frame_positions(layout, t, text_len)[:, h.local]
                    for t, h in zip(targets, kept, strict=True)
                ],
                1,
            )
            rows.append(
                self.rope.angles(new.to(self.device)).double()
                - self.rope.angles(old.to(self.device)).double()
            )
        return torch.stack(rows)


def plan_cache(
    cfg: LumosConfig,
    text_len: int,
    layout: FrameLayout,
    policy: CachePolicy,
    visible: torch.Tensor,
    write_backs: int | None,
    dtype: torch.dtype,
    text_slots: int = 0,
    anchor_frame: bool = True,
) -> CacheSpec:
    """The cache a request will need, computed before it is admitted; `write_backs` None for
    a video without a preset end, `text_slots` the slots held for its text (if more than
    `text_len`, so a longer prompt can replace the first), `anchor_frame` False for
    text-to-video (no conditioning frame)."""
    return CacheSpec(
        text_len=text_len,
        layout=layout,
        history_capacity=simulate_history(policy, layout, visible, write_backs),
        n_layers=cfg.num_hidden_layers,
        n_kv=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        dtype_bytes=torch.empty(0, dtype=dtype).element_size(),
        text_slots=text_slots,
        anchor_frame=anchor_frame,
    )
