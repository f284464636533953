"""The shared pixel conversion and input checks of `packcache_core.video.base`."""

from __future__ import annotations

import pytest
import torch

from packcache_core.video.base import check_codes, check_image, n_frames, to_uint8_frames


def test_to_uint8_truncates_like_the_reference_and_clamps() -> None:
    # (x + 1) / 2 * 255 = 100.7 for this x: the reference truncates to 100, NVIDIA rounds to 101.
    x = 100.7 / 255.0 * 2.0 - 1.0
    video = torch.tensor([x, 1.5, -2.0, 0.0]).view(1, 4, 1, 1).expand(3, 4, 1, 1)
    out = to_uint8_frames(video)  # (T, H, W, 3)
    assert out.dtype == torch.uint8 and out.shape == (4, 1, 1, 3)
    assert out[:, 0, 0, 0].tolist() == [100, 255, 0, 127]


def test_to_uint8_moves_channels_last() -> None:
    video = torch.stack([torch.full((2, 3, 5), v) for v in (-1.0, 0.0, 1.0)])  # (3, T, H, W)
    out = to_uint8_frames(video)
    assert out.shape == (2, 3, 5, 3)
    assert out[1, 2, 4].tolist() == [0, 127, 255]


def test_n_frames() -> None:
    assert [n_frames(n, 4) for n in (0, 1, 2, 7, 13)] == [0, 1, 5, 25, 49]


@pytest.mark.parametrize(
    "image",
    [
        torch.zeros(64, 64, 3, dtype=torch.float32),
        torch.zeros(64, 64, dtype=torch.uint8),
        torch.zeros(64, 64, 4, dtype=torch.uint8),
        torch.zeros(48, 64, 3, dtype=torch.uint8),
        torch.zeros(0, 64, 3, dtype=torch.uint8),
    ],
)
def test_check_image_rejects(image: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        check_image(image)


def test_check_image_accepts_multiples_of_32() -> None:
    check_image(torch.zeros(32, 96, 3, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (torch.zeros(2, 2), "integer"),
        (torch.zeros(2, 2, 2, dtype=torch.int64), "rank 2"),
        (torch.tensor([[0, 64000]]), r"\[0, 64000\]"),
        (torch.tensor([[-1, 5]]), r"\[-1, 5\]"),
    ],
)
def test_check_codes_rejects(codes: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_codes(codes, 64000, ndim=2)
