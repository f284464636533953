"""Strict by-name loading of a Cosmos decoder state dict, and the load-time check against the graph.

These run on this project's own export of the network (`export_jit`): NVIDIA's `decoder.jit`
is not available offline, so that its names load is shown only through the module tree, which
follows NVIDIA's published code (`cosmos_net.py`).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from packcache_core.video.cosmos import load_cosmos
from packcache_core.video.cosmos_net import InvQuantizedDecoder, idle_parameters, randomize
from packcache_core.video.cosmos_weights import CosmosWeightsError, load_decoder

from .conftest import SMALL_DV, CosmosExport

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def state(cosmos_export: CosmosExport) -> dict[str, torch.Tensor]:
    graph = torch.jit.load(str(cosmos_export.folder / "decoder.jit"))
    return dict(graph.state_dict())


def _decode(net: InvQuantizedDecoder) -> torch.Tensor:
    codes = torch.arange(2 * 2 * 3, dtype=torch.int32).reshape(1, 2, 2, 3) * 4001
    with torch.inference_mode():
        return net(codes)


def test_exported_state_loads_strictly_and_decodes_as_exported(
    state: dict[str, torch.Tensor], cosmos_export: CosmosExport
) -> None:
    loaded = load_decoder(state, CPU, torch.float32)
    assert loaded.idle_absent == [] and loaded.net.cfg == SMALL_DV  # width read from shapes
    assert torch.equal(_decode(loaded.net), _decode(cosmos_export.decoder))


def test_never_run_layers_may_be_absent(state: dict[str, torch.Tensor]) -> None:
    idle = idle_parameters(InvQuantizedDecoder(SMALL_DV))
    assert "decoder.up.1.upsample.conv2.conv3d.weight" in idle  # the pass-through upsampler
    assert "decoder.up.2.upsample.conv2.conv3d.weight" not in idle  # the one that runs
    lean = {k: v for k, v in state.items() if k not in idle}
    loaded = load_decoder(lean, CPU, torch.float32)
    assert sorted(loaded.idle_absent) == sorted(idle)
    assert torch.equal(_decode(loaded.net), _decode(load_decoder(state, CPU, torch.float32).net))


def test_nvidia_buffers_are_skipped_and_their_levels_checked(
    state: dict[str, torch.Tensor],
) -> None:
    levels = torch.tensor([8, 8, 8, 5, 5, 5], dtype=torch.int32)
    extra = {"inv_quant.quantizer._levels": levels, "decoder.unpatcher3d.wavelets": torch.ones(2)}
    load_decoder(state | extra, CPU, torch.float32)
    other = {"inv_quant.quantizer._levels": torch.tensor([8, 8, 8, 6, 5], dtype=torch.int32)}
    with pytest.raises(CosmosWeightsError, match=r"_levels = \(8, 8, 8, 6, 5\).*another"):
        load_decoder(state | other, CPU, torch.float32)


@pytest.mark.parametrize("fault", ["renamed", "missing", "extra", "shape"])
def test_each_fault_is_named(state: dict[str, torch.Tensor], fault: str) -> None:
    name = "decoder.mid.attn_1.1.k.conv3d.weight"
    broken = dict(state)
    if fault == "renamed":
        broken["decoder.mid.attn_1.1.key.conv3d.weight"] = broken.pop(name)
        match = r"not in DV4x8x8's decoder: decoder\.mid\.attn_1\.1\.key"
    elif fault == "missing":
        del broken[name]
        match = r"1 decoder tensor\(s\) missing: decoder\.mid\.attn_1\.1\.k\.conv3d\.weight"
    elif fault == "extra":
        broken["decoder.up.0.attn.0.0.q.conv3d.weight"] = torch.zeros(1)
        match = r"not in DV4x8x8's decoder: decoder\.up\.0\.attn\.0\.0\.q"
    else:
        broken[name] = broken[name][:, :-1]
        match = rf"tensor {name} has shape"
    with pytest.raises(CosmosWeightsError, match=match):
        load_decoder(broken, CPU, torch.float32)


def test_a_graph_that_computes_otherwise_is_refused(
    tmp_path: Path, cosmos_export: CosmosExport
) -> None:
    """Names and shapes right, arithmetic different: the load-time probe catches it."""

    class Brighter(InvQuantizedDecoder):
        def forward(self, indices: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(indices) * 1.5

    net = randomize(Brighter(SMALL_DV), seed=1, output_gain=0.05).eval()
    shutil.copy(cosmos_export.folder / "encoder.jit", tmp_path / "encoder.jit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.zeros(1, 2, 4, 4, dtype=torch.int32))
    torch.jit.save(traced, str(tmp_path / "decoder.jit"))
    with pytest.raises(ValueError, match=r"decoder\.jit: its weights.*decode a probe differently"):
        load_cosmos(tmp_path, dtype=torch.float32)
