"""The Cosmos loader and tokenizer, on jit files traced from the DV4x8x8 re-implementation."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from packcache_core.video.base import to_uint8_frames
from packcache_core.video.cosmos import CosmosTokenizer, load_cosmos

from .conftest import CosmosExport

Psnr = Callable[[torch.Tensor, torch.Tensor], float]
# TorchScript is deprecated in torch 2.13; NVIDIA ships TorchScript, so the tests use it.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)


@pytest.fixture(scope="module")
def tokenizer(cosmos_export: CosmosExport) -> CosmosTokenizer:
    return load_cosmos(cosmos_export.folder, device="cpu", dtype=torch.float32)


def _codes(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64000, (n, h, w), generator=torch.Generator().manual_seed(seed))


def _with(tokenizer: CosmosTokenizer, **changes: object) -> CosmosTokenizer:
    """The same loaded graphs with other settings (loading again costs seconds)."""
    settings: dict = {
        "encoder": tokenizer.encoder,
        "decoder": tokenizer.decoder,
        "name": tokenizer.name,
        "device": tokenizer.device,
        "dtype": tokenizer.dtype,
    }
    return CosmosTokenizer(**(settings | changes))


def _stream(tokenizer: CosmosTokenizer, codes: torch.Tensor) -> list[torch.Tensor]:
    decoder = tokenizer.stream_decoder()
    return [decoder.push(frame) for frame in codes]


def test_loader_reads_the_folder(tokenizer: CosmosTokenizer) -> None:
    assert tokenizer.name == "cosmos:Cosmos-Tokenizer-DV4x8x8"
    assert (tokenizer.n_codes, tokenizer.spatial_stride, tokenizer.temporal_stride) == (64000, 8, 4)


def test_encode_image_matches_the_network(
    tokenizer: CosmosTokenizer, cosmos_export: CosmosExport, photo: torch.Tensor
) -> None:
    image = photo[:64, :96]
    codes = tokenizer.encode_image(image)
    assert codes.dtype == torch.int64 and codes.shape == (8, 12)
    pixels = image.double().permute(2, 0, 1)[None, :, None] / 255.0 * 2.0 - 1.0  # (1,3,1,H,W)
    with torch.no_grad():
        want = cosmos_export.encoder(pixels.float())[0][0, 0]
    assert torch.equal(codes, want.long())


def test_decode_matches_the_network(
    tokenizer: CosmosTokenizer, cosmos_export: CosmosExport
) -> None:
    codes = _codes(3, 4, 6)
    video = tokenizer.decode(codes)
    assert video.dtype == torch.uint8 and video.shape == (9, 32, 48, 3)
    with torch.no_grad():
        want = to_uint8_frames(cosmos_export.decoder(codes[None])[0])
    assert (video.int() - want.int()).abs().max() <= 1  # trace vs eager: float noise only


def test_stream_equals_whole_clip(tokenizer: CosmosTokenizer, psnr: Psnr) -> None:
    codes = _codes(7, 4, 4, seed=1)
    pushed = _stream(tokenizer, codes)
    assert [p.shape[0] for p in pushed] == [1, 4, 4, 4, 4, 4, 4]
    streamed, whole = torch.cat(pushed), tokenizer.decode(codes)
    assert streamed.shape == whole.shape == (25, 32, 32, 3)
    # Exact in real arithmetic; decoder calls of different lengths may round differently.
    # Measured: equal here; max |diff| 1 and PSNR 94.6 dB at full width and 64x64.
    assert (streamed.int() - whole.int()).abs().max() <= 1
    assert psnr(streamed, whole) > 80.0


def test_window_covering_the_clip_is_exact(tokenizer: CosmosTokenizer) -> None:
    codes = _codes(5, 4, 4, seed=2)
    unbounded, covering = _with(tokenizer, window=None), _with(tokenizer, window=5)
    for a, b in zip(_stream(unbounded, codes), _stream(covering, codes), strict=True):
        assert torch.equal(a, b)


def test_short_window_is_approximate(tokenizer: CosmosTokenizer) -> None:
    codes = _codes(5, 4, 4, seed=3)
    exact = _stream(tokenizer, codes)
    windowed = _stream(_with(tokenizer, window=2), codes)
    assert [w.shape for w in windowed] == [e.shape for e in exact]
    assert torch.equal(windowed[0], exact[0]) and torch.equal(windowed[1], exact[1])
    assert not torch.equal(windowed[4], exact[4])  # attention no longer sees frames 0..2


def test_default_dtype_is_float32_on_cpu(cosmos_export: CosmosExport) -> None:
    assert load_cosmos(cosmos_export.folder).dtype == torch.float32


def test_bf16_on_cpu_fails_at_load_with_a_hint(cosmos_export: CosmosExport) -> None:
    # NVIDIA's encoder (and ours) uses avg_pool3d, which the CPU lacks in bf16 (torch 2.13).
    with pytest.raises(ValueError, match=r"encoder\.jit: fails on a torch\.bfloat16.*float32"):
        load_cosmos(cosmos_export.folder, dtype=torch.bfloat16)


def test_bf16_decoder_runs_close_to_float32(tokenizer: CosmosTokenizer, psnr: Psnr) -> None:
    bf16 = _with(tokenizer, decoder=copy.deepcopy(tokenizer.decoder).to(torch.bfloat16))
    codes = _codes(2, 4, 4, seed=4)
    assert psnr(bf16.decode(codes), tokenizer.decode(codes)) > 40.0  # measured 52 dB


def test_missing_folder_or_file(tmp_path: Path, cosmos_export: CosmosExport) -> None:
    with pytest.raises(FileNotFoundError, match="no such Cosmos tokenizer folder"):
        load_cosmos(tmp_path / "absent")
    shutil.copy(cosmos_export.folder / "encoder.jit", tmp_path / "encoder.jit")
    with pytest.raises(FileNotFoundError, match=r"decoder\.jit: missing"):
        load_cosmos(tmp_path)


def test_file_that_is_not_torchscript(tmp_path: Path, cosmos_export: CosmosExport) -> None:
    shutil.copy(cosmos_export.folder / "decoder.jit", tmp_path / "decoder.jit")
    (tmp_path / "encoder.jit").write_bytes(b"<html>404</html>")
    with pytest.raises(ValueError, match=r"encoder\.jit: not a TorchScript archive"):
        load_cosmos(tmp_path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "encoder.jit")  # a zip, but a state dict
    with pytest.raises(ValueError, match=r"encoder\.jit: not a TorchScript archive"):
        load_cosmos(tmp_path)


def test_graph_with_the_wrong_interface(tmp_path: Path, cosmos_export: CosmosExport) -> None:
    torch.jit.script(torch.nn.Identity()).save(str(tmp_path / "encoder.jit"))
    shutil.copy(cosmos_export.folder / "decoder.jit", tmp_path / "decoder.jit")
    with pytest.raises(ValueError, match=r"encoder\.jit: not a DV4x8x8 encoder"):
        load_cosmos(tmp_path, dtype=torch.float32)
    shutil.copy(cosmos_export.folder / "encoder.jit", tmp_path / "encoder.jit")
    shutil.copy(cosmos_export.folder / "encoder.jit", tmp_path / "decoder.jit")  # swapped file
    with pytest.raises(ValueError, match=r"decoder\.jit: fails on int32"):
        load_cosmos(tmp_path, dtype=torch.float32)


def test_graph_with_the_wrong_strides(tmp_path: Path, cosmos_export: CosmosExport) -> None:
    class Upsample16(torch.nn.Module):  # a decoder with spatial stride 16 and no time axis
        def forward(self, indices: torch.Tensor) -> torch.Tensor:
            x = indices.float()[:, None]  # (B, 1, t, h, w)
            return (
                x.repeat_interleave(16, dim=3)
                .repeat_interleave(16, dim=4)
                .expand(-1, 3, -1, -1, -1)
            )

    shutil.copy(cosmos_export.folder / "encoder.jit", tmp_path / "encoder.jit")
    torch.jit.script(Upsample16()).save(str(tmp_path / "decoder.jit"))
    with pytest.raises(
        ValueError, match=r"decoder\.jit: not a DV4x8x8 decoder.*\(1, 3, 5, 32, 32\)"
    ):
        load_cosmos(tmp_path, dtype=torch.float32)


def test_bad_arguments(tokenizer: CosmosTokenizer, cosmos_export: CosmosExport) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tokenizer.encode_image(torch.zeros(40, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 64000\)"):
        tokenizer.decode(torch.full((2, 4, 4), 64000))
    with pytest.raises(ValueError, match="window"):
        _with(tokenizer, window=0)
    with pytest.raises(ValueError, match="floating dtype"):
        load_cosmos(cosmos_export.folder, dtype=torch.int32)
    stream = tokenizer.stream_decoder()
    stream.push(torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape changed"):
        stream.push(torch.zeros(4, 6, dtype=torch.int64))
