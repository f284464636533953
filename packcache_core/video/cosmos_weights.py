"""NVIDIA's Cosmos DV4x8x8 decoder weights, loaded by name into this project's network.

What it is: `load_decoder(state)`, which takes the state dict of NVIDIA's `decoder.jit`
(`torch.jit.load(...).state_dict()`: `post_quant_conv.*`, `decoder.*`, and buffers) and
assigns it into `cosmos_net.InvQuantizedDecoder`, strictly: every tensor the decode uses must be
present with its shape, nothing unknown may be present, and the FSQ levels (when the file keeps
them) must be DV4x8x8's. Names follow NVIDIA's module tree (`cosmos_net.py`). What it is not:
a check that the weights are the published ones (`cosmos.py` compares this network's output
with NVIDIA's graph on a probe; `check-model` checks the folder's identity).

Layers NVIDIA builds but DV4x8x8 never runs (the upsampler after the middle resolution, which
passes its input through, and every upsampler's time convolution) may be present or absent:
the published `decoder.jit` is 125 MB, about 3.4 M bf16 parameters fewer than the full tree
(66.1 M), which fits a file without the pass-through upsampler. Absent, they are left at zero
and reported; present, they are loaded and checked like the rest.

Key invariant: a decoder is returned only if every tensor it computes with came from `state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from packcache_core.video.cosmos_net import DVConfig, InvQuantizedDecoder, idle_parameters

# Non-persistent buffers of NVIDIA's modules, which TorchScript archives may keep: the Haar
# filters of the (un)patcher and the FSQ constants. Not parameters: skipped (levels checked).
NVIDIA_BUFFERS = frozenset(
    {"wavelets", "_arange", "patch_size_buffer", "_levels", "_basis", "implicit_codebook"}
)
_CONV_IN = "decoder.conv_in.0.conv3d.weight"  # (channels * mult[-1], z_channels, 1, 3, 3)
_CONV_OUT = "decoder.conv_out.0.conv3d.weight"  # (3 * patch^3, channels, 1, 3, 3)
_POST_QUANT = "post_quant_conv.conv3d.weight"  # (z_channels, embedding_dim, 1, 1, 1)


class CosmosWeightsError(ValueError):
    """A decoder state dict that is not DV4x8x8's; the message says which tensor and why."""


class LoadedDecoder(NamedTuple):
    net: InvQuantizedDecoder
    idle_absent: list[str]  # never-run tensors the file did not have (left at zero)


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def decoder_config(state: Mapping[str, torch.Tensor]) -> DVConfig:
    """The DV config whose decoder has these tensors' widths (NVIDIA's is channels=128)."""
    default = DVConfig()
    for name in (_CONV_IN, _CONV_OUT, _POST_QUANT):
        if name not in state:
            raise CosmosWeightsError(f"no tensor {name}: not a Cosmos video decoder")
    top, z_channels = state[_CONV_IN].shape[:2]
    out_ch = state[_CONV_OUT].shape[0]
    if out_ch != 3 * default.patch_size**3:
        raise CosmosWeightsError(
            f"{_CONV_OUT} has {out_ch} output channels, DV4x8x8's patch size 4 needs "
            f"{3 * default.patch_size**3}"
        )
    if top % default.channels_mult[-1]:
        raise CosmosWeightsError(f"{_CONV_IN} has {top} channels, not a multiple of 4")
    return DVConfig(
        channels=top // default.channels_mult[-1],
        z_channels=z_channels,
        embedding_dim=state[_POST_QUANT].shape[1],
    )


def _check_levels(state: Mapping[str, torch.Tensor], cfg: DVConfig) -> None:
    for name, t in state.items():
        if name.endswith("._levels") and tuple(t.tolist()) != cfg.levels:
            raise CosmosWeightsError(
                f"{name} = {tuple(t.tolist())}: FSQ levels of another tokenizer "
                f"(DV4x8x8 has {cfg.levels})"
            )


def load_decoder(
    state: Mapping[str, torch.Tensor], device: torch.device | str, dtype: torch.dtype
) -> LoadedDecoder:
    """NVIDIA's decoder state dict -> `InvQuantizedDecoder` on `device` in `dtype`, strictly.

    Raises:
        CosmosWeightsError: a missing, unexpected or misshapen tensor, or other FSQ levels.
    """
    cfg = decoder_config(state)
    with torch.device("meta"):
        net = InvQuantizedDecoder(cfg)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    idle = idle_parameters(net)
    unexpected = [
        k for k in state if k not in expected and k.rsplit(".", 1)[-1] not in NVIDIA_BUFFERS
    ]
    missing = [k for k in expected if k not in state and k not in idle]
    if unexpected:
        raise CosmosWeightsError(
            f"{len(unexpected)} tensor(s) not in DV4x8x8's decoder: {_listing(unexpected)}"
        )
    if missing:
        raise CosmosWeightsError(f"{len(missing)} decoder tensor(s) missing: {_listing(missing)}")
    _check_levels(state, cfg)
    loaded, absent = {}, []
    for name, shape in expected.items():
        if name not in state:  # a never-run layer the file leaves out
            absent.append(name)
            loaded[name] = torch.zeros(shape, device=device, dtype=dtype)
            continue
        t = state[name]
        if tuple(t.shape) != tuple(shape):
            raise CosmosWeightsError(
                f"tensor {name} has shape {tuple(t.shape)}, DV4x8x8 has {tuple(shape)}"
            )
        loaded[name] = t.detach().to(device=device, dtype=dtype)
    net.load_state_dict(loaded, assign=True)
    return LoadedDecoder(net.eval().requires_grad_(False), absent)
