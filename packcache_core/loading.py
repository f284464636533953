"""Load a Lumos-1 checkpoint folder (Hugging Face layout) without transformers.

What it is: `config.json` + `model.safetensors`, or shards listed in
`model.safetensors.index.json`, memory-mapped with safetensors and assigned into a model built
on the meta device (no second copy when dtype and device already match). Keys use the official
names; `model.vqmodel.*` (Chameleon's unused VQ-GAN) is ignored. What it is not: a downloader.

Invariant: a model is returned only if every expected tensor was found with the expected shape
and nothing unexpected was present; otherwise `CheckpointError` names the problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from packcache_core.config import LumosConfig
from packcache_core.model import LumosTransformer

IGNORED_PREFIXES = ("model.vqmodel.",)
_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says which file and why."""


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def read_raw_config(path: Path) -> dict[str, Any]:
    """config.json as a dict (CheckpointError if it is missing or not a JSON object)."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.json in the checkpoint folder")
    try:
        raw = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_file}: expected a JSON object")
    return raw


def read_config(path: Path) -> LumosConfig:
    raw = read_raw_config(path)
    try:
        return LumosConfig.from_hf_dict(raw)
    except ValueError as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from e


def weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> file holding it."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        files = {name: path / fname for name, fname in weight_map.items()}
        missing = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if missing:
            raise CheckpointError(
                f"{path}: shard(s) listed in {INDEX_FILE} are missing: {', '.join(missing)}"
            )
        return files
    single = path / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    try:
        with safe_open(single, framework="pt") as f:
            return {name: single for name in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{single}: not a readable safetensors file ({e})") from e


def build_model(
    cfg: LumosConfig,
    tensors: Mapping[str, torch.Tensor],
    device: torch.device | str,
    dtype: torch.dtype,
) -> LumosTransformer:
    """Assign `tensors` (official names) into a fresh model; strict about names and shapes."""
    with torch.device("meta"):
        model = LumosTransformer(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    names = [k for k in tensors if not k.startswith(IGNORED_PREFIXES)]
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in names if k not in expected]
    if missing:
        raise CheckpointError(
            f"checkpoint is missing {len(missing)} tensor(s): {_listing(missing)}"
        )
    if unexpected:
        raise CheckpointError(
            f"checkpoint has {len(unexpected)} unexpected tensor(s): {_listing(unexpected)}"
        )
    state = {}
    for k, shape in expected.items():
        t = tensors[k]  # read once (memory-mapped for checkpoints on disk)
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(
                f"tensor {k} has shape {tuple(t.shape)}, config expects {tuple(shape)}"
            )
        state[k] = t.to(device=device, dtype=dtype)
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


class _LazyTensors(Mapping[str, torch.Tensor]):
    """Memory-mapped tensors across shards, read one at a time on access."""

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files
        self._handles: dict[Path, object] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        file = self._files[name]
        try:  # a corrupt shard fails at open, a bad entry at get_tensor
            if file not in self._handles:
                self._handles[file] = safe_open(file, framework="pt")
            return self._handles[file].get_tensor(name)  # type: ignore[attr-defined]
        except Exception as e:
            raise CheckpointError(f"{file}: cannot read tensor {name} ({e})") from e

    def __contains__(self, name: object) -> bool:
        return name in self._files  # without reading the tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def trained_dtype(path: Path) -> torch.dtype | None:
    """The dtype a checkpoint folder's weights were saved in: config.json's `torch_dtype`, else
    the first tensor's dtype in the safetensors header (None when neither can be read)."""
    named = read_raw_config(path).get("torch_dtype")
    if isinstance(named, str) and isinstance(getattr(torch, named, None), torch.dtype):
        dtype: torch.dtype = getattr(torch, named)
        return dtype
    files = weight_files(path)
    if not files:
        return None
    name, file = next(iter(files.items()))
    with safe_open(file, framework="pt") as f:
        stored = f.get_slice(name).get_dtype()  # e.g. "BF16"
    return _SAFETENSORS_DTYPES.get(stored)


def check_float16(model: str, dtype: torch.dtype, allow: bool = False) -> None:
    """Refuses float16 for a checkpoint saved in bfloat16 unless `allow`: float16 keeps 10
    mantissa bits but only 5 exponent bits (largest value 65504), and bf16-trained activations
    are not bounded to that range, so they can overflow to inf. Built-in models are exempt.

    Raises:
        CheckpointError: float16 asked for a bf16 checkpoint, not allowed.
    """
    from packcache_core.builtin import is_builtin

    if dtype != torch.float16 or allow or is_builtin(model):
        return
    if trained_dtype(Path(model)) == torch.bfloat16:
        raise CheckpointError(
            f"{model}: its weights are bfloat16 (trained in bf16); float16's range (largest "
            "value 65504) can overflow their activations. Use bfloat16 or float32, or allow "
            "float16 explicitly (PACKCACHE_ALLOW_FLOAT16=true, --allow-float16)"
        )


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16
) -> LumosTransformer:
    """Load an official Lumos-1 checkpoint folder (e.g. `Lumos-1/3B/stage-2-joint-384p`)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path does not exist: {path}")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path is not a folder: {path}")
    cfg = read_config(path)
    return build_model(cfg, _LazyTensors(weight_files(path)), device, dtype)


def load_model(
    name_or_path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LumosTransformer:
    """`builtin:<name>` or a checkpoint folder."""
    from packcache_core.builtin import builtin_weights, is_builtin

    if is_builtin(name_or_path):
        cfg, tensors = builtin_weights(name_or_path)
        return build_model(cfg, tensors, device, dtype)
    return load_checkpoint(name_or_path, device, dtype)
