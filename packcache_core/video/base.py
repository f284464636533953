"""The video tokenizer interface shared by Cosmos DV4x8x8 and the built-in tokenizers.

What it is: two Protocols (`VideoTokenizer`, `StreamDecoder`), the pixel conversion every
tokenizer uses, and the input checks at the API boundary. What it is not: a tokenizer; nothing
here loads weights or touches the LLM vocabulary (the LLM id of code c is 65536 + c, applied by
the caller; tokenizers speak codes in [0, n_codes)).

Key invariants:
- A clip of L latent frames decodes to 1 + temporal_stride * (L - 1) RGB frames: the first
  latent frame (the conditioning image) yields one frame, every later one yields
  `temporal_stride` frames.
- Pushing latent frames one by one into a `StreamDecoder` yields those frames as soon as each
  latent frame arrives; how close the concatenation is to `decode` of the whole clip is stated
  by each implementation (equal for the built-ins and for Cosmos with the default window).
- Float video in [-1, 1] becomes uint8 exactly as the Lumos-1 reference does it: float32,
  clamp to [-1, 1], (x + 1) / 2 * 255, then truncate. NVIDIA's own `tensor2numpy` rounds
  (+0.5) instead, so our pixels can sit one level below NVIDIA's demo output.
"""

from __future__ import annotations

from typing import Protocol

import torch

IMAGE_MULTIPLE = 32  # Lumos-1 resolution buckets are multiples of 32 px on each side


class StreamDecoder(Protocol):
    """Incremental decoder of one clip; create one per clip with `stream_decoder()`."""

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Decodes the next latent frame.

        Args:
            codes: integer (h, w) codes in [0, n_codes), the same (h, w) for every push.
        Returns:
            uint8 (n, H, W, 3) RGB frames on the CPU: n = 1 for the first push, else
            `temporal_stride`.
        """
        ...


class VideoTokenizer(Protocol):
    """Image -> codes and codes -> RGB video, with Cosmos DV4x8x8's token layout."""

    name: str
    n_codes: int
    spatial_stride: int
    temporal_stride: int

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) RGB, H and W multiples of 32 -> int64 (H/8, W/8) codes, row-major."""
        ...

    def encode_video(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (1 + 4(L-1), H, W, 3) RGB -> int64 (L, H/8, W/8) codes on the CPU: latent
        frame 0 is the first frame alone (as `encode_image` makes it), each later one the
        next `temporal_stride` frames."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (L, h, w) codes -> uint8 (1 + 4(L-1), 8h, 8w, 3) RGB on the CPU, whole clip."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """A fresh incremental decoder for one clip."""
        ...

    def stream_state_bytes(self, height: int, width: int, latent_frames: int) -> int:
        """Memory one stream decoder holds between pushes after `latent_frames` pushes of
        `height` x `width` frames (its most, for clips of that length): what admission must
        count per request besides the KV cache."""
        ...


def n_frames(n_latent: int, temporal_stride: int) -> int:
    """RGB frames decoded from `n_latent` latent frames."""
    return 1 + temporal_stride * (n_latent - 1) if n_latent > 0 else 0


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) in about [-1, 1] -> uint8 (T, H, W, 3) on the CPU.

    The reference's conversion, step for step: float32, clamp, (x + 1) / 2, * 255, truncate.
    """
    x = video.to(torch.float32).clamp(-1.0, 1.0)
    x = (x + 1.0) / 2.0 * 255.0
    return x.to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu()  # (T, H, W, 3)


def check_image(image: torch.Tensor, multiple: int = IMAGE_MULTIPLE) -> None:
    """Raises ValueError unless `image` is uint8 (H, W, 3) with H and W multiples of `multiple`."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {tuple(image.shape)}"
        )
    h, w = image.shape[:2]
    if h == 0 or w == 0 or h % multiple or w % multiple:
        raise ValueError(f"image height and width must be multiples of {multiple}, got {h}x{w}")


def check_clip(clip: torch.Tensor, temporal_stride: int) -> None:
    """Raises ValueError unless `clip` is (1 + stride k, H, W, 3) uint8 frames of a valid size."""
    if clip.ndim != 4 or clip.shape[0] == 0 or (clip.shape[0] - 1) % temporal_stride:
        raise ValueError(
            f"expected (1 + {temporal_stride}k, H, W, 3) frames, got {tuple(clip.shape)}"
        )
    check_image(clip[0])


def check_codes(codes: torch.Tensor, n_codes: int, ndim: int) -> None:
    """Raises ValueError unless `codes` is an integer tensor of rank `ndim` in [0, n_codes)."""
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.ndim != ndim or codes.numel() == 0:
        raise ValueError(f"expected non-empty codes of rank {ndim}, got shape {tuple(codes.shape)}")
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= n_codes:
        raise ValueError(f"codes must lie in [0, {n_codes}), got values in [{lo}, {hi}]")
