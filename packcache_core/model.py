"""The Lumos-1 transformer: Chameleon's decoder with qk-norm and MM-RoPE, as Lumos-1 runs it.

What it is: embeddings, N decoder layers (pre-norm or swin-norm), final RMSNorm and an untied
output head whose video-code rows can be used alone. Attention is SDPA over an externally owned
KV buffer (see `cache.py`), so shapes are fixed by the caller. What it is not: a sampler, a
position builder or a cache manager.

Precision mirrors the reference under bf16 autocast: RMSNorm statistics in float32; qk-norm and
RoPE in float32 with cos/sin rounded to the activation dtype; q, k, v cast to the activation
dtype for attention. In float32 every step is plain float32.

Invariant: `forward` never changes shapes it was given; with a cache it writes K/V for the fed
tokens at slots [start, start + S) and attends over slots [0, start + S) under `mask`, or from
`first` on (see `Segment`): without a mask, each row over its own slots [first[row], start + S).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from packcache_core.config import CODE_OFFSET, LumosConfig
from packcache_core.rope import apply_rotary

# (k_buffer, v_buffer), each (B, n_kv, C, D), owned by a KV cache.
LayerKV = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Segment:
    """Rows of a batch that share one cache (one request's guidance branches)."""

    rows: slice
    # bool (True = may attend) or additive float, (b, 1, S or 1, K); None: no mask (`first`)
    mask: torch.Tensor | None
    kv: list[LayerKV] | None  # per-layer buffers, written at [start, start + S)
    start: int = 0
    # The first slot each row attends (None: slot 0). Without a mask each row attends slots
    # [first, start + S) in a call of its own, with no mask, which every SDPA kernel (flash
    # included) accepts; with one, all rows attend from the smallest, which the mask's K counts.
    first: tuple[int, ...] | None = None


QK_NORM_EPS = 1e-5  # hard-coded in Chameleon's qk LayerNorm, independent of rms_norm_eps


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)  # cast back before the weight, as the reference


