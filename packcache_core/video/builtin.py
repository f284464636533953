"""Built-in video tokenizers that need no download or weights: `builtin:patch` and `-small`.

What it is: a hand-designed tokenizer with Cosmos DV4x8x8's interface and token layout (one
code in [0, 64000) per 8x8 patch, FSQ levels (8, 8, 8, 5, 5, 5), 4 RGB frames per later latent
frame), so the whole server runs end to end without NVIDIA's files and its videos still look
like the input. What it is not: learned, or compatible with Cosmos codes (a trained Lumos-1
emits Cosmos codes, which this tokenizer turns into unrelated pictures).

`builtin:patch` gives each 8x8 patch six features, one per FSQ digit:
- digits 0 and 3 (8 x 5 = 40 levels): mean luma (BT.601 full range), uniform in [0, 1];
- digits 1 and 2 (8 levels each): mean Cb and Cr on the FSQ grid {-4..3}/4 times 0.25;
- digits 4 and 5 (5 levels each): least-squares horizontal and vertical luma slopes (luma
  change from patch centre to edge) on the FSQ grid {-2..2}/2 times 0.1.
The decoder draws each patch's luma as a plane, upsamples chroma bilinearly across patches, and
converts to RGB with elementwise ops. Luma gets two digits because 8 levels band visibly on
skies. Measured on the tests' synthetic 384x256 landscape: decode(encode(image)) has PSNR
26.2 dB; the same planes and chroma unquantised reach 27.6 dB, so texture finer than a patch,
not quantisation, is most of the loss.

Time: latent frame t >= 1 yields 4 frames blending linearly from frame t-1's reconstruction to
frame t's (weights 1/4 .. 4/4), so the last of the 4 is frame t itself.

`builtin:patch-small` (400 codes) is the codebook of the built-in demo model (`builtin:demo`):
a model that learns in minutes on a CPU cannot learn 64000 code embeddings. Each patch keeps
only its mean colour: luma on 16 levels and Cb, Cr on 5 levels each in [-0.3, 0.3]
(index = luma + 16 Cb + 80 Cr). The decoder upsamples the three planes bilinearly from the
patch centres, so decode(shift(codes)) = shift(decode(codes)) away from the borders: a pan of
whole patches stays a pan in pixels.

Key invariants: every code in [0, n_codes) decodes to finite pixels in [-1, 1]; the decoder is
causal with one frame of state, so streaming and whole-clip decoding are bitwise equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from packcache_core.video.base import check_clip, check_codes, check_image, to_uint8_frames
from packcache_core.video.fsq import COSMOS_FSQ, FSQ

PATCH = 8
FRAMES_PER_LATENT = 4
LUMA_FINE = COSMOS_FSQ.levels[3]  # luma index = digit0 * 5 + digit3
LUMA_LEVELS = COSMOS_FSQ.levels[0] * LUMA_FINE  # 40
CHROMA_SCALE = 0.25  # Cb, Cr of natural images rarely leave [-0.25, 0.19]
SLOPE_SCALE = 0.1  # luma change from patch centre to edge, at the outermost level
_FEATURES = FSQ(COSMOS_FSQ.levels[1:3] + COSMOS_FSQ.levels[4:])  # Cb, Cr, x slope, y slope
_FEATURE_SCALE = (CHROMA_SCALE, CHROMA_SCALE, SLOPE_SCALE, SLOPE_SCALE)

# BT.601 full-range RGB -> YCbCr (JPEG's), rows Y, Cb, Cr; the inverse is written out below.
_RGB_TO_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


def _ramp(device: torch.device) -> torch.Tensor:
    """Pixel offsets across a patch scaled to [-1, 1]: (PATCH,)."""
    half = (PATCH - 1) / 2
    return (torch.arange(PATCH, device=device, dtype=torch.float32) - half) / half


def _ycc_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """Elementwise (so frame-batching cannot change a bit): (...) x3 -> (3, ...) in [0, 1]."""
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return torch.stack([r, g, b]).clamp(0.0, 1.0)


def blend(prev: torch.Tensor, cur: torch.Tensor, n: int) -> torch.Tensor:
    """float (..., 3, H, W) x2 -> (..., n, 3, H, W): frames k/n of the way from prev to cur."""
    w = torch.arange(1, n + 1, device=cur.device, dtype=cur.dtype) / n  # (n,)
    w = w.view(n, 1, 1, 1)
    return prev.unsqueeze(-4) * (1 - w) + cur.unsqueeze(-4) * w


class _PatchCodec:
    """What the built-in tokenizers share: the layout, patch means in, blended frames out.

    Subclasses set `name` and `n_codes` and define `encode_image` and `reconstruct`.
    """

    name: str
    n_codes: int
    spatial_stride: int = PATCH
    temporal_stride: int = FRAMES_PER_LATENT

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def _ycc_patches(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> float (H/8, 8, W/8, 8, 3) YCbCr, indexed (h, i, w, j, c)."""
        check_image(image)
        H, W, _ = image.shape
        x = image.to(self.device, torch.float32) / 255.0  # (H, W, 3)
        ycc = x @ _RGB_TO_YCC.to(self.device).T  # (H, W, 3)
        return ycc.reshape(H // PATCH, PATCH, W // PATCH, PATCH, 3)

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_video(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (1 + 4(L-1), H, W, 3) -> int64 (L, H/8, W/8): latent frame t is frame 4t
        alone, the frame its decoder reproduces last of its 4 (the 3 before it are blends)."""
        check_clip(clip, FRAMES_PER_LATENT)
        return torch.stack([self.encode_image(f) for f in clip[::FRAMES_PER_LATENT]])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (L, h, w) codes -> uint8 (1 + 4(L-1), 8h, 8w, 3) on the CPU."""
        frames = self.reconstruct(codes)  # (L, 3, H, W)
        later = blend(frames[:-1], frames[1:], FRAMES_PER_LATENT).flatten(0, 1)  # (4(L-1), 3, H, W)
        video = torch.cat([frames[:1], later])  # (1 + 4(L-1), 3, H, W)
        return to_uint8_frames(video.transpose(0, 1))

    def stream_decoder(self) -> PatchStreamDecoder:
        return PatchStreamDecoder(self)

    def stream_state_bytes(self, height: int, width: int, latent_frames: int) -> int:
        """A stream keeps the previous latent frame's pixels: float32 (3, H, W)."""
        return 3 * height * width * 4 if latent_frames > 0 else 0


class PatchStreamDecoder:
    """Streams built-in tokenizer frames; keeps only the previous latent frame's pixels."""

    def __init__(self, tokenizer: _PatchCodec) -> None:
        self._tokenizer = tokenizer
        self._shape: tuple[int, ...] | None = None  # (h, w) of the first push
        self._prev: torch.Tensor | None = None  # (3, H, W) float in [-1, 1]

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (h, w) codes -> uint8 (n, H, W, 3); n = 1 first, then 4."""
        check_codes(codes, self._tokenizer.n_codes, ndim=2)
        if self._shape is not None and tuple(codes.shape) != self._shape:
            raise ValueError(
                f"latent frame shape changed: {tuple(codes.shape)} after {self._shape}"
            )
        self._shape = tuple(codes.shape)
        cur = self._tokenizer.reconstruct(codes[None])[0]  # (3, H, W)
        frames = cur[None] if self._prev is None else blend(self._prev, cur, FRAMES_PER_LATENT)
        self._prev = cur
        return to_uint8_frames(frames.transpose(0, 1))  # frames: (n, 3, H, W)


class PatchTokenizer(_PatchCodec):
    """`builtin:patch`: six hand-made features per 8x8 patch (see the module docstring)."""

    name: str = "builtin:patch"
    n_codes: int = COSMOS_FSQ.n_codes

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> int64 (H/8, W/8) codes on the CPU."""
        patches = self._ycc_patches(image)  # (h, i, w, j, c)
        mean = patches.mean(dim=(1, 3))  # (h, w, 3)
        ramp = _ramp(self.device)
        norm = PATCH * (ramp * ramp).sum()  # sum of ramp^2 over a patch
        slope_x = torch.einsum("hiwj,j->hw", patches[..., 0], ramp) / norm  # (h, w)
        slope_y = torch.einsum("hiwj,i->hw", patches[..., 0], ramp) / norm
        luma = torch.round(mean[..., 0] * (LUMA_LEVELS - 1)).clamp(0, LUMA_LEVELS - 1).long()
        feats = torch.stack([mean[..., 1], mean[..., 2], slope_x, slope_y], dim=-1)  # (h, w, 4)
        f = _FEATURES.quantize_digits(feats / torch.tensor(_FEATURE_SCALE, device=self.device))
        digits = torch.stack(
            [luma // LUMA_FINE, f[..., 0], f[..., 1], luma % LUMA_FINE, f[..., 2], f[..., 3]],
            dim=-1,
        )  # (h, w, 6), in COSMOS_FSQ digit order
        return COSMOS_FSQ.digits_to_indices(digits).cpu()

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (L, h, w) codes -> float (L, 3, 8h, 8w) in [-1, 1], one image per frame."""
        check_codes(codes, self.n_codes, ndim=3)
        L, h, w = codes.shape
        d = COSMOS_FSQ.indices_to_digits(codes.to(self.device))  # (L, h, w, 6)
        luma = (d[..., 0] * LUMA_FINE + d[..., 3]).float() / (LUMA_LEVELS - 1)  # (L, h, w)
        scale = torch.tensor(_FEATURE_SCALE, device=self.device)
        f = _FEATURES.digits_to_codes(d[..., [1, 2, 4, 5]]) * scale  # (L, h, w, 4)
        ramp = _ramp(self.device)
        y = (
            luma[:, :, None, :, None]
            + f[:, :, None, :, None, 2] * ramp  # x slope along j
            + f[:, :, None, :, None, 3] * ramp.view(PATCH, 1, 1)  # y slope along i
        )  # (L, h, i, w, j)
        y = y.reshape(L, h * PATCH, w * PATCH)
        chroma = f[..., :2].permute(0, 3, 1, 2)  # (L, 2, h, w)
        chroma = F.interpolate(chroma, scale_factor=PATCH, mode="bilinear", align_corners=False)
        rgb = _ycc_to_rgb(y, chroma[:, 0], chroma[:, 1])  # (3, L, H, W)
        return (rgb * 2.0 - 1.0).transpose(0, 1)  # (L, 3, H, W)


SMALL_FSQ = FSQ((16, 5, 5))  # luma, Cb, Cr digits of a `builtin:patch-small` code
SMALL_CHROMA_SCALE = 0.3
_SMALL_CHROMA = FSQ(SMALL_FSQ.levels[1:])


class SmallPatchTokenizer(_PatchCodec):
    """`builtin:patch-small`: 400 codes, mean colour per 8x8 patch (see the module docstring)."""

    name: str = "builtin:patch-small"
    n_codes: int = SMALL_FSQ.n_codes

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> int64 (H/8, W/8) codes on the CPU."""
        mean = self._ycc_patches(image).mean(dim=(1, 3))  # (h, w, 3)
        top = SMALL_FSQ.levels[0] - 1
        luma = torch.round(mean[..., 0] * top).clamp(0, top).long()  # (h, w)
        chroma = _SMALL_CHROMA.quantize_digits(mean[..., 1:] / SMALL_CHROMA_SCALE)  # (h, w, 2)
        digits = torch.cat([luma[..., None], chroma], dim=-1)  # (h, w, 3)
        return SMALL_FSQ.digits_to_indices(digits).cpu()

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (L, h, w) codes -> float (L, 3, 8h, 8w) in [-1, 1], one image per frame."""
        check_codes(codes, self.n_codes, ndim=3)
        d = SMALL_FSQ.indices_to_digits(codes.to(self.device))  # (L, h, w, 3)
        luma = d[..., 0].float() / (SMALL_FSQ.levels[0] - 1)  # (L, h, w)
        chroma = _SMALL_CHROMA.digits_to_codes(d[..., 1:]) * SMALL_CHROMA_SCALE  # (L, h, w, 2)
        planes = torch.cat([luma[:, None], chroma.permute(0, 3, 1, 2)], dim=1)  # (L, 3, h, w)
        planes = F.interpolate(planes, scale_factor=PATCH, mode="bilinear", align_corners=False)
        rgb = _ycc_to_rgb(planes[:, 0], planes[:, 1], planes[:, 2])  # (3, L, H, W)
        return (rgb * 2.0 - 1.0).transpose(0, 1)  # (L, 3, H, W)
