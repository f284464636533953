"""`scripts/train_demo_model.py` as users run it: a few steps, a loadable card, the same weights
from the same seed, different ones from another."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from packcache_core.demo.card import WEIGHTS_FILE, load_demo, read_card
from packcache_core.loading import build_model
from tests.helpers import run_repo_script


def train(out: Path, seed: int) -> dict[str, torch.Tensor]:
    args = ["--out", str(out), "--steps", "3", "--batch", "2", "--warmup", "1"]
    args += ["--seed", str(seed), "--threads", "1", "--log-every", "1"]
    proc = run_repo_script("scripts/train_demo_model.py", *args)
    assert "step 3/3 loss" in proc.stdout
    return load_file(str(out / WEIGHTS_FILE))


def test_a_short_run_writes_a_model_that_loads_and_is_reproducible(tmp_path: Path) -> None:
    first = train(tmp_path / "a", seed=0)
    again = train(tmp_path / "b", seed=0)
    other = train(tmp_path / "c", seed=1)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert all(v.dtype in (torch.bfloat16, torch.int64) for v in first.values())

    card = read_card(tmp_path / "a")
    assert card.training["steps_done"] == 3 and math.isfinite(card.training["final_loss"])
    config, state = load_demo(tmp_path / "a")
    model = build_model(config, state, "cpu", torch.float32)  # strict about every tensor
    assert model.config.n_codes == 400
