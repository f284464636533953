"""FSQ index arithmetic against the formulas of the reference spec and a brute-force oracle."""

from __future__ import annotations

import pytest
import torch

from packcache_core.video.fsq import COSMOS_FSQ, FSQ


def test_cosmos_codebook_constants() -> None:
    assert COSMOS_FSQ.n_codes == 64000
    assert COSMOS_FSQ.basis == (1, 8, 64, 512, 2560, 12800)


def test_indices_to_codes_matches_spec_formula() -> None:
    idx = torch.tensor([0, 1, 63999, 12345, 2560 * 3 + 64 * 5 + 7])
    levels = torch.tensor(COSMOS_FSQ.levels)
    basis = torch.tensor(COSMOS_FSQ.basis)
    d = (idx[:, None] // basis) % levels  # spec: d_i = (idx // basis_i) % L_i
    want = (d - levels // 2).float() / (levels // 2).float()
    assert torch.equal(COSMOS_FSQ.indices_to_codes(idx), want)
    assert COSMOS_FSQ.indices_to_codes(torch.tensor(0)).tolist() == [-1.0] * 6
    assert COSMOS_FSQ.indices_to_codes(torch.tensor(63999)).tolist() == [0.75] * 3 + [1.0] * 3


def test_every_index_round_trips_through_digits_and_codes() -> None:
    idx = torch.arange(COSMOS_FSQ.n_codes)
    assert torch.equal(COSMOS_FSQ.digits_to_indices(COSMOS_FSQ.indices_to_digits(idx)), idx)
    codes, back = COSMOS_FSQ.quantize(COSMOS_FSQ.indices_to_codes(idx))
    assert torch.equal(back, idx)
    assert torch.equal(codes, COSMOS_FSQ.indices_to_codes(idx))


@pytest.mark.parametrize("levels", [(8, 8, 8, 5, 5, 5), (3, 4), (2, 7, 6)])
def test_quantize_is_the_nearest_codebook_entry(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels)
    codebook = fsq.indices_to_codes(torch.arange(fsq.n_codes))  # (n_codes, dim)
    x = torch.rand(300, fsq.dim, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
    oracle = torch.cdist(x, codebook).argmin(dim=1)  # brute force over every code
    codes, idx = fsq.quantize(x)
    assert torch.equal(idx, oracle)
    assert torch.equal(codes, codebook[oracle])


def test_quantize_keeps_leading_shape_and_clamps() -> None:
    x = torch.full((2, 3, 6), 5.0)
    codes, idx = COSMOS_FSQ.quantize(x)
    assert idx.shape == (2, 3) and codes.shape == (2, 3, 6)
    assert (idx == 63999).all()
    assert (COSMOS_FSQ.quantize(-x)[1] == 0).all()


def test_bad_levels_and_shapes_raise() -> None:
    with pytest.raises(ValueError, match="levels"):
        FSQ((8, 1))
    with pytest.raises(ValueError, match="levels"):
        FSQ(())
    with pytest.raises(ValueError, match="last dimension of 6"):
        COSMOS_FSQ.quantize(torch.zeros(4, 5))
