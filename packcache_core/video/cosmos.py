"""Cosmos-Tokenizer-DV4x8x8 from NVIDIA's TorchScript files, with a streaming decoder.

What it is: a `VideoTokenizer` over a local folder holding NVIDIA's `encoder.jit` and
`decoder.jit`. The encoder runs as NVIDIA's graph (`torch.jit.load`; it encodes one image per
request). The decoder's weights are loaded by name into this project's network
(`cosmos_net.InvQuantizedDecoder`, strictly: `cosmos_weights.py`), which is checked against
NVIDIA's graph on a probe at load time and then decodes, whole clips and streams alike. Both
files are probed once, so a wrong or broken file fails at load with a message naming it. What
it is not: a downloader.

File interfaces (NVIDIA's `networks/discrete_video.py`): `encoder.jit` is the sequence encoder
-> quant_conv -> FSQ and returns a tuple (indices int32 (B, t, h, w), codes (B, 6, t, h, w),
loss); we keep the indices. `decoder.jit` is inverse FSQ -> post_quant_conv -> decoder and maps
integer indices (B, t, h, w) to pixels (B, 3, 1 + 4(t-1), 8h, 8w) in about [-1, 1]. Inputs
follow the Lumos-1 reference: uint8 / 255 * 2 - 1 in float64, then cast to `dtype`, layout
(1, 3, T, H, W); indices go in as int32. `dtype` defaults to bf16 like the reference, except on
the CPU: the encoder's avg_pool3d has no CPU bf16 kernel (torch 2.13), so there it is float32.

Streaming. The decoder is causal in latent frames (`cosmos_net.py`), so `CosmosStreamDecoder`
decodes each pushed latent frame once, with a `CausalState`: every temporal convolution keeps
its last 2 input frames and the middle block's causal temporal attention keeps the keys and
values of the frames before (`causal_state.py`). A push costs one latent frame of decoder
work at frame 10,000 as at frame 1.
- window=None: attention keeps every frame: exact (equal to the whole-clip decode up to float
  rounding; measured on the full-width network with random weights, 13 latent frames at 64x64,
  float32, CPU: max |diff| 2.7e-6 in [-1, 1], at most 1 uint8 level where a value sits on a
  truncation boundary, PSNR 93 dB), but its keys and values grow by one frame per push (at
  672x384 in bf16: 7.9 MiB per latent frame).
- window=w: a frame attends to itself and the w - 1 frames before it; the state then has a
  fixed size (at 672x384 in bf16: 382 MiB of convolution inputs plus w - 1 frames of keys and
  values, 626 MiB at the default window; `stream_state_bytes`). Exact while the clip is at
  most w latent frames; past that, the attention sees fewer frames than the whole-clip
  decode. PSNR of the streamed clip against the whole clip on the
  same network, 13 frames: w=2 26.0 dB, 4 30.6 dB, 8 40.9 dB (longer clips:
  benchmarks/cosmos_stream.py). Random weights and random codes are a harsh case; measure on
  real weights before shortening it. `DEFAULT_WINDOW` (32 latent frames, 125 RGB frames, exact
  for every clip up to that length) bounds open-ended streams.

Key invariant: with window=None (or a window at least the clip's length) the concatenated
`push` outputs equal `decode(codes)` up to floating-point rounding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from packcache_core.video.base import (
    check_clip,
    check_codes,
    check_image,
    n_frames,
    to_uint8_frames,
)
from packcache_core.video.causal_state import CausalState
from packcache_core.video.cosmos_net import InvQuantizedDecoder
from packcache_core.video.cosmos_weights import CosmosWeightsError, load_decoder
from packcache_core.video.fsq import COSMOS_FSQ

ENCODER_FILE = "encoder.jit"
DECODER_FILE = "decoder.jit"
DEFAULT_WINDOW = 32  # latent frames (125 RGB frames) of temporal attention in a stream
_PROBE_PX = 32  # probe image side: small, and a multiple of every stride
AGREEMENT_FP32 = 1e-4  # mean |network - NVIDIA's graph| allowed on the probe, float32
AGREEMENT_LOW = 2e-2  # the same in bf16 / fp16 (~2.5 uint8 levels)


class CosmosStreamDecoder:
    """Decodes one clip latent frame by latent frame with per-layer causal state.

    Args:
        net: the decoder network (weights on `device`).
        device: where it runs.
        window: latent frames a frame's temporal attention sees (None: all; exact).
    """

    def __init__(
        self, net: InvQuantizedDecoder, device: torch.device, window: int | None = None
    ) -> None:
        self._net = net
        self._device = device
        self._state = CausalState(window)
        self._shape: tuple[int, ...] | None = None

    @torch.inference_mode()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (h, w) codes of the next latent frame -> uint8 (n, H, W, 3), n = 1 or 4."""
        check_codes(codes, self._net.fsq.n_codes, ndim=2)
        if self._shape is not None and tuple(codes.shape) != self._shape:
            raise ValueError(
                f"latent frame shape changed: {tuple(codes.shape)} after {self._shape}"
            )
        self._shape = tuple(codes.shape)
        indices = codes.to(self._device, torch.int32)[None, None]  # (1, 1, h, w)
        video = self._net(indices, self._state)[0]  # (3, n, H, W)
        return to_uint8_frames(video)

    @property
    def state_bytes(self) -> int:
        """Memory its causal state holds now."""
        return self._state.nbytes


