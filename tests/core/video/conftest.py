"""Shared fixtures for the video tests: a synthetic photo, PSNR, and generated Cosmos jit files."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from packcache_core.video.cosmos_net import (
    DVConfig,
    InvQuantizedDecoder,
    QuantizedEncoder,
    export_jit,
)

# The layer structure of DV4x8x8 at 1/16 of its width: same depth, same temporal receptive field.
SMALL_DV = DVConfig(channels=8)
SEED = 0


def _pink_noise(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """(h, w) noise with a 1/f amplitude spectrum (as natural images have), unit variance."""
    white = torch.randn(h, w, generator=g)
    fy, fx = torch.fft.fftfreq(h)[:, None], torch.fft.rfftfreq(w)[None, :]
    f = torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / max(h, w))
    x = torch.fft.irfft2(torch.fft.rfft2(white) / f, s=(h, w))
    return (x - x.mean()) / x.std()


def synthetic_photo(h: int = 256, w: int = 384, seed: int = 0) -> torch.Tensor:
    """A deterministic landscape (sky, sun, textured ridge, grass): uint8 (h, w, 3)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h)[:, None, None]  # (h, 1, 1)
    x = torch.linspace(0, 1, w)[None, :, None]  # (1, w, 1)

    def rgb(r: float, gr: float, b: float) -> torch.Tensor:
        return torch.tensor([r, gr, b]) / 255.0

    img = torch.lerp(rgb(60, 110, 190), rgb(200, 215, 230), (y / 0.55).clamp(0, 1))
    sun = torch.exp(-(((x - 0.72) * w / h) ** 2 + (y - 0.18) ** 2) / 0.003)
    img = img + 0.8 * sun * rgb(255, 240, 200)
    ridge = 0.42 + 0.07 * torch.sin(9 * x + 1) + 0.03 * torch.sin(23 * x + 2)
    ridge = ridge + 0.025 * _pink_noise(1, w, g)[0][None, :, None]
    rock = rgb(105, 95, 90) * (1 + 0.25 * _pink_noise(h, w, g)[..., None]) * (0.8 + 0.4 * x)
    img = torch.lerp(img, rock, torch.sigmoid((y - ridge) * h))
    grass = rgb(70, 120, 45) * (1 + 0.2 * _pink_noise(h, w, g)[..., None]) * (0.7 + 0.6 * y)
    img = torch.lerp(img, grass, torch.sigmoid((y - 0.68 - 0.02 * torch.sin(5 * x)) * h))
    img = img + 0.01 * torch.randn(h, w, 3, generator=g)  # sensor noise
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two uint8 videos or images, in dB (inf when equal)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def photo() -> torch.Tensor:
    return synthetic_photo()


@pytest.fixture(scope="session")
def psnr() -> Callable[[torch.Tensor, torch.Tensor], float]:
    return psnr_db


class CosmosExport(NamedTuple):
    folder: Path  # holds encoder.jit and decoder.jit
    encoder: QuantizedEncoder  # the eager modules that were traced into them
    decoder: InvQuantizedDecoder


@pytest.fixture(scope="session")
def cosmos_export(tmp_path_factory: pytest.TempPathFactory) -> CosmosExport:
    """Jit files traced from `SMALL_DV` with random weights, in a Cosmos-style folder."""
    folder = tmp_path_factory.mktemp("cosmos") / "Cosmos-Tokenizer-DV4x8x8"
    encoder, decoder = export_jit(folder, SMALL_DV, seed=SEED)
    return CosmosExport(folder, encoder, decoder)