class QKNorm(nn.Module):
    """LayerNorm over head_dim (no internal affine) then a per-head affine of shape [mp, D]."""

    def __init__(self, n_heads: int, head_dim: int, mp: int) -> None:
        super().__init__()
        self.repeats = n_heads // mp
        self.weight = nn.Parameter(torch.ones(mp, head_dim))
        self.bias = nn.Parameter(torch.zeros(mp, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, H, D) -> float32 (B, S, H, D)."""
        h = F.layer_norm(x.float(), (x.shape[-1],), eps=QK_NORM_EPS)
        w = self.weight.float().repeat_interleave(self.repeats, dim=0)  # (H, D)
        b = self.bias.float().repeat_interleave(self.repeats, dim=0)
        return h * w + b


class Attention(nn.Module):
    def __init__(self, cfg: LumosConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, kv, bias=False)
        self.v_proj = nn.Linear(h, kv, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)
        self.q_norm = QKNorm(cfg.num_attention_heads, cfg.head_dim, cfg.model_parallel_size)
        self.k_norm = QKNorm(cfg.num_key_value_heads, cfg.head_dim, cfg.model_parallel_size)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segments: list[Segment],
        layer: int,
    ) -> torch.Tensor:
        B, S, _ = x.shape
        dt = x.dtype
        q = self.q_norm(self.q_proj(x).view(B, S, self.n_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(B, S, self.n_kv, self.head_dim))
        v = self.v_proj(x).view(B, S, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, S, D)
        # RoPE in float32 with cos/sin already rounded to the activation dtype.
        q = apply_rotary(q.transpose(1, 2), cos, sin).to(dt)  # (B, H, S, D)
        k = apply_rotary(k.transpose(1, 2), cos, sin).to(dt)  # (B, Hkv, S, D)
        # Each segment (one request's rows) attends over its own cache: the only per-request
        # work in a batched forward.
        ys = [self._attend(q[g.rows], k[g.rows], v[g.rows], g, layer) for g in segments]
        y = ys[0] if len(ys) == 1 else torch.cat(ys)  # (B, H, S, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, -1))

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segment, layer: int
    ) -> torch.Tensor:
        if seg.kv is not None:
            S, start = k.shape[2], seg.start
            k_buf, v_buf = seg.kv[layer]
            k_buf[:, :, start : start + S] = k
            v_buf[:, :, start : start + S] = v
            k, v = k_buf[:, :, : start + S], v_buf[:, :, : start + S]  # (b, Hkv, start+S, D)
        if seg.first is None:
            return self._sdpa(q, k, v, seg.mask)
        if seg.mask is not None:
            lo = min(seg.first)
            return self._sdpa(q, k[:, :, lo:], v[:, :, lo:], seg.mask)
        # Rows attend runs of different lengths: a call each, over its own suffix.
        rows = [
            self._sdpa(q[r : r + 1], k[r : r + 1, :, f:], v[r : r + 1, :, f:], None)
            for r, f in enumerate(seg.first)
        ]
        return torch.cat(rows)

    def _sdpa(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        gqa = self.n_heads != self.n_kv
        if gqa and expand_kv_heads(q.device, q.dtype, mask is not None):
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            gqa = False
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim), enable_gqa=gqa
        )


def expand_kv_heads(device: torch.device, dtype: torch.dtype, masked: bool) -> bool:
    """Whether a call with shared (grouped) K/V heads must expand them to every query head.

    On CUDA only flash takes shared heads, and flash takes neither a mask nor float32; the
    memory-efficient kernel, which takes both, refuses shared heads. A masked call (the prefix,
    a re-cache) or any float32 call left with shared heads falls to the math kernel, which holds
    every score in float32 (tens of GB at 13 frames of 672x384): expanded, as `enable_gqa`
    would, it runs fused. Elsewhere (the CPU) shared heads cost nothing extra.
    """
    return device.type == "cuda" and (masked or dtype not in (torch.float16, torch.bfloat16))


class MLP(nn.Module):
    def __init__(self, cfg: LumosConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LumosConfig) -> None:
        super().__init__()
        self.swin_norm = cfg.swin_norm
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segments: list[Segment],
        layer: int,
    ) -> torch.Tensor:
        if self.swin_norm:  # norms after the sublayers
            h = x + self.input_layernorm(self.self_attn(x, cos, sin, segments, layer))
            return h + self.post_attention_layernorm(self.mlp(h))
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, segments, layer)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    """`model.*` in the checkpoint: embeddings, layers, final norm."""

    def __init__(self, cfg: LumosConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LumosTransformer(nn.Module):
    """Lumos-1 with HF key names (`model.layers.{i}...`, `lm_head.weight`)."""

    def __init__(self, cfg: LumosConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def forward(
        self,
        tokens: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        kv: list[LayerKV] | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """Final normed hidden states (B, S, hidden), every row attending from slot 0 under
        `mask` (rows attending from their own first slot: `forward_segments`, `Segment.first`).

        Args:
            tokens: (B, S) int64 ids.
            cos, sin: (B, S, head_dim) rotary tables for the fed tokens (activation dtype).
            mask: bool (True = may attend) or additive float; (B, 1, S or 1, K) with K = S
                without a cache and K = start + S with one.
            kv: per-layer (k, v) buffers to write the fed tokens into at [start, start + S).
            start: first cache slot of the fed tokens.
        """
        return self.forward_segments(tokens, cos, sin, [Segment(slice(None), mask, kv, start)])

    def forward_segments(
        self, tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segments: list[Segment]
    ) -> torch.Tensor:
        """Like `forward`, for a batch whose rows belong to several requests.

        Every projection, MLP and norm runs once over all rows; attention runs per segment
        over that segment's own cache and mask. Segments cover the rows in order.
        """
        x = F.embedding(tokens, self.model.embed_tokens.weight)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, segments, i)
        return self.model.norm(x)

    def compile_steps(self) -> None:
        """Compile the transformer pass for fixed shapes (`torch.compile`; on CUDA with
        `reduce-overhead`, which captures CUDA graphs). A request's denoising steps repeat one
        shape once its cache is full, so each shape compiles once; the fill phase's few new
        shapes compile as they come. Numerics may move in the low bits (fused kernels)."""
        mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        compiled = torch.compile(self.forward_segments, mode=mode, dynamic=False)
        self.forward_segments = compiled  # type: ignore[method-assign]

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits over the video codes only: (..., hidden) -> (..., n_codes)."""
        w = self.lm_head.weight[CODE_OFFSET : CODE_OFFSET + self.config.n_codes]  # a view
        return F.linear(hidden, w).float()

    def full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits over the whole vocabulary (tests and diagnostics only)."""
        logits = self.lm_head(hidden).float()
        if self.config.mask_image_logits:  # Chameleon's VQ-GAN image ids, never used by Lumos-1
            logits[..., 4:8196] = torch.finfo(torch.float32).min
        return logits
