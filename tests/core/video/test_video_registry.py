"""`load_video_tokenizer`: builtin names and Cosmos folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from packcache_core.video import load_video_tokenizer
from packcache_core.video.builtin import PatchTokenizer
from packcache_core.video.cosmos import CosmosTokenizer

from .conftest import CosmosExport


def test_builtin_name() -> None:
    tokenizer = load_video_tokenizer("builtin:patch", device="cpu")
    assert isinstance(tokenizer, PatchTokenizer) and tokenizer.name == "builtin:patch"


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown built-in video tokenizer 'builtin:vae'.*builtin:patch"
    ):
        load_video_tokenizer("builtin:vae")


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_folder_path_loads_cosmos(cosmos_export: CosmosExport) -> None:
    tokenizer = load_video_tokenizer(str(cosmos_export.folder), device="cpu")
    assert isinstance(tokenizer, CosmosTokenizer)
    assert tokenizer.dtype == torch.float32  # the CPU default
    assert tokenizer.encode_image(torch.zeros(32, 32, 3, dtype=torch.uint8)).shape == (4, 4)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_video_tokenizer(tmp_path / "nowhere")
