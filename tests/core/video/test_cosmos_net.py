"""The DV4x8x8 re-implementation: Haar patching, causality, receptive field, exported graphs."""

from __future__ import annotations

import torch

from packcache_core.video.cosmos_net import (
    DVConfig,
    InvQuantizedDecoder,
    QuantizedEncoder,
    haar_patch,
    haar_unpatch,
    randomize,
)

SMALL = DVConfig(channels=8)


def test_haar_patch_shapes_and_exact_inverse() -> None:
    x = torch.randn(2, 3, 9, 16, 24, dtype=torch.float64)
    p = haar_patch(x, levels=2)
    assert p.shape == (2, 192, 3, 4, 6)  # frame 0 repeated 4x: (9 + 3) / 4 = 3 latent frames
    torch.testing.assert_close(haar_unpatch(p, levels=2), x, rtol=0, atol=1e-12)


def test_haar_low_band_is_the_block_mean_and_frame_zero_stands_alone() -> None:
    x = torch.randn(1, 3, 5, 8, 8, dtype=torch.float64)
    p = haar_patch(x, levels=2)  # (1, 192, 2, 2, 2)
    # The all-low band of both levels is the first 3 channels: a 4x4x4 block mean.
    torch.testing.assert_close(p[0, :3, 0, 0, 0], x[0, :, :1, :4, :4].mean(dim=(1, 2, 3)))
    torch.testing.assert_close(p[0, :3, 1, 1, 1], x[0, :, 1:5, 4:8, 4:8].mean(dim=(1, 2, 3)))
    single = haar_patch(x[:, :, :1], levels=2)
    torch.testing.assert_close(single[:, :, 0], p[:, :, 0])  # latent 0 sees frame 0 only


def test_decoder_receptive_field_constants() -> None:
    cfg = DVConfig()
    assert cfg.decoder_temporal_taps == 24
    assert cfg.decoder_conv_lookback == 48
    assert SMALL.decoder_conv_lookback == cfg.decoder_conv_lookback  # scaling keeps the depth


def test_decoder_is_causal_in_latent_frames() -> None:
    decoder = randomize(InvQuantizedDecoder(SMALL), seed=3, output_gain=0.05).eval()
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64000, (1, 4, 2, 3), generator=g)
    changed = codes.clone()
    changed[:, 2] = torch.randint(0, 64000, (2, 3), generator=g)
    with torch.no_grad():
        a, b = decoder(codes), decoder(changed)  # (1, 3, 13, 16, 24)
    assert a.shape == (1, 3, 13, 16, 24)
    assert torch.equal(a[:, :, :5], b[:, :, :5])  # frames of latent 0 and 1
    assert not torch.allclose(a[:, :, 5:9], b[:, :, 5:9])  # frames of latent 2


def test_encoder_returns_nvidia_style_tuple() -> None:
    encoder = randomize(QuantizedEncoder(SMALL), seed=1).eval()
    with torch.no_grad():
        indices, codes, loss = encoder(torch.rand(1, 3, 5, 32, 64) * 2 - 1)
    assert indices.dtype == torch.int32 and indices.shape == (1, 2, 4, 8)
    assert codes.shape == (1, 6, 2, 4, 8) and loss.numel() == 1
    assert int(indices.min()) >= 0 and int(indices.max()) < 64000


def test_randomize_is_deterministic() -> None:
    a = randomize(InvQuantizedDecoder(SMALL), seed=5).state_dict()
    b = randomize(InvQuantizedDecoder(SMALL), seed=5).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "decoder.up.2.block.0.conv1.0.conv3d.weight" in a  # NVIDIA's module names
    assert "decoder.mid.attn_1.1.proj_out.conv3d.weight" in a
