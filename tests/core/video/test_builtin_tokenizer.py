"""`builtin:patch`: round-trip quality, robustness to any code, and exact streaming."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from packcache_core.video.builtin import PatchTokenizer

Psnr = Callable[[torch.Tensor, torch.Tensor], float]


@pytest.fixture(scope="module")
def tokenizer() -> PatchTokenizer:
    return PatchTokenizer()


def test_layout_is_cosmos_dv4x8x8(tokenizer: PatchTokenizer, photo: torch.Tensor) -> None:
    assert (tokenizer.n_codes, tokenizer.spatial_stride, tokenizer.temporal_stride) == (64000, 8, 4)
    codes = tokenizer.encode_image(photo)
    assert codes.dtype == torch.int64 and codes.shape == (32, 48)
    assert int(codes.min()) >= 0 and int(codes.max()) < 64000
    assert tokenizer.decode(codes[None].repeat(3, 1, 1)).shape == (9, 256, 384, 3)


def test_round_trip_is_recognisable(
    tokenizer: PatchTokenizer, photo: torch.Tensor, psnr: Psnr
) -> None:
    recon = tokenizer.decode(tokenizer.encode_image(photo)[None])[0]
    assert psnr(recon, photo) > 25.0  # measured 26.2 dB on this 384x256 image


def test_reconstruction_is_nearly_a_fixed_point(
    tokenizer: PatchTokenizer, photo: torch.Tensor
) -> None:
    # Encoder and decoder agree on what each digit means: re-encoding the decoded image gives
    # back the codes, except where clipping or the chroma upsampling moves a patch (0.1%).
    codes = tokenizer.encode_image(photo)
    again = tokenizer.encode_image(tokenizer.decode(codes[None])[0])
    assert (again == codes).float().mean() > 0.99  # measured 0.9987


@pytest.mark.parametrize("level", [0, 37, 128, 200, 255])
def test_flat_grey_is_reproduced(tokenizer: PatchTokenizer, level: int) -> None:
    image = torch.full((32, 64, 3), level, dtype=torch.uint8)
    recon = tokenizer.decode(tokenizer.encode_image(image)[None])[0]
    # Half a luma step (255 / 39 / 2 = 3.3) plus 1 for the truncating uint8 conversion.
    assert (recon.int() - level).abs().max() <= 4


def test_every_code_decodes_to_valid_pixels(tokenizer: PatchTokenizer) -> None:
    codes = torch.arange(64000).reshape(1, 250, 256)
    video = tokenizer.reconstruct(codes)
    assert video.shape == (1, 3, 2000, 2048)
    assert torch.isfinite(video).all() and video.abs().max() <= 1.0
    assert tokenizer.decode(codes).shape == (1, 2000, 2048, 3)


def test_stream_equals_whole_clip_bitwise(tokenizer: PatchTokenizer) -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64000, (5, 6, 4), generator=g)
    stream = tokenizer.stream_decoder()
    pushed = [stream.push(frame) for frame in codes]
    assert [p.shape[0] for p in pushed] == [1, 4, 4, 4, 4]
    whole = tokenizer.decode(codes)
    assert torch.equal(torch.cat(pushed), whole)
    # Frame 4t is latent frame t itself; the 3 before it blend from frame t-1.
    singles = torch.stack([tokenizer.decode(c[None])[0] for c in codes])
    assert torch.equal(whole[::4], singles)
    mid = whole[2].float()  # halfway between latent 0 and 1
    assert ((mid - (singles[0].float() + singles[1].float()) / 2).abs() <= 1).all()


def test_bad_inputs(tokenizer: PatchTokenizer) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tokenizer.encode_image(torch.zeros(32, 40, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 64000\)"):
        tokenizer.decode(torch.full((1, 2, 2), -3))
    stream = tokenizer.stream_decoder()
    stream.push(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape changed"):
        stream.push(torch.zeros(2, 3, dtype=torch.int64))


def test_stream_state_bytes_is_the_previous_frame() -> None:
    tokenizer = PatchTokenizer()
    stream = tokenizer.stream_decoder()
    stream.push(torch.zeros(4, 6, dtype=torch.int64))
    assert tokenizer.stream_state_bytes(32, 48, 1) == stream._prev.nbytes == 3 * 32 * 48 * 4