class CosmosTokenizer:
    """`VideoTokenizer` over NVIDIA's Cosmos DV4x8x8 encoder graph and decoder weights.

    Build it with `load_cosmos`, which also probes both.
    """

    n_codes: int = COSMOS_FSQ.n_codes
    spatial_stride: int = 8
    temporal_stride: int = 4

    def __init__(
        self,
        encoder: torch.jit.ScriptModule,
        decoder: InvQuantizedDecoder,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        window: int | None = DEFAULT_WINDOW,
    ) -> None:
        CausalState(window)  # validates the window
        self.name = name
        self.encoder = encoder
        self.decoder = decoder
        self.device = device
        self.dtype = dtype
        self.window = window
        self._meta: InvQuantizedDecoder | None = None  # its structure, for memory estimates

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> int64 (H/8, W/8) codes on the CPU."""
        check_image(image)
        indices = self._encode(image[None])  # (1, 1, h, w)
        return indices[0, 0].to(torch.int64).cpu()

    def encode_video(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (1 + 4(L-1), H, W, 3) RGB -> int64 (L, H/8, W/8) codes on the CPU, the clip
        through the causal encoder in one call (its first latent frame is the first frame's
        alone, as `encode_image` makes it)."""
        check_clip(clip, self.temporal_stride)
        return self._encode(clip)[0].to(torch.int64).cpu()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer (L, h, w) codes -> uint8 (1 + 4(L-1), 8h, 8w, 3) on the CPU, in one call."""
        check_codes(codes, self.n_codes, ndim=3)
        return to_uint8_frames(self._decode(codes))

    def stream_decoder(self) -> CosmosStreamDecoder:
        return CosmosStreamDecoder(self.decoder, self.device, self.window)

    def stream_state_bytes(self, height: int, width: int, latent_frames: int) -> int:
        """Memory a stream's causal state holds after `latent_frames` pushes of `height` x
        `width` pixels (its largest, for a window or a clip of that length), in this dtype.

        Computed by running the network's structure on the meta device (no memory, no FLOPs)
        for two pushes: the convolution inputs plus one frame of keys and values, then one more.
        """
        if latent_frames <= 0:
            return 0
        h, w = height // self.spatial_stride, width // self.spatial_stride
        if self._meta is None:
            with torch.device("meta"):
                self._meta = InvQuantizedDecoder(self.decoder.cfg).to(self.dtype)
        state, sizes = CausalState(None), []
        for _ in range(2):
            self._meta(torch.zeros(1, 1, h, w, dtype=torch.int32, device="meta"), state)
            sizes.append(state.nbytes)
        per_frame = sizes[1] - sizes[0]  # keys and values of one latent frame
        kept = latent_frames if self.window is None else min(latent_frames, self.window - 1)
        return sizes[0] - per_frame + per_frame * kept

    @torch.inference_mode()
    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> whatever the encoder returns first (indices (1, L, h, w))."""
        x = frames.to(self.device, torch.float64) / 255.0 * 2.0 - 1.0  # (T, H, W, 3), as reference
        x = x.permute(3, 0, 1, 2)[None].to(self.dtype)  # (1, 3, T, H, W)
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


