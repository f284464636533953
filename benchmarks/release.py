"""Stand-in release folders: a Lumos-1 checkpoint and a Cosmos DV4x8x8 folder, random weights.

What it is: `write_checkpoint_folder`, which writes a checkpoint the way Hugging Face's
`save_pretrained` does (config.json with `torch_dtype`, `model.safetensors`, or shards of at
most `shard_bytes` with `model.safetensors.index.json`), and `write_cosmos_folder`, which
traces `cosmos_net`'s DV4x8x8 (full width by default) into `encoder.jit` / `decoder.jit` with
NVIDIA's config.json. `device_check.py` serves them to measure the whole product at the real
shapes without the weights. What it is not: the published weights (numbers from these say
how fast and how large, never how good).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from packcache_core.builtin import random_state_dict
from packcache_core.config import LumosConfig
from packcache_core.loading import INDEX_FILE, SINGLE_FILE
from packcache_core.video.cosmos_net import DVConfig, export_jit

SAVE_PRETRAINED_SHARD = 5 * 10**9  # transformers' default max_shard_size, "5GB"


def _shards(tensors: dict[str, torch.Tensor], shard_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_checkpoint_folder(
    folder: Path,
    cfg: LumosConfig,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    shard_bytes: int = SAVE_PRETRAINED_SHARD,
) -> Path:
    """Random weights for `cfg` in `dtype`, laid out as `save_pretrained` lays them out."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype) for k, v in random_state_dict(cfg, seed).items()}
    config = cfg.to_hf_dict() | {
        "architectures": ["ChameleonXLLMXForConditionalGeneration"],
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shards = _shards(tensors, shard_bytes)
    if len(shards) == 1:
        save_file(tensors, str(folder / SINGLE_FILE), metadata={"format": "pt"})
        return folder
    weight_map: dict[str, str] = {}
    for i, names in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: tensors[k] for k in names}, str(folder / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, file)
    total = sum(t.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return folder


def write_cosmos_folder(folder: Path, channels: int = 128, seed: int = 0) -> Path:
    """`encoder.jit` and `decoder.jit` traced from DV4x8x8 at `channels` (NVIDIA's: 128)."""
    export_jit(folder, DVConfig(channels=channels), seed=seed)
    (folder / "config.json").write_text(json.dumps({"architectures": ["CosmosTokenizer"]}))
    return folder
