"""Lumos-1's image-to-video token layout: special ids, frames, positions and attention masks.

What it is: pure functions of token ids and frame geometry, vectorised (no Python loop per
token). What it is not: a tokenizer (text or video) or a cache.

The sequence of the conditional branch is
    [BOS] text [SEP] [VIDEO_START, DUR, FPS] frame_0 frame_1 ...
    frame = [IMAGE_START, H_TOK, W_TOK] + h rows of (w codes, NEWLINE) + [IMAGE_END]
The unconditional branch is the same sequence from VIDEO_START on. Positions are absolute in
each branch's own sequence: text and boundary tokens use 1-D RoPE at their index; codes and
row newlines (flag 1) use (t, h, w) = P0 + (4f, 8r, 8c), P0 = index of the first code.

Invariant: `frame_positions` (built from geometry) and `positions_from_tokens` (built from ids)
agree on every token; both equal the reference's position ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from packcache_core.config import CODE_OFFSET

BOS = 0
SEP = 8710  # <reserved08706>: end of the text turn
VIDEO_START = 9004  # <reserved09000>
VIDEO_END = 9005  # <reserved09001>
MASK = 9003  # <reserved08999>
IMAGE_START = 8197  # <racm3:break>
IMAGE_END = 8196  # <eoss>
NEWLINE = 8803  # <reserved08799>
NGRID = 8804  # <reserved0{8800+n}> = NGRID + n: sizes (n = px/32), seconds, fps

T_STRIDE, HW_STRIDE = 4, 8  # MM-RoPE position strides for Cosmos DV4x8x8
BOUNDARY = 4  # tokens of a frame that are not grid content: start, two sizes, end


def rgb_frames(latent_frames: int, t_stride: int = T_STRIDE) -> int:
    """RGB frames of a clip of `latent_frames`: 1 + 4 (latent_frames - 1); the inverse of
    `latent_frames_for`."""
    return 1 + t_stride * (latent_frames - 1)


@dataclass(frozen=True)
class FrameLayout:
    """Geometry of one latent frame: h x w codes, each row followed by a newline token."""

    h: int
    w: int

    def __post_init__(self) -> None:
        if self.h <= 0 or self.w <= 0 or self.h % 4 or self.w % 4:
            # size tokens count 32-pixel units = 4 latent rows/columns
            raise ValueError(f"latent grid {self.h}x{self.w} must be positive multiples of 4")

    @property
    def tokens(self) -> int:
        """Tokens per frame, boundary tokens included (4084 at 48x84)."""
        return BOUNDARY + self.grid_tokens

    @property
    def grid_tokens(self) -> int:
        """Codes plus row newlines: the slice [3:-1] of a frame (4080 at 48x84)."""
        return self.h * (self.w + 1)

    @property
    def n_codes(self) -> int:
        return self.h * self.w

    @property
    def size_tokens(self) -> tuple[int, int]:
        return NGRID + self.h * HW_STRIDE // 32, NGRID + self.w * HW_STRIDE // 32

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(height, width) in pixels for an 8x spatial tokenizer."""
        return self.h * HW_STRIDE, self.w * HW_STRIDE

    @classmethod
    def from_size_tokens(cls, h_tok: int, w_tok: int) -> FrameLayout:
        return cls((h_tok - NGRID) * 32 // HW_STRIDE, (w_tok - NGRID) * 32 // HW_STRIDE)

    def code_slots(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(h*w,) int64: frame-local index of each code, row-major, newlines skipped."""
        r = torch.arange(self.h, device=device)[:, None]
        c = torch.arange(self.w, device=device)[None, :]
        return (3 + r * (self.w + 1) + c).reshape(-1)

    def frame_tokens(self, codes: torch.Tensor | None) -> torch.Tensor:
        """(tokens,) int64 frame; codes (h, w) in [0, n_codes) or None for an all-mask frame."""
        out = torch.full(
            (self.tokens,),
            NEWLINE,
            dtype=torch.int64,
            device=None if codes is None else codes.device,
        )
        out[0], out[-1] = IMAGE_START, IMAGE_END
        out[1], out[2] = self.size_tokens
        slots = self.code_slots(out.device)
        out[slots] = MASK if codes is None else codes.reshape(-1).to(torch.int64) + CODE_OFFSET
        return out


def latent_frames_for(num_frames: float, t_stride: int = T_STRIDE) -> int:
    """Latent frames that cover `num_frames` RGB frames: ceil((N - 1) / 4) + 1 (24 -> 7)."""
    return math.ceil((num_frames - 1) / t_stride) + 1


HEADER_LEN = 3  # the tokens between the text and frame 0: VIDEO_START, seconds, fps


def header_tokens(seconds: int, fps: int) -> list[int]:
    return [VIDEO_START, NGRID + seconds, NGRID + fps]


def prompt_text(caption: str, width: int, height: int, fps: int, seconds: int) -> str:
    """The i2v instruction Lumos-1 was trained with (the caption follows after a newline)."""
    return (
        f"Generate a video with a resolution of {width}x{height}, consisting of "
        f"{fps * seconds} frames at {fps} frames per second, according to the following "
        f"prompt:\n {caption}"
    )


def history_mask_positions(length: int, ratio: float) -> torch.Tensor:
    """AR-DF tube mask: indices (into a frame's grid slice [3:-1]) replaced by MASK at write-back.

    `round(ratio * length)` evenly spaced indices `round(k * length / num)`, half to even,
    in float32 as the reference computes them.
    """
    num = round(ratio * length)
    if num <= 0:
        return torch.zeros(0, dtype=torch.int64)
    idx = (torch.arange(num, dtype=torch.float32) * (length / num)).round().to(torch.int64)
    return idx.clamp_(max=length - 1)


def frame_positions(
    layout: FrameLayout, frame: int, text_len: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(5, tokens) int64 position ids of latent frame `frame` in a branch whose text prefix
    (everything before VIDEO_START) has `text_len` tokens."""
    j = torch.arange(layout.tokens, device=device)
    pos_1d = text_len + HEADER_LEN + frame * layout.tokens + j
    q = j - 3
    flag = (q >= 0) & (q < layout.grid_tokens)
    p0 = text_len + 6
    t = torch.full_like(j, p0 + T_STRIDE * frame)
    h = p0 + HW_STRIDE * torch.div(q, layout.w + 1, rounding_mode="floor")
    w = p0 + HW_STRIDE * torch.remainder(q, layout.w + 1)
    thw = torch.where(flag, torch.stack((t, h, w)), pos_1d)
    return torch.cat((pos_1d[None], thw, flag[None].long()))


def text_positions(
    length: int, start: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """(5, length) position ids of 1-D tokens at indices start .. start+length-1."""
    p = torch.arange(start, start + length, device=device)
    return torch.stack((p, p, p, p, torch.zeros_like(p)))


def _frame_segments(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, FrameLayout | None]:
    """Per token of a 1-D sequence: frame index (-1 outside frames), local index in its frame."""
    L = ids.shape[0]
    idx = torch.arange(L, device=ids.device)
    is_start = ids == IMAGE_START
    starts = idx[is_start]
    if starts.numel() == 0:
        return torch.full_like(idx, -1), torch.zeros_like(idx), None
    s0 = int(starts[0])
    layout = FrameLayout.from_size_tokens(int(ids[s0 + 1]), int(ids[s0 + 2]))
    last_start = torch.cummax(torch.where(is_start, idx, -1), dim=0).values
    local = idx - last_start
    inside = (last_start >= 0) & (local < layout.tokens)
    frame = torch.where(inside, torch.cumsum(is_start.long(), 0) - 1, -1)
    return frame, torch.where(inside, local, 0), layout


def positions_from_tokens(ids: torch.Tensor) -> torch.Tensor:
    """(5, L) reference position ids of a whole branch sequence (1-D int64 ids)."""
    L = ids.shape[0]
    pos_1d = torch.arange(L, device=ids.device)
    frame, local, layout = _frame_segments(ids)
    if layout is None:
        return text_positions(L, device=ids.device)
    q = local - 3
    flag = (frame >= 0) & (q >= 0) & (q < layout.grid_tokens)
    p0 = int(torch.nonzero(flag)[0]) if bool(flag.any()) else 0
    t = p0 + T_STRIDE * frame
    h = p0 + HW_STRIDE * torch.div(q, layout.w + 1, rounding_mode="floor")
    w = p0 + HW_STRIDE * torch.remainder(q, layout.w + 1)
    thw = torch.where(flag, torch.stack((t, h, w)), pos_1d)
    return torch.cat((pos_1d[None], thw, flag[None].long()))


def attention_allowed(ids: torch.Tensor) -> torch.Tensor:
    """(L, L) bool, True = query may attend key: causal, except that each frame (image-start
    through image-end) is bidirectional within itself."""
    L = ids.shape[0]
    frame, _, _ = _frame_segments(ids)
    idx = torch.arange(L, device=ids.device)
    causal = idx[None, :] <= idx[:, None]
    same_frame = (frame[:, None] == frame[None, :]) & (frame[:, None] >= 0)
    return causal | same_frame
