"""Settings for real checkpoints (issue 28, item 3): the target size bucket and float16."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from packcache_core.config import TARGET_SIZES
from packcache_core.pipeline import VideoParams
from server.entry.runtime import load_pipeline
from server.settings import Settings


@pytest.mark.parametrize("size", TARGET_SIZES)
def test_target_size_is_one_of_the_buckets(size: int) -> None:
    assert Settings(target_size=size).target_size == size
    assert Settings().target_size is None  # the pipeline's: 528 for checkpoints


def test_other_target_sizes_are_refused() -> None:
    with pytest.raises(ValidationError, match="target_size"):
        Settings(target_size=400)


def test_the_served_pipeline_gets_the_target_size() -> None:
    settings = Settings(model="builtin:tiny-random", target_size=352)
    pipeline = load_pipeline(settings, torch.device("cpu"), torch.float32)
    assert pipeline.target_size == 352
    assert pipeline.output_size(1280, 720, VideoParams("p")) == (448, 256)  # 256p, not 384p
