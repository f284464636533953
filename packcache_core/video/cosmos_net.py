"""The Cosmos DV4x8x8 tokenizer network, re-implemented: the decoder that serves, and tests.

What it is: the encoder and decoder layer structure of NVIDIA's Cosmos-Tokenizer-DV4x8x8
(factorised causal 3-D convolutions, per-frame LayerNorm-style GroupNorm(1), a mid block with
spatial and causal temporal attention, 3-D Haar patching with the first frame repeated, FSQ
(8,8,8,5,5,5)). The module tree is NVIDIA's (`cosmos_tokenizer/modules/layers3d.py`,
`networks/discrete_video.py` of github.com/NVIDIA/Cosmos-Tokenizer): the same names down to
the parameters (`decoder.up.2.block.0.conv1.0.conv3d.weight`), including the resampling
layers NVIDIA builds but DV4x8x8 never runs (`decoder.up.1.upsample.*`, each upsample's time
convolution `conv1`), so `decoder.jit`'s state dict loads into `InvQuantizedDecoder` strictly
(`cosmos_weights.py`). `cosmos.py` decodes with this network and NVIDIA's weights, because its
layers take a `CausalState` (`causal_state.py`) and decode a stream frame by frame; NVIDIA's
graph can only re-decode the whole clip. `randomize` and `export_jit` write `encoder.jit` and
`decoder.jit` with random weights for tests. What it is not: trained.

Only the DV4x8x8 case is built: patch 4 (so all temporal compression comes from the Haar
patcher and the network runs at the latent frame rate), one learned 2x spatial resampling (after
the first level each of encoder and decoder runs), no attention outside the mid block
(attn_resolutions=[32] never matches at resolution 1024). `channels` may be scaled down for
speed; the layer structure, and so the temporal receptive field, does not depend on it.

Key invariant: the decoder is causal in latent frames. Latent frame t of the output depends on
latent frames <= t only: every temporal convolution pads by repeating the first frame on the
left, norms are per frame, temporal attention is causally masked, and the un-patcher maps
each latent frame to its own 4 RGB frames (then drops the 3 padding frames of frame 0).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from packcache_core.video.causal_state import CausalState
from packcache_core.video.fsq import FSQ


@dataclass(frozen=True)
class DVConfig:
    """Hyper-parameters of Cosmos DV4x8x8 (NVIDIA's `discrete_video` config, 4x8x8 variant)."""

    channels: int = 128
    channels_mult: tuple[int, ...] = (2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    embedding_dim: int = 6
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    patch_size: int = 4
    spatial_compression: int = 8
    temporal_compression: int = 4

    def __post_init__(self) -> None:
        if self.temporal_compression != self.patch_size:
            raise ValueError("only temporal_compression == patch_size (no learned time resampling)")
        if self.spatial_compression != 2 * self.patch_size:
            raise ValueError("only one learned 2x spatial resampling is built")
        if len(self.levels) != self.embedding_dim:
            raise ValueError("embedding_dim must equal the number of FSQ levels")

    @property
    def decoder_temporal_taps(self) -> int:
        """Kernel-3 temporal convolutions in the decoder; each looks 2 latent frames back."""
        per_block = 2
        mid = 2 * per_block
        up = len(self.channels_mult) * (self.num_res_blocks + 1) * per_block
        return 1 + mid + up + 1  # conv_in, mid blocks, up blocks, conv_out

    @property
    def decoder_conv_lookback(self) -> int:
        """Latent frames before t that the decoder's convolutions reach (attention reaches all)."""
        return 2 * self.decoder_temporal_taps


class CausalConv3d(nn.Module):
    """Conv3d that pads time on the left by repeating the first frame, space with zeros.

    With a `CausalState`, the frames before `x` come from the state (the previous push's last
    inputs; frame 0 repeated at the clip's start), so a stream convolves what a clip would.
    """

    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int, int], padding: int = 0, stride: int = 1
    ) -> None:
        super().__init__()
        self.time_pad = kernel[0] - 1
        self.spatial_pad = (padding, padding, padding, padding)
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride=(1, stride, stride))

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        if self.time_pad > 0 and state is not None:
            x = state.extend(self, x, self.time_pad)
        elif self.time_pad > 0:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([first, x], dim=2)
        return self.conv3d(F.pad(x, self.spatial_pad))


