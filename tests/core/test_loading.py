"""Checkpoint loading: the happy paths (single file, shards, dtypes, builtin) and every refusal.

What it is: tests of `packcache_core.loading` on tiny checkpoints written to tmp folders (one
layer, hidden 32, the smallest vocabulary that still has video codes). What it is not: a
numerical test of the model (see `test_reference_model.py`).

Invariant: every bad checkpoint raises `CheckpointError` (a `ValueError`) whose message names
the problem; nothing half-loaded is returned.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from packcache_core.builtin import TINY_RANDOM, random_state_dict
from packcache_core.config import LumosConfig
from packcache_core.loading import (
    INDEX_FILE,
    SINGLE_FILE,
    CheckpointError,
    load_checkpoint,
    load_model,
)
from packcache_core.pipeline import Pipeline
from tests.helpers import FIXTURES, write_checkpoint

TINY: dict[str, Any] = dict(
    json.loads((FIXTURES / "lumos_ref" / "config.json").read_text()),
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=1,
    num_key_value_heads=1,
)


@pytest.fixture(scope="module")
def tiny_tensors() -> dict[str, torch.Tensor]:
    return random_state_dict(LumosConfig.from_hf_dict(TINY), seed=0)


@pytest.fixture
def tiny_dir(tmp_path: Path, tiny_tensors: dict[str, torch.Tensor]) -> Path:
    return write_checkpoint(tmp_path / "ckpt", TINY, tiny_tensors)


def write_config(path: Path, config: dict[str, Any]) -> None:
    (path / "config.json").write_text(json.dumps(config))


def write_shards(path: Path, tensors: dict[str, torch.Tensor], n: int = 2) -> list[str]:
    """Replace the single file by `n` shards and an index in the Hugging Face layout."""
    (path / SINGLE_FILE).unlink()
    names = sorted(tensors)
    shards = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map = {}
    for i, shard in enumerate(shards):
        part = {k: tensors[k] for k in names[i::n]}
        save_file(part, str(path / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return shards


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_loads_single_file(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    model = load_checkpoint(tiny_dir, dtype=torch.float32)
    assert model.config == LumosConfig.from_hf_dict(TINY)
    assert not any(p.requires_grad for p in model.parameters())
    for name, t in model.state_dict().items():
        assert torch.equal(t, tiny_tensors[name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_loads_in_requested_dtype(
    tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor], dtype: torch.dtype
) -> None:
    model = load_checkpoint(tiny_dir, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    want = tiny_tensors["lm_head.weight"].to(dtype)
    assert torch.equal(model.lm_head.weight, want)


def test_loads_bf16_file_into_fp32(tmp_path: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    bf16 = {k: v.to(torch.bfloat16) for k, v in tiny_tensors.items()}
    model = load_checkpoint(write_checkpoint(tmp_path, TINY, bf16), dtype=torch.float32)
    assert torch.equal(model.lm_head.weight, bf16["lm_head.weight"].float())


def test_sharded_checkpoint_loads_identically(
    tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor]
) -> None:
    single = load_checkpoint(tiny_dir, dtype=torch.float32)
    write_shards(tiny_dir, tiny_tensors)
    assert not (tiny_dir / SINGLE_FILE).exists()
    assert_same_weights(load_checkpoint(tiny_dir, dtype=torch.float32), single)


def test_vqmodel_keys_are_ignored(tmp_path: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    extra = {
        "model.vqmodel.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
        "model.vqmodel.quantize.embedding.weight": torch.zeros(8, 4),
    }
    model = load_checkpoint(write_checkpoint(tmp_path, TINY, {**tiny_tensors, **extra}))
    assert not any("vqmodel" in k for k in model.state_dict())


# --- the folder and its config --------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_path_is_a_file(tiny_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder"):
        load_checkpoint(tiny_dir / SINGLE_FILE)


def test_no_config(tiny_dir: Path) -> None:
    (tiny_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tiny_dir)


@pytest.mark.parametrize(
    ("text", "message"), [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")]
)
def test_config_not_an_object(tiny_dir: Path, text: str, message: str) -> None:
    (tiny_dir / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tiny_dir)


@pytest.mark.parametrize(
    "field",
    ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"],
)
def test_config_field_missing(tiny_dir: Path, field: str) -> None:
    write_config(tiny_dir, {k: v for k, v in TINY.items() if k != field})
    with pytest.raises(CheckpointError, match=f"missing required field.*{field}"):
        load_checkpoint(tiny_dir)


UNSUPPORTED = {
    "head_dim_48": ({"hidden_size": 48}, "head_dim 48 is not a multiple of 32"),
    "hidden_act": ({"hidden_act": "gelu"}, "'hidden_act' = 'gelu' is unsupported"),
    "mm_rope_false": ({"mm_rope": False}, "'mm_rope' is false"),
    "rope_scaling": ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "'rope_scaling'"),
    "attention_bias": ({"attention_bias": True}, "attention_bias"),
    "no_video_codes": ({"vocab_size": 65536}, "has no video codes"),
    "gqa": (
        {"hidden_size": 96, "num_attention_heads": 3, "num_key_value_heads": 2},
        "not a multiple of num_key_value_heads",
    ),
    "kv_heads_vs_mp": (
        {
            "hidden_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "model_parallel_size": 4,
        },
        "num_key_value_heads 2 is not a multiple of model_parallel_size 4",
    ),
    "wrong_type": ({"num_hidden_layers": "two"}, "'num_hidden_layers' = 'two' is not of type int"),
    "bool_type": ({"swin_norm": "yes"}, "'swin_norm' = 'yes' is not of type bool"),
    "bool_for_int": ({"num_hidden_layers": True}, "'num_hidden_layers' = True is not of type int"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_config(tiny_dir: Path, case: str) -> None:
    override, message = UNSUPPORTED[case]
    write_config(tiny_dir, dict(TINY, **override))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tiny_dir)


# --- the weight files -----------------------------------------------------------------------


def test_no_weights_file(tiny_dir: Path) -> None:
    (tiny_dir / SINGLE_FILE).unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"neither {SINGLE_FILE} nor {INDEX_FILE}")):
        load_checkpoint(tiny_dir)


def test_missing_shard(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    shards = write_shards(tiny_dir, tiny_tensors)
    (tiny_dir / shards[1]).unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"missing: {shards[1]}")):
        load_checkpoint(tiny_dir)


def test_corrupt_index(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    write_shards(tiny_dir, tiny_tensors)
    (tiny_dir / INDEX_FILE).write_text('{"metadata": {}}')  # no weight_map
    with pytest.raises(CheckpointError, match="not a valid safetensors index"):
        load_checkpoint(tiny_dir)


def test_corrupt_shard(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    shards = write_shards(tiny_dir, tiny_tensors)
    (tiny_dir / shards[0]).write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=re.escape(shards[0])):
        load_checkpoint(tiny_dir)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_file(tiny_dir: Path, damage: str) -> None:
    file = tiny_dir / SINGLE_FILE
    data = file.read_bytes()
    file.write_bytes(
        b"this is not a safetensors file" if damage == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tiny_dir)


def test_missing_key(tmp_path: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    name = "model.layers.0.self_attn.k_norm.bias"
    partial = {k: v for k, v in tiny_tensors.items() if k != name}
    with pytest.raises(CheckpointError, match=f"missing 1 tensor.*{re.escape(name)}"):
        load_checkpoint(write_checkpoint(tmp_path, TINY, partial))


def test_unexpected_key(tmp_path: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    extra = {**tiny_tensors, "model.layers.1.mlp.up_proj.weight": torch.zeros(64, 32)}
    with pytest.raises(
        CheckpointError, match=r"1 unexpected tensor.*model\.layers\.1\.mlp\.up_proj"
    ):
        load_checkpoint(write_checkpoint(tmp_path, TINY, extra))


def test_shape_mismatch(tmp_path: Path, tiny_tensors: dict[str, torch.Tensor]) -> None:
    bad = dict(tiny_tensors, **{"model.norm.weight": torch.ones(31)})
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight has shape \(31,\).*\(32,\)"):
        load_checkpoint(write_checkpoint(tmp_path, TINY, bad))


# --- built-in models ------------------------------------------------------------------------


def test_builtin_tiny_random() -> None:
    model = load_model("builtin:tiny-random")
    assert model.config == TINY_RANDOM
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == TINY_RANDOM.n_params
    again = load_model("builtin:tiny-random", dtype=torch.bfloat16)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight.to(torch.bfloat16))


def test_unknown_builtin() -> None:
    with pytest.raises(
        ValueError, match=r"unknown built-in model 'builtin:nope'; available: .*builtin:tiny-random"
    ):
        load_model("builtin:nope")


def test_load_model_passes_paths_to_the_checkpoint_loader(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))


def test_a_checkpoint_folder_must_name_its_video_tokenizer(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="needs its video tokenizer: a Cosmos DV4x8x8 folder"):
        Pipeline.load(str(tiny_dir))
    with pytest.raises(ValueError, match="has 64000 codes but model"):  # named: it goes on
        Pipeline.load(str(tiny_dir), "builtin:patch")  # (to this tiny model's 64-code check)
    with pytest.raises(CheckpointError, match="does not exist"):  # the folder's error first
        Pipeline.load(str(tiny_dir / "missing"))
