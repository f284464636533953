"""Video tokenizers (image -> codes, codes -> RGB frames) and how to pick one by name.

What it is: `load_video_tokenizer("builtin:patch" | "<folder with encoder.jit, decoder.jit>")`
and the `VideoTokenizer` / `StreamDecoder` protocols. What it is not: the LLM's view of codes
(id = 65536 + code lives with the token layout) or video file writing (`video.output`).

Key invariant: every tokenizer returned here has Cosmos DV4x8x8's layout: 8x8 pixels per code,
4 RGB frames per latent frame after the first, and 64000 codes (only `builtin:patch-small`,
made for the built-in demo model, has fewer: 400).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from packcache_core.video.base import StreamDecoder, VideoTokenizer
from packcache_core.video.builtin import PatchTokenizer, SmallPatchTokenizer
from packcache_core.video.cosmos import CosmosTokenizer, load_cosmos

BUILTIN_PREFIX = "builtin:"

# builtin name -> factory(device); builtins compute in float32 whatever dtype is asked for.
BUILTINS: dict[str, Callable[[torch.device], VideoTokenizer]] = {
    "patch": PatchTokenizer,
    "patch-small": SmallPatchTokenizer,  # 400 codes, for the built-in demo model
}


def load_video_tokenizer(
    name_or_path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> VideoTokenizer:
    """`builtin:<name>` for a built-in tokenizer, else a local Cosmos DV4x8x8 folder.

    `dtype` applies to Cosmos only (None: bf16, or float32 on the CPU); built-ins use float32.

    Raises:
        ValueError: an unknown builtin name, or a Cosmos file that is not a DV4x8x8 graph.
        FileNotFoundError: the Cosmos folder or one of its two files is missing.
    """
    device = torch.device(device)
    text = str(name_or_path)
    if text.startswith(BUILTIN_PREFIX):
        name = text.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTINS:
            known = ", ".join(BUILTIN_PREFIX + n for n in sorted(BUILTINS))
            raise ValueError(f"unknown built-in video tokenizer {text!r}; known: {known}")
        return BUILTINS[name](device)
    return load_cosmos(name_or_path, device=device, dtype=dtype)


__all__ = [
    "BUILTINS",
    "CosmosTokenizer",
    "PatchTokenizer",
    "SmallPatchTokenizer",
    "StreamDecoder",
    "VideoTokenizer",
    "load_cosmos",
    "load_video_tokenizer",
]