class CausalSequential(nn.Sequential):
    """nn.Sequential (same parameter names) that hands a `CausalState` to every layer."""

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, state)
        return x


def _spatial_conv(cin: int, cout: int) -> CausalConv3d:
    return CausalConv3d(cin, cout, (1, 3, 3), padding=1)


def _temporal_conv(cin: int, cout: int) -> CausalConv3d:
    return CausalConv3d(cin, cout, (3, 1, 1))


def _pointwise(cin: int, cout: int) -> CausalConv3d:
    return CausalConv3d(cin, cout, (1, 1, 1))


def _factorised_conv(cin: int, cout: int) -> CausalSequential:
    """NVIDIA's factorised 3-D convolution: (1,3,3) in space, then (3,1,1) in time."""
    return CausalSequential(_spatial_conv(cin, cout), _temporal_conv(cout, cout))


class FrameNorm(nn.Module):
    """GroupNorm with one group, applied to each frame on its own (keeps the net causal)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        y = self.norm(x.transpose(1, 2).reshape(B * T, C, H, W))  # (B*T, C, H, W)
        return y.reshape(B, T, C, H, W).transpose(1, 2)


class ResBlock(nn.Module):
    """Factorised residual block: (1,3,3) then (3,1,1) convolutions, twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = FrameNorm(cin)
        self.conv1 = _factorised_conv(cin, cout)
        self.norm2 = FrameNorm(cout)
        self.conv2 = _factorised_conv(cout, cout)
        self.nin_shortcut = _pointwise(cin, cout) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        return self.nin_shortcut(x) + h  # a pointwise shortcut needs no state


class _Attention(nn.Module):
    """Single-head attention with 1x1x1 projections; subclasses choose the token axis."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q = _pointwise(channels, channels)
        self.k = _pointwise(channels, channels)
        self.v = _pointwise(channels, channels)
        self.proj_out = _pointwise(channels, channels)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.norm(x)
        return self.q(h), self.k(h), self.v(h)


class SpatialAttention(_Attention):
    """Every position attends to all positions of its own frame (so it needs no state)."""

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        B, C, T, H, W = x.shape
        q, k, v = (t.permute(0, 2, 3, 4, 1).reshape(B * T, 1, H * W, C) for t in self.qkv(x))
        y = F.scaled_dot_product_attention(q, k, v)  # (B*T, 1, H*W, C)
        y = y.reshape(B, T, H, W, C).permute(0, 4, 1, 2, 3)
        return x + self.proj_out(y)


class TemporalAttention(_Attention):
    """Every position attends to the same position in its own and all earlier frames (with a
    `CausalState`: the earlier frames' keys and values it keeps, all or a window)."""

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        B, C, T, H, W = x.shape
        q, k, v = (t.permute(0, 3, 4, 2, 1).reshape(B * H * W, 1, T, C) for t in self.qkv(x))
        if state is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B*H*W, 1, T, C)
        else:
            k, v, mask = state.attend(self, k, v)  # (B*H*W, 1, P + T, C)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.reshape(B, H, W, T, C).permute(0, 4, 3, 1, 2)
        return x + self.proj_out(y)


