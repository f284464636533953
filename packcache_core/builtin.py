"""Built-in models that need no download: `builtin:<name>`.

What it is: tiny Lumos-1 configs with deterministic weights, built through the same
`build_model` path a real checkpoint takes. What it is not: a trained model (except where a
name says so and ships its weights).

`builtin:tiny-random` uses the real vocabulary (129536 ids, 64000 video codes) at a tiny width,
with weights drawn by the same recipe as the reference fixtures: one generator seeded with the
seed, keys in sorted order, `randn` scaled per kind (norm weights 1 + 0.1x, qk-norm biases 0.1x,
embeddings x, Linear weights x / sqrt(in)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from packcache_core.config import LumosConfig
from packcache_core.model import LumosTransformer

PREFIX = "builtin:"


def random_state_dict(cfg: LumosConfig, seed: int) -> dict[str, torch.Tensor]:
    """Every checkpoint tensor for `cfg` in float32, fully determined by (cfg, seed)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LumosTransformer(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        x = torch.randn(shapes[name], generator=g, dtype=torch.float32)
        if name.endswith("_norm.bias"):
            x = 0.1 * x
        elif name.endswith("norm.weight"):
            x = 1.0 + 0.1 * x
        elif name != "model.embed_tokens.weight":
            x = x / math.sqrt(x.shape[1])
        out[name] = x.contiguous()
    return out


TINY_RANDOM = LumosConfig(
    vocab_size=129536,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _tiny_random() -> tuple[LumosConfig, dict[str, torch.Tensor]]:
    return TINY_RANDOM, random_state_dict(TINY_RANDOM, seed=1234)


# name -> factory of (config, float32 state dict)
REGISTRY: dict[str, Callable[[], tuple[LumosConfig, dict[str, torch.Tensor]]]] = {
    "tiny-random": _tiny_random,
}


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIX)


def builtin_weights(name: str) -> tuple[LumosConfig, dict[str, torch.Tensor]]:
    key = name.removeprefix(PREFIX)
    if key not in REGISTRY:
        raise ValueError(
            f"unknown built-in model {name!r}; available: "
            + ", ".join(PREFIX + k for k in sorted(REGISTRY))
        )
    return REGISTRY[key]()
