"""Cosmos-Tokenizer-DV4x8x8 through NVIDIA's TorchScript files, with incremental decoding.

What it is: a `VideoTokenizer` over a local folder holding NVIDIA's `encoder.jit` and
`decoder.jit`, loaded with `torch.jit.load` and probed once at load time, so that a wrong or
broken file fails there with a message naming it. What it is not: a downloader, or a
re-implementation (the network here is NVIDIA's graph; `cosmos_net.py` re-implements the
architecture only to test this module).

File interfaces (NVIDIA's `networks/discrete_video.py`): `encoder.jit` is the sequence encoder
-> quant_conv -> FSQ and returns a tuple (indices int32 (B, t, h, w), codes (B, 6, t, h, w),
loss); we keep the indices. `decoder.jit` is inverse FSQ -> post_quant_conv -> decoder and maps
integer indices (B, t, h, w) to pixels (B, 3, 1 + 4(t-1), 8h, 8w) in about [-1, 1]. Inputs
follow the Lumos-1 reference: uint8 / 255 * 2 - 1 in float64, then cast to `dtype`, layout
(1, 3, T, H, W); indices go in as int32. `dtype` defaults to bf16 like the reference, except on
the CPU: the encoder's avg_pool3d has no CPU bf16 kernel (torch 2.13), so there it is float32.

Incremental decoding. The DV4x8x8 decoder is causal in latent frames (see `cosmos_net.py`), so
output latent frame t is a function of latent frames 0..t alone: the last 4 RGB frames of
decoding frames 0..t are whole-clip frames 4t-3..4t. `CosmosStreamDecoder` therefore
re-decodes the latent frames pushed so far and keeps the newest frames.
- window=None (default): re-decode the whole prefix. Exact, and no shorter window is: the
  decoder's 24 kernel-3 temporal convolutions reach 48 latent frames back and the mid block's
  causal temporal attention reaches every earlier frame. Measured on the full-width
  architecture (`cosmos_net.py`, random weights, 7 random latent frames at 64x64, float32,
  CPU): streamed and whole-clip frames differ by at most 1 uint8 level, PSNR 94.6 dB (the
  floating-point noise of decoder calls of different lengths). Cost: frame t re-decodes t+1
  latent frames, 1.2 TFLOP each at 672x384 (FlopCounterMode), so L frames cost L(L+1)/2
  decodes instead of L; a 1B-parameter LLM spends about 50 steps x 2 branches x 4084 tokens x
  2 GFLOP = 0.8 PFLOP producing each latent frame.
- window=w (w >= 2): re-decode only the last w latent frames. Approximate: the window's first
  frame is treated as the clip's first frame (replicated as temporal padding, un-patched to a
  single frame) and attention no longer sees older frames. Same measurement, PSNR of the
  streamed clip vs the whole clip: w=2 18.5 dB, 3 19.8, 4 21.6, 5 24.1, 6 27.8. Random
  weights and random codes are a harsh case; measure on real weights before using a window.

Key invariant: with window=None the concatenated `push` outputs equal `decode(codes)` up to
floating-point differences between decoder calls of different lengths.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from packcache_core.video.base import check_codes, check_image, n_frames, to_uint8_frames
from packcache_core.video.fsq import COSMOS_FSQ

ENCODER_FILE = "encoder.jit"
DECODER_FILE = "decoder.jit"
_PROBE_PX = 32  # probe image side: small, and a multiple of every stride


def _check_window(window: int | None) -> None:
    # A 1-frame window would decode each latent frame as a clip start: 1 RGB frame, not 4.
    if window is not None and window < 2:
        raise ValueError(f"window must be None or >= 2, got {window}")


class CosmosStreamDecoder:
    """Feeds a causal decoder latent frame by latent frame (see the module docstring).

    Args:
        decode: integer (k, h, w) codes -> float (3, 1 + stride*(k-1), H, W) video.
        n_codes: codebook size, for input checks.
        temporal_stride: RGB frames per latent frame after the first.
        window: latent frames re-decoded per push; None for all pushed so far (exact).
    """

    def __init__(
        self,
        decode: Callable[[torch.Tensor], torch.Tensor],
        n_codes: int,
        temporal_stride: int,
        window: int | None = None,
    ) -> None:
        _check_window(window)
        self._decode = decode
        self._n_codes = n_codes
        self._stride = temporal_stride
        self._window = window
        self._codes: list[torch.Tensor] = []  # each (h, w), in push order

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (h, w) codes of the next latent frame -> uint8 (n, H, W, 3), n = 1 or 4."""
        check_codes(codes, self._n_codes, ndim=2)
        if self._codes and codes.shape != self._codes[0].shape:
            raise ValueError(
                f"latent frame shape changed: {tuple(codes.shape)} after "
                f"{tuple(self._codes[0].shape)}"
            )
        self._codes.append(codes.detach().clone())  # the caller may reuse its buffer
        start = 0 if self._window is None else max(0, len(self._codes) - self._window)
        video = self._decode(torch.stack(self._codes[start:]))  # (3, T_window, H, W)
        n_new = 1 if len(self._codes) == 1 else self._stride
        return to_uint8_frames(video[:, -n_new:])


