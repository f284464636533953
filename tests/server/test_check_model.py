"""`packcache check-model` on generated folders: a good one passes, each broken one is named.

The checkpoint is written the way `save_pretrained` writes one (config.json, two safetensors
shards with `model.safetensors.index.json`, bf16) at `builtin:tiny-random`'s shape with the real
vocabulary; the Cosmos folder is this project's own export of DV4x8x8 at 1/16 width (NVIDIA's
files cannot be fetched here); the text tokenizer is a word-level stand-in with Chameleon's
anchor ids, so the test vector is swapped for one it encodes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from packcache_core.builtin import TINY_RANDOM, random_state_dict
from packcache_core.video.cosmos_net import DVConfig, export_jit
from server.entry import check_model
from server.entry.cli import main
from tests.core.test_text import write_fake_chameleon

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)


def write_pretrained(folder: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """As `save_pretrained` writes a sharded checkpoint."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = sorted(tensors)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("release")
    model = root / "Lumos-1" / "1B" / "stage-2-joint-384p"
    tensors = {k: v.to(torch.bfloat16) for k, v in random_state_dict(TINY_RANDOM, 1).items()}
    config = TINY_RANDOM.to_hf_dict() | {"torch_dtype": "bfloat16", "architectures": ["X"]}
    write_pretrained(model, tensors, config)
    write_fake_chameleon(model / "tokenizer.json")
    cosmos = root / "Cosmos-Tokenizer-DV4x8x8"
    export_jit(cosmos, DVConfig(channels=8), seed=0)
    (cosmos / "config.json").write_text(json.dumps({"architectures": ["CosmosTokenizer"]}))
    return {"model": model, "cosmos": cosmos}


@pytest.fixture(autouse=True)
def fake_vector(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(check_model, "TEXT_VECTOR", "hello world")
    monkeypatch.setattr(check_model, "TEXT_VECTOR_IDS", [20000, 20001])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))


def copy(parts: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    out = {}
    for key, src in parts.items():
        out[key] = tmp_path / src.relative_to(src.parents[2] if key == "model" else src.parent)
        shutil.copytree(src, out[key])
    return out


def run(parts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-model", str(parts["model"]), "--tokenizer", str(parts["cosmos"])])
    return code, capsys.readouterr().out


def test_good_folders_pass(parts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(parts, capsys)
    assert code == 0, out
    assert "[FAIL]" not in out
    for check in ("config", "tensors", "cosmos", "text tokenizer", "generation"):
        assert f"[OK  ] {check}" in out, check
    assert "[OK  ] generation" in out and "(5, 64, 64, 3)" in out  # 4 new RGB frames + 1


def drop_shard(parts: dict[str, Path]) -> None:
    (parts["model"] / "model-00002-of-00002.safetensors").unlink()


def rename_tensor(parts: dict[str, Path]) -> None:
    index_file = parts["model"] / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    file = index["weight_map"].pop("model.norm.weight")
    tensors = load_file(str(parts["model"] / file))
    tensors["model.final_norm.weight"] = tensors.pop("model.norm.weight")
    save_file(tensors, str(parts["model"] / file), metadata={"format": "pt"})
    index["weight_map"]["model.final_norm.weight"] = file
    index_file.write_text(json.dumps(index))


def wrong_vocab(parts: dict[str, Path]) -> None:
    config_file = parts["model"] / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"vocab_size": 65600}))


def cosmos_architectures(parts: dict[str, Path]) -> None:
    (parts["cosmos"] / "config.json").write_text('{"architectures": ["VQGAN"]}')


def other_cosmos_release(parts: dict[str, Path]) -> None:
    renamed = parts["cosmos"].with_name("Cosmos-0.1-Tokenizer-DV8x16x16")
    parts["cosmos"] = parts["cosmos"].rename(renamed)


def no_text_tokenizer(parts: dict[str, Path]) -> None:
    (parts["model"] / "tokenizer.json").unlink()


FAULTS = [
    (drop_shard, "tensors", "missing: model-00002-of-00002.safetensors"),
    (rename_tensor, "tensors", "missing 1 tensor(s): model.norm.weight"),
    (wrong_vocab, "vocab", "vocab_size 65600: Lumos-1 has 129536"),
    (cosmos_architectures, "cosmos", "architectures ['VQGAN']"),
    (other_cosmos_release, "cosmos", "named Cosmos DV8x16x16, another tokenizer"),
    (no_text_tokenizer, "text tokenizer", "--text-tokenizer"),
]


@pytest.mark.parametrize(("fault", "check", "message"), FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_each_broken_folder_is_named(
    parts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fault: Callable[[dict[str, Path]], None],
    check: str,
    message: str,
) -> None:
    broken = copy(parts, tmp_path)
    fault(broken)
    code, out = run(broken, capsys)
    assert code == 1
    assert f"[FAIL] {check}" in out and message in out, out
    assert "[WARN] generation      skipped: an earlier check failed" in out


def test_256p_folder_name_warns(
    parts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    renamed = copy(parts, tmp_path)
    renamed["model"] = renamed["model"].rename(renamed["model"].with_name("stage-2-joint"))
    code, out = run(renamed, capsys)
    assert code == 0, out  # a warning, not a failure
    assert "[WARN] target size" in out and "--target-size 352" in out
