"""`scripts/train_demo_model.py` as users run it: a few steps, a loadable card, the same weights
from the same seed, different ones from another."""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from packcache_core.demo.card import load_demo, read_card
from packcache_core.loading import build_model
from tests.helpers import ROOT, run_repo_script


def train(out: Path, seed: int, *extra: str) -> dict[str, torch.Tensor]:
    """A 3-step run of the default preset (`builtin:demo`: from demo-base, one of three clips
    run through a served cache, one whole text-to-video clip) or of `extra`'s."""
    args = ["--out", str(out), "--steps", "3", "--batch", "3", "--warmup", "1"]
    args += ["--rollout-rows", "1", "--t2v-rows", "1", "--views-per-row", "2"]
    args += ["--path-frames", "8", "--seed", str(seed), "--threads", "1", "--log-every", "1"]
    proc = run_repo_script("scripts/train_demo_model.py", *args, *extra)
    assert "step 3/3 loss" in proc.stdout
    name = "demo-base" if "demo-base" in extra else "demo"
    return load_file(str(out / f"{name}.safetensors"))


def test_the_first_stage_trains_from_scratch(tmp_path: Path) -> None:
    state = train(
        tmp_path,
        0,
        "--preset",
        "demo-base",
        "--rollout-rows",
        "0",
        "--t2v-rows",
        "0",
        "--view-rows",
        "1",
    )
    config, loaded = load_demo(tmp_path, "demo-base")
    assert build_model(config, loaded, "cpu", torch.float32).config.n_codes == 400
    assert read_card(tmp_path, "demo-base").defaults.cache_policy == "packcache"
    assert state.keys() == load_file(str(tmp_path / "demo-base.safetensors")).keys()


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
    # the card names the policy the model was trained to be served with, every knob spelt out
    assert card.defaults.cache_policy == "packcache"
    assert card.defaults.policy_params["window"] == 3 and card.defaults.policy_params["rebase"]
    config, state = load_demo(tmp_path / "a")
    model = build_model(config, state, "cpu", torch.float32)  # strict about every tensor
    assert model.config.n_codes == 400


def test_a_stage_starts_from_an_earlier_stages_weights_and_keeps_its_record(
    tmp_path: Path,
) -> None:
    """`--preset demo-own --init <file>`: the second stage loads the first's weights (every
    rollout text-to-video here, on the model's own frames) and its card carries the first
    stage's training record; `--history-mask-ratio` reaches the card's sampling, and a bool
    flag its config; `--own-denoising-steps` changes the frames an own rollout draws, not the
    card's sampling."""
    train(tmp_path / "a", 0)
    weights = tmp_path / "a" / "demo.safetensors"
    extra = ["--preset", "demo-own", "--init", str(weights), "--t2v-share", "1"]
    extra += ["--history-mask-ratio", "0.3", "--t2v-row-turns", "false", "--t2i-rows", "2"]
    extra += ["--colour-share", "1", "--own-share", "1", "--own-frames", "3"]
    state = train(tmp_path / "b", 0, *extra)
    card = read_card(tmp_path / "b")
    assert card.training["init_training"] == read_card(tmp_path / "a").training
    assert card.training["train_config"]["init"] == str(weights)
    assert card.training["train_config"]["own_share"] == 1.0
    assert card.training["train_config"]["t2v_row_turns"] is False  # "false" read as false
    assert card.training["train_config"]["t2i_rows"] == 2
    assert card.defaults.sampling.history_mask_ratio == 0.3
    assert read_card(tmp_path / "a").defaults.sampling.history_mask_ratio == 0.7  # Lumos-1's
    # own frames drawn in one denoising step: other frames to learn from, the card's sampling kept
    fewer = train(tmp_path / "c", 0, *extra, "--own-denoising-steps", "1")
    assert not all(torch.equal(state[k], fewer[k]) for k in state)
    card = read_card(tmp_path / "c")
    assert card.training["train_config"]["own_denoising_steps"] == 1
    assert card.defaults.sampling == read_card(tmp_path / "b").defaults.sampling


def test_settings_an_own_rollout_cannot_meet_are_refused(tmp_path: Path) -> None:
    """An own rollout is at least `--views-per-row` + 1 frames long: `--own-frames` below that
    is refused before any training, with a message naming both flags and no traceback."""
    script = ROOT / "scripts" / "train_demo_model.py"
    for flags, message in (
        (["--own-frames", "3"], "--own-frames 3 must exceed --views-per-row 3"),
        (["--own-share", "1.5"], "need 0 <= --own-share <= 1"),
        (["--history-mask-ratio", "1"], "history_mask_ratio must be in [0, 1), got 1.0"),
        (["--history-mask-ratio", "0", "--view-rows", "1"], "use --rollout-rows instead"),
        (["--t2v-row-turns", "1"], "t2v_row_turns=1: expected true or false"),
        (["--t2i-rows", "-1"], "need --t2i-rows >= 0 and --t2i-weight >= 0"),
        (["--own-denoising-steps", "0"], "need --own-denoising-steps >= 1, got 0"),
        (["--steps", "ten"], "steps=ten: expected int"),
    ):
        argv = [sys.executable, str(script), "--preset", "demo-own", "--out", str(tmp_path), *flags]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_a_chain_trains_its_stages_in_turn_and_records_commands_that_reproduce_them(
    tmp_path: Path,
) -> None:
    """`--chain demo-2h` at a tiny size (flags apply to every stage): six stages, each from the
    one before's weights, the card keeping every stage's record; the last stage's recorded
    command, run alone, writes the same weights."""
    tiny = ["--steps", "2", "--batch", "3", "--rollout-rows", "1", "--t2v-rows", "1"]
    tiny += ["--views-per-row", "2", "--own-frames", "3", "--path-frames", "5", "--threads", "1"]
    run_repo_script(
        "scripts/train_demo_model.py", "--chain", "demo-2h", "--out", str(tmp_path), *tiny
    )
    records = [read_card(tmp_path).training]
    while "init_training" in records[-1]:
        records.append(records[-1]["init_training"])
    presets = [r["command"].split("--preset ")[1].split()[0] for r in records]
    assert presets == ["demo-t2i", "demo-t2v-own", "demo-clean", "demo-t2v", "demo-t2v", "demo"]
    assert [r["train_config"]["seed"] for r in records] == [10, 5, 1, 0, 0, 0]
    assert all(r["steps_done"] == 2 for r in records)
    assert records[-1]["train_config"]["init"] == "demo-base"  # the shipped first stage
    earlier = tmp_path / "stages" / "5-demo-t2v-own" / "demo.safetensors"
    assert records[0]["train_config"]["init"] == str(earlier)

    again = tmp_path / "again"
    argv = shlex.split(records[0]["command"])[2:]  # after "python scripts/train_demo_model.py"
    argv[argv.index("--out") + 1] = str(again)
    run_repo_script("scripts/train_demo_model.py", *argv)
    first, second = (
        load_file(str(tmp_path / "demo.safetensors")),
        load_file(str(again / "demo.safetensors")),
    )
    assert all(torch.equal(first[k], second[k]) for k in first)