class CosmosTokenizer:
    """`VideoTokenizer` over NVIDIA's Cosmos DV4x8x8 TorchScript encoder and decoder.

    Build it with `load_cosmos`, which also probes both graphs.
    """

    n_codes: int = COSMOS_FSQ.n_codes
    spatial_stride: int = 8
    temporal_stride: int = 4

    def __init__(
        self,
        encoder: torch.jit.ScriptModule,
        decoder: torch.jit.ScriptModule,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        window: int | None = None,
    ) -> None:
        _check_window(window)
        self.name = name
        self.encoder = encoder
        self.decoder = decoder
        self.device = device
        self.dtype = dtype
        self.window = window

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> int64 (H/8, W/8) codes on the CPU."""
        check_image(image)
        indices = self._encode(image)  # (1, 1, h, w)
        return indices[0, 0].to(torch.int64).cpu()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (L, h, w) codes -> uint8 (1 + 4(L-1), 8h, 8w, 3) on the CPU, in one call."""
        check_codes(codes, self.n_codes, ndim=3)
        return to_uint8_frames(self._decode(codes))

    def stream_decoder(self) -> CosmosStreamDecoder:
        return CosmosStreamDecoder(self._decode, self.n_codes, self.temporal_stride, self.window)

    @torch.inference_mode()
    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) -> whatever the encoder returns first (indices (1, 1, h, w))."""
        x = image.to(self.device, torch.float64) / 255.0 * 2.0 - 1.0  # (H, W, 3), as reference
        x = x.permute(2, 0, 1)[None, :, None].to(self.dtype)  # (1, 3, 1, H, W)
        out = self.encoder(x)
        return out[0] if isinstance(out, tuple | list) else out

    @torch.inference_mode()
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (k, h, w) -> float (3, 1 + 4(k-1), 8h, 8w) on the device."""
        indices = codes.to(self.device, torch.int32)[None]  # (1, k, h, w)
        return self.decoder(indices)[0]


def _last_line(err: BaseException) -> str:
    """The error itself, without the TorchScript traceback that precedes it."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _describe(x: object) -> str:
    return f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _probe(tokenizer: CosmosTokenizer, folder: Path) -> None:
    """Runs both graphs once on a tiny input; ValueError naming the file that misbehaves."""
    enc, dec = folder / ENCODER_FILE, folder / DECODER_FILE
    h = _PROBE_PX // tokenizer.spatial_stride
    hint = ""
    if tokenizer.device.type == "cpu" and tokenizer.dtype != torch.float32:
        hint = " (CPU kernels such as avg_pool3d lack bf16/fp16; try dtype=torch.float32)"
    try:
        indices = tokenizer._encode(torch.zeros(_PROBE_PX, _PROBE_PX, 3, dtype=torch.uint8))
    except RuntimeError as err:
        raise ValueError(
            f"{enc}: fails on a {tokenizer.dtype} (1, 3, 1, 32, 32) input: {_last_line(err)}{hint}"
        ) from err
    if (
        not isinstance(indices, torch.Tensor)
        or indices.dtype.is_floating_point
        or tuple(indices.shape) != (1, 1, h, h)
    ):
        raise ValueError(
            f"{enc}: not a DV4x8x8 encoder; a 32x32 image should give integer indices"
            f" (1, 1, {h}, {h}), got {_describe(indices)}"
        )
    try:
        video = tokenizer._decode(torch.zeros(2, h, h, dtype=torch.int64))
    except RuntimeError as err:
        raise ValueError(
            f"{dec}: fails on int32 (1, 2, {h}, {h}) indices: {_last_line(err)}{hint}"
        ) from err
    want = (3, n_frames(2, tokenizer.temporal_stride), _PROBE_PX, _PROBE_PX)
    if not isinstance(video, torch.Tensor) or tuple(video.shape) != want:
        raise ValueError(
            f"{dec}: not a DV4x8x8 decoder; 2 latent frames of {h}x{h} should give pixels"
            f" (1, {', '.join(map(str, want))}), got {_describe(video)}"
        )


def _load_jit(path: Path, device: torch.device, dtype: torch.dtype) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; a Cosmos DV4x8x8 folder holds {ENCODER_FILE} and {DECODER_FILE}"
        )
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in torch 2.13, but it is the format NVIDIA ships.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a TorchScript archive ({_last_line(err)})") from err
    return module.eval().to(dtype)


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 as the reference on accelerators; float32 on the CPU, whose avg_pool3d lacks bf16."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def load_cosmos(
    folder: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    window: int | None = None,
) -> CosmosTokenizer:
    """Loads and probes NVIDIA's Cosmos-Tokenizer-DV4x8x8 from a local folder.

    Args:
        folder: holds `encoder.jit` and `decoder.jit` (other files are ignored).
        device: where both graphs run.
        dtype: floating dtype of weights and inputs; None for `default_dtype(device)` (bf16,
            as the reference, except on the CPU). NVIDIA's graphs may cast to bf16 internally,
            in which case another dtype fails the probe.
        window: see `CosmosStreamDecoder`; None (exact) unless measured otherwise.
    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        ValueError: a file is not TorchScript, or does not behave like DV4x8x8.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such Cosmos tokenizer folder")
    device = torch.device(device)
    dtype = default_dtype(device) if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    tokenizer = CosmosTokenizer(
        _load_jit(folder / ENCODER_FILE, device, dtype),
        _load_jit(folder / DECODER_FILE, device, dtype),
        name=f"cosmos:{folder.name}",
        device=device,
        dtype=dtype,
        window=window,
    )
    _probe(tokenizer, folder)
    return tokenizer
