"""Item 3 of issue 28 in the core: float16 refused for bf16 weights, grouped K/V on CUDA in fp32.

What it is: `loading.check_float16` on checkpoint folders written in bf16 and fp32 (with and
without `torch_dtype` in config.json), and `model.expand_kv_heads`, the rule that keeps a call
with shared K/V heads off CUDA's math kernel; the CUDA branch is a pure function of device type,
dtype and mask, so it is checked here without a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from packcache_core.builtin import TINY_RANDOM, random_state_dict
from packcache_core.loading import CheckpointError, check_float16, trained_dtype
from packcache_core.model import expand_kv_heads
from tests.helpers import write_checkpoint

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _folder(tmp_path: Path, dtype: torch.dtype, named: bool = True) -> Path:
    tensors = {k: v.to(dtype) for k, v in random_state_dict(TINY_RANDOM, 1).items()}
    folder = write_checkpoint(tmp_path / str(dtype), TINY_RANDOM.to_hf_dict(), tensors)
    if not named:  # config.json without torch_dtype: the safetensors header says it
        config = json.loads((folder / "config.json").read_text())
        del config["torch_dtype"]
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("named", [True, False])
def test_float16_is_refused_for_bf16_weights_unless_allowed(tmp_path: Path, named: bool) -> None:
    folder = _folder(tmp_path, torch.bfloat16, named)
    assert trained_dtype(folder) == torch.bfloat16
    with pytest.raises(CheckpointError, match=r"bfloat16.*65504.*allow float16 explicitly"):
        check_float16(str(folder), torch.float16)
    check_float16(str(folder), torch.float16, allow=True)  # asked for explicitly
    check_float16(str(folder), torch.bfloat16)
    check_float16(str(folder), torch.float32)


def test_float16_is_accepted_for_float32_weights_and_builtins(tmp_path: Path) -> None:
    folder = _folder(tmp_path, torch.float32, named=False)
    assert trained_dtype(folder) == torch.float32
    check_float16(str(folder), torch.float16)
    check_float16("builtin:demo", torch.float16)


@pytest.mark.parametrize(
    ("device", "dtype", "masked", "expand"),
    [
        (CUDA, torch.bfloat16, False, False),  # flash takes shared heads
        (CUDA, torch.float16, False, False),
        (CUDA, torch.float32, False, True),  # no flash in fp32: mem-efficient needs them whole
        (CUDA, torch.bfloat16, True, True),  # a mask rules flash out
        (CUDA, torch.float32, True, True),
        (CPU, torch.float32, False, False),
        (CPU, torch.float32, True, False),
    ],
)
def test_grouped_kv_heads_expand_where_cuda_would_take_the_math_kernel(
    device: torch.device, dtype: torch.dtype, masked: bool, expand: bool
) -> None:
    assert expand_kv_heads(device, dtype, masked) is expand
