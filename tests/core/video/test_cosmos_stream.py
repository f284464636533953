"""The streaming Cosmos decoder: per-layer causal state against the whole-clip decode.

The exactness test runs the full-width DV4x8x8 network (random weights, float32, CPU) at
64x64, as issue 28 asks; the others use the 1/16-width network, whose layer structure (and so
temporal receptive field) is the same.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from packcache_core.video.base import to_uint8_frames
from packcache_core.video.causal_state import CausalState
from packcache_core.video.cosmos import CosmosStreamDecoder, CosmosTokenizer
from packcache_core.video.cosmos_net import DVConfig, InvQuantizedDecoder, randomize

from .conftest import SMALL_DV

Psnr = Callable[[torch.Tensor, torch.Tensor], float]
CPU = torch.device("cpu")


def _codes(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 64000, (n, h, w), generator=g)


def _net(cfg: DVConfig) -> InvQuantizedDecoder:
    return randomize(InvQuantizedDecoder(cfg), seed=1, output_gain=0.05).eval()


@torch.inference_mode()
def _stream_float(
    net: InvQuantizedDecoder, codes: torch.Tensor, window: int | None
) -> torch.Tensor:
    """Float (3, T, H, W) of `codes` (L, h, w) pushed one latent frame at a time."""
    state = CausalState(window)
    pushes = [net(frame[None, None].to(torch.int32), state)[0] for frame in codes]
    return torch.cat(pushes, dim=1)


def test_full_width_stream_equals_whole_clip(psnr: Psnr) -> None:
    """13 latent frames at 64x64: streamed with the whole attention state = whole-clip decode."""
    net = _net(DVConfig())
    codes = _codes(13, 8, 8)
    with torch.inference_mode():
        whole = net(codes[None].to(torch.int32))[0]  # (3, 49, 64, 64)
    streamed = _stream_float(net, codes, window=None)
    assert streamed.shape == whole.shape == (3, 49, 64, 64)
    # Measured: max |diff| 2.7e-6 (float32 rounding of convolutions over other lengths).
    assert (streamed - whole).abs().max() < 1e-4
    assert psnr(to_uint8_frames(streamed), to_uint8_frames(whole)) > 80.0  # measured 93 dB
    # A window shorter than the clip drops attention context: measured 30.6 dB at w=4.
    windowed = to_uint8_frames(_stream_float(net, codes, window=4))
    assert 20.0 < psnr(windowed, to_uint8_frames(whole)) < 45.0


def test_pushes_of_several_frames_match_single_pushes() -> None:
    net = _net(SMALL_DV)
    codes = _codes(6, 2, 3, seed=1)
    single = _stream_float(net, codes, window=None)
    state = CausalState(None)
    with torch.inference_mode():
        chunks = [
            net(codes[None, a:b].to(torch.int32), state)[0] for a, b in ((0, 1), (1, 4), (4, 6))
        ]
    assert torch.cat(chunks, dim=1).shape == single.shape == (3, 21, 16, 24)
    assert (torch.cat(chunks, dim=1) - single).abs().max() < 1e-5


def test_window_bounds_the_state_and_unbounded_grows() -> None:
    net = _net(SMALL_DV)
    sizes: dict[int | None, list[int]] = {}
    for window in (3, None):
        stream = CosmosStreamDecoder(net, CPU, window)
        sizes[window] = []
        for frame in _codes(7, 2, 2, seed=2):
            stream.push(frame)
            sizes[window].append(stream.state_bytes)
    assert sizes[3][2:] == [sizes[3][2]] * 5  # fixed once the window holds 2 past frames
    steps = [b - a for a, b in zip(sizes[None], sizes[None][1:], strict=False)]
    assert steps == [steps[0]] * 6 and steps[0] > 0  # one frame of keys and values a push


@pytest.mark.parametrize("window", [None, 1, 4])
def test_stream_state_bytes_matches_a_real_stream(window: int | None) -> None:
    net = _net(SMALL_DV)
    tokenizer = CosmosTokenizer(
        torch.jit.script(torch.nn.Identity()),
        net,
        name="t",
        device=CPU,
        dtype=torch.float32,
        window=window,
    )
    stream = tokenizer.stream_decoder()
    for n, frame in enumerate(_codes(6, 3, 2, seed=3), start=1):
        stream.push(frame)
        assert tokenizer.stream_state_bytes(24, 16, n) == stream.state_bytes, n