class MidBlock(nn.Module):
    """Residual block, spatial then causal temporal attention, residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResBlock(channels, channels)
        self.attn_1 = CausalSequential(SpatialAttention(channels), TemporalAttention(channels))
        self.block_2 = ResBlock(channels, channels)

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x, state), state), state)


class DownLevel(nn.Module):
    """One encoder resolution: residual blocks, then `downsample` (NVIDIA's: none at the last
    level; `attn` is the empty list NVIDIA builds where no attention resolution matches)."""

    def __init__(self, blocks: list[ResBlock], downsample: HybridDownsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        if downsample is not None:
            self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return self.downsample(x) if hasattr(self, "downsample") else x


class UpLevel(nn.Module):
    """One decoder resolution: residual blocks, then `upsample` (none at the finest level)."""

    def __init__(self, blocks: list[ResBlock], upsample: HybridUpsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        if upsample is not None:
            self.upsample = upsample

    def forward(self, x: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        for block in self.block:
            x = block(x, state)
        return self.upsample(x) if hasattr(self, "upsample") else x


class HybridDownsample(nn.Module):
    """NVIDIA's hybrid downsampler, spatial part only: 2x in H and W by a strided (1,3,3)
    convolution plus a 2x2 average pool, then a pointwise convolution. `conv2` (time) exists
    for the names; DV4x8x8 leaves time to the patcher. `spatial=False`: the identity."""

    TIME_CONV = "conv2"  # built, never run

    def __init__(self, channels: int, spatial: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (1, 3, 3), stride=2)
        self.conv2 = _temporal_conv(channels, channels)  # unused: no time downsampling
        self.conv3 = _pointwise(channels, channels)
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial:
            return x
        x = F.pad(x, (0, 1, 0, 1))
        x = self.conv1(x) + F.avg_pool3d(x, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        return self.conv3(x)


class HybridUpsample(nn.Module):
    """NVIDIA's hybrid upsampler, spatial part only: nearest 2x repeat, a residual (1,3,3)
    convolution, then a pointwise one. `conv1` (time) exists for the names; DV4x8x8 never
    upsamples time. `spatial=False`: the identity (every layer is per frame: no state)."""

    TIME_CONV = "conv1"  # built, never run

    def __init__(self, channels: int, spatial: bool) -> None:
        super().__init__()
        self.conv1 = _temporal_conv(channels, channels)  # unused: no time upsampling
        self.conv2 = _spatial_conv(channels, channels)
        self.conv3 = _pointwise(channels, channels)
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial:
            return x
        x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        return self.conv3(self.conv2(x) + x)


_HAAR = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # unnormalised 1-D Haar; rows: low, high


def haar_patch(x: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C*8^levels, (T+p-1)/p, H/p, W/p), p = 2^levels.

    Frame 0 is repeated p times first, so T = 1 + p*k gives 1 + k latent frames. Each level
    splits every axis into (low, high) pairs; subband (i, j, k) (time, height, width; low
    first) fills channel block i*4 + j*2 + k. The scale makes the all-low band the block mean.
    """
    p = 2**levels
    x = torch.cat([x[:, :, :1].expand(-1, -1, p - 1, -1, -1), x], dim=2)
    haar = _HAAR.type_as(x)  # type_as, so a traced graph follows the input dtype
    for _ in range(levels):
        B, C, T, H, W = x.shape
        x = x.reshape(B, C, T // 2, 2, H // 2, 2, W // 2, 2)
        x = torch.einsum("ia,jb,kc,nCtahbwc->nijkCthw", haar, haar, haar, x) / 8.0
        x = x.reshape(B, 8 * C, T // 2, H // 2, W // 2)
    return x


def haar_unpatch(x: torch.Tensor, levels: int, clip_start: bool = True) -> torch.Tensor:
    """Inverse of `haar_patch`: (B, C*8^levels, t, h, w) -> (B, C, 1 + p(t-1), p*h, p*w).

    `clip_start=False` (a stream's later pushes): keep all p(t) frames, since only the clip's
    first latent frame carries the p - 1 repeated padding frames.
    """
    haar = _HAAR.type_as(x)  # type_as, so a traced graph follows the input dtype
    for _ in range(levels):
        B, C8, T, H, W = x.shape
        x = x.reshape(B, 2, 2, 2, C8 // 8, T, H, W)
        x = torch.einsum("ai,bj,ck,nijkCthw->nCtahbwc", haar, haar, haar, x)
        x = x.reshape(B, C8 // 8, 2 * T, 2 * H, 2 * W)
    return x[:, :, 2**levels - 1 :] if clip_start else x


def _n_spatial_resamplings(cfg: DVConfig) -> int:
    """Learned 2x spatial resamplings (NVIDIA's num_spatial_downs / num_spatial_ups)."""
    return int(math.log2(cfg.spatial_compression)) - int(math.log2(cfg.patch_size))


class Encoder(nn.Module):
    """Pixels in [-1, 1] (B, 3, 1+4k, H, W) -> latent (B, z_channels, 1+k, H/8, W/8)."""

    def __init__(self, cfg: DVConfig) -> None:
        super().__init__()
        self.patch_levels = int(math.log2(cfg.patch_size))
        c0 = cfg.channels
        self.conv_in = _factorised_conv(3 * cfg.patch_size**3, c0)
        mult_in = (1, *cfg.channels_mult)
        n, downs = len(cfg.channels_mult), _n_spatial_resamplings(cfg)
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.channels_mult):
            blocks = [
                ResBlock(c0 * (mult_in[i] if j == 0 else mult), c0 * mult)
                for j in range(cfg.num_res_blocks)
            ]
            # NVIDIA builds a downsampler after every level but the last; in DV4x8x8 only the
            # first halves H and W (time is left to the patcher), the others pass through.
            down = HybridDownsample(c0 * mult, spatial=i < downs) if i < n - 1 else None
            self.down.append(DownLevel(blocks, down))
        top = c0 * cfg.channels_mult[-1]
        self.mid = MidBlock(top)
        self.norm_out = FrameNorm(top)
        self.conv_out = _factorised_conv(top, cfg.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(haar_patch(x, self.patch_levels))
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, t, h, w) -> pixels (B, 3, 1 + 4(t-1), 8h, 8w) in about [-1, 1].

    With a `CausalState`, `z` holds the stream's next t latent frames and the result their
    pixels: 1 + 4(t-1) for the clip's first push, 4t after it; the state advances by t.
    """

    def __init__(self, cfg: DVConfig) -> None:
        super().__init__()
        self.patch_levels = int(math.log2(cfg.patch_size))
        top = cfg.channels * cfg.channels_mult[-1]
        self.conv_in = _factorised_conv(cfg.z_channels, top)
        self.mid = MidBlock(top)
        n, ups = len(cfg.channels_mult), _n_spatial_resamplings(cfg)
        levels: list[UpLevel] = []
        c_in = top
        for i in reversed(range(n)):  # coarse to fine; stored fine-first as NVIDIA does
            c_out = cfg.channels * cfg.channels_mult[i]
            blocks = [
                ResBlock(c_in if j == 0 else c_out, c_out) for j in range(cfg.num_res_blocks + 1)
            ]
            # The mirror of the encoder: an upsampler after every level but the finest; only
            # the coarsest doubles H and W.
            up = HybridUpsample(c_out, spatial=n - 1 - i < ups) if i > 0 else None
            levels.insert(0, UpLevel(blocks, up))
            c_in = c_out
        self.up = nn.ModuleList(levels)
        out_ch = 3 * cfg.patch_size**3
        self.norm_out = FrameNorm(c_in)
        self.conv_out = _factorised_conv(c_in, out_ch)

    def forward(self, z: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        h = self.mid(self.conv_in(z, state), state)
        for i in reversed(range(len(self.up))):
            h = self.up[i](h, state)
        h = self.conv_out(F.silu(self.norm_out(h)), state)  # (B, 3*64, t, H/4, W/4)
        clip_start = state is None or state.frames == 0
        if state is not None:
            state.frames += z.shape[2]  # the one place a stream advances
        return haar_unpatch(h, self.patch_levels, clip_start)


class Quantizer(nn.Module):
    """Cosmos-style FSQ: tanh-bound each channel to its level range, round, index."""

    half_l: torch.Tensor
    offset: torch.Tensor
    shift: torch.Tensor
    half_w: torch.Tensor

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.fsq = FSQ(levels)
        lv = torch.tensor(levels, dtype=torch.float64)
        half_l = (lv - 1) * (1 + 1e-3) / 2  # eps keeps the rounded ends inside the grid
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)  # even L: grid centred on -0.5
        self.register_buffer("half_l", half_l.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", (offset / half_l).atanh().float(), persistent=False)
        self.register_buffer("half_w", (lv // 2).float(), persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zc = z.float().movedim(1, -1)  # (B, t, h, w, D)
        q = torch.round(torch.tanh(zc + self.shift) * self.half_l - self.offset)
        digits = (q + self.half_w).to(torch.int64)  # (B, t, h, w, D), digit i in [0, L_i)
        indices = self.fsq.digits_to_indices(digits).to(torch.int32)  # (B, t, h, w)
        codes = (q / self.half_w).movedim(-1, 1).type_as(z)  # (B, D, t, h, w)
        return indices, codes, torch.zeros_like(codes[:, :1, :1, :1, :1])


class InvQuantizedDecoder(nn.Module):
    """Indices (B, t, h, w) -> FSQ codes -> post_quant_conv -> decoder -> pixels.

    NVIDIA's `decoder_jit()`: Sequential(inv_quant, post_quant_conv, decoder); `inv_quant`
    holds only buffers (the FSQ levels), so it has no module here.
    """

    def __init__(self, cfg: DVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fsq = FSQ(cfg.levels)
        self.post_quant_conv = _pointwise(cfg.embedding_dim, cfg.z_channels)
        self.decoder = Decoder(cfg)

    def forward(self, indices: torch.Tensor, state: CausalState | None = None) -> torch.Tensor:
        codes = self.fsq.indices_to_codes(indices).movedim(-1, 1)  # (B, D, t, h, w)
        # type_as a weight, not a fixed dtype: a traced graph then follows `.to(dtype)`.
        codes = codes.type_as(self.post_quant_conv.conv3d.weight)
        return self.decoder(self.post_quant_conv(codes), state)


class QuantizedEncoder(nn.Module):
    """Pixels (B, 3, T, H, W) -> (int32 indices (B, t, h, w), codes, zero loss), as NVIDIA's."""

    def __init__(self, cfg: DVConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.quant_conv = _pointwise(cfg.z_channels, cfg.embedding_dim)
        self.quantizer = Quantizer(cfg.levels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.quantizer(self.quant_conv(self.encoder(x)))


def idle_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters DV4x8x8 builds but never computes with: every resampler's time
    convolution, and all of a resampler that passes its input through."""
    idle = set()
    for name, module in model.named_modules():
        if isinstance(module, HybridUpsample | HybridDownsample):
            prefix = f"{name}.{module.TIME_CONV}" if module.spatial else name
            idle |= {f"{prefix}.{p}" for p, _ in model.get_submodule(prefix).named_parameters()}
    return idle


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def randomize(model: ModuleT, seed: int, output_gain: float = 1.0) -> ModuleT:
    """Deterministic random weights, drawn in sorted name order from one seeded generator.

    Convolutions get N(0, 1/fan_in) weights and small biases; norms get 1 + small noise. The
    decoder's last convolution is scaled by `output_gain` so random pixels do not all clip:
    the un-patcher sums 64 sub-band coefficients into each pixel.
    """
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            x = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                x = 1.0 + 0.1 * x
            elif p.ndim > 1:
                x = x / math.sqrt(p[0].numel())  # fan_in = cin * kt * kh * kw
            else:
                x = 0.02 * x
            if name.startswith("decoder.conv_out.1."):
                x = x * output_gain
            p.copy_(x)
    return model


def export_jit(
    folder: Path, cfg: DVConfig, seed: int = 0, output_gain: float = 0.05
) -> tuple[QuantizedEncoder, InvQuantizedDecoder]:
    """Writes `encoder.jit` and `decoder.jit` (float32, traced) for `cfg` into `folder`.

    Traced, not scripted: the networks have no data-dependent control flow and read every
    shape from their input, so one trace serves any T, H and W (tests compare it with eager).
    Returns the eager modules that were traced.
    """
    encoder = randomize(QuantizedEncoder(cfg), seed).eval()
    decoder = randomize(InvQuantizedDecoder(cfg), seed + 1, output_gain).eval()
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The FSQ constants (levels, basis) are meant to be baked into the graph, and
        # TorchScript, deprecated in torch 2.13, is the format NVIDIA ships.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        pixels = torch.zeros(1, 3, 5, 32, 32)  # (B, 3, 1 + 4, H, W)
        indices = torch.zeros(1, 2, 4, 4, dtype=torch.int32)  # (B, t, h, w)
        # check_trace re-runs the graph (seconds); tests compare traced and eager instead.
        for module, example, name in ((encoder, pixels, "encoder"), (decoder, indices, "decoder")):
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(folder / f"{name}.jit"))
    return encoder, decoder