def _hint(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cpu" and dtype != torch.float32:
        return " (CPU kernels such as avg_pool3d lack bf16/fp16; try dtype=torch.float32)"
    return ""


def _probe_encoder(tokenizer: CosmosTokenizer, enc: Path) -> None:
    """Runs the encoder graph once on a tiny image; ValueError naming the file if it fails."""
    h = _PROBE_PX // tokenizer.spatial_stride
    try:
        indices = tokenizer._encode(torch.zeros(1, _PROBE_PX, _PROBE_PX, 3, dtype=torch.uint8))
    except RuntimeError as err:
        raise ValueError(
            f"{enc}: fails on a {tokenizer.dtype} (1, 3, 1, 32, 32) input: {_last_line(err)}"
            f"{_hint(tokenizer.device, tokenizer.dtype)}"
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


@torch.inference_mode()
def _probe_decoder(
    graph: torch.jit.ScriptModule, dec: Path, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """NVIDIA's graph on 2 latent frames of 4x4 codes -> float (3, 5, 32, 32); ValueError
    naming the file if it fails or gives another shape."""
    h = _PROBE_PX // CosmosTokenizer.spatial_stride
    codes = torch.arange(2 * h * h, device=device, dtype=torch.int32).reshape(1, 2, h, h)
    try:
        video = graph(codes * 997 % COSMOS_FSQ.n_codes)  # spread over the codebook
    except RuntimeError as err:
        raise ValueError(
            f"{dec}: fails on int32 (1, 2, {h}, {h}) indices: {_last_line(err)}"
            f"{_hint(device, dtype)}"
        ) from err
    want = (1, 3, n_frames(2, CosmosTokenizer.temporal_stride), _PROBE_PX, _PROBE_PX)
    if not isinstance(video, torch.Tensor) or tuple(video.shape) != want:
        raise ValueError(
            f"{dec}: not a DV4x8x8 decoder; 2 latent frames of {h}x{h} should give pixels"
            f" {want}, got {_describe(video)}"
        )
    return video


@torch.inference_mode()
def _check_agreement(net: InvQuantizedDecoder, graph_video: torch.Tensor, dec: Path) -> float:
    """This network with the file's weights must decode the probe as the file's own graph does
    (a file whose tensor names match but whose graph computes something else fails here).
    Returns the largest difference, in the [-1, 1] pixel range."""
    h = _PROBE_PX // CosmosTokenizer.spatial_stride
    codes = torch.arange(2 * h * h, device=graph_video.device, dtype=torch.int32)
    video = net((codes * 997 % COSMOS_FSQ.n_codes).reshape(1, 2, h, h))
    diff = (video.float() - graph_video.float()).abs()
    # float32: rounding only (~1e-6); bf16/fp16 round every layer differently (~1e-2).
    limit = AGREEMENT_FP32 if graph_video.dtype == torch.float32 else AGREEMENT_LOW
    if float(diff.mean()) > limit:
        raise ValueError(
            f"{dec}: its weights, run by this project's DV4x8x8 network, decode a probe "
            f"differently from the file's own graph (mean |diff| {float(diff.mean()):.3g} > "
            f"{limit}); the file's architecture is not the one Lumos-1 was trained with"
        )
    return float(diff.max())


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
    window: int | None = DEFAULT_WINDOW,
) -> CosmosTokenizer:
    """Loads and probes NVIDIA's Cosmos-Tokenizer-DV4x8x8 from a local folder.

    Args:
        folder: holds `encoder.jit` and `decoder.jit` (other files are ignored here).
        device: where the encoder graph and the decoder network run.
        dtype: floating dtype of weights and inputs; None for `default_dtype(device)` (bf16,
            as the reference, except on the CPU). NVIDIA's graphs may cast to bf16 internally,
            in which case another dtype fails the probe.
        window: a stream's attention window (`CosmosStreamDecoder`); None: exact, unbounded.
    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        ValueError: a file is not TorchScript, does not behave like DV4x8x8, or its decoder
            weights do not load by name into DV4x8x8's network or decode differently there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such Cosmos tokenizer folder")
    device = torch.device(device)
    dtype = default_dtype(device) if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    enc, dec = folder / ENCODER_FILE, folder / DECODER_FILE
    encoder, graph = _load_jit(enc, device, dtype), _load_jit(dec, device, dtype)
    graph_video = _probe_decoder(graph, dec, device, dtype)
    try:
        net = load_decoder(graph.state_dict(), device, dtype).net
    except CosmosWeightsError as err:
        raise ValueError(f"{dec}: {err}") from err
    _check_agreement(net, graph_video, dec)
    del graph, graph_video  # the network holds the weights from here on
    tokenizer = CosmosTokenizer(
        encoder, net, name=f"cosmos:{folder.name}", device=device, dtype=dtype, window=window
    )
    _probe_encoder(tokenizer, enc)
    return tokenizer
