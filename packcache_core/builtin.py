"""Built-in models that need no download: `builtin:<name>`.

What it is: tiny Lumos-1 configs with deterministic weights, built through the same
`build_model` path a real checkpoint takes. What it is not: a trained model (except where a
name says so and ships its weights).

`builtin:demo` is trained (on synthetic clips with known motion, see `packcache_core/demo/`)
and ships bf16 weights and a model card in `packcache_core/builtin/`; its card also gives the
video tokenizer, frame size and sampling settings it works with (`model_defaults`,
`model_tokenizer`).

`builtin:tiny-random` uses the real vocabulary (129536 ids, 64000 video codes) at a tiny width,
with weights drawn by the same recipe as the reference fixtures: one generator seeded with the
seed, keys in sorted order, `randn` scaled per kind (norm weights 1 + 0.1x, qk-norm biases 0.1x,
embeddings x, Linear weights x / sqrt(in)).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch

from packcache_core.config import LumosConfig
from packcache_core.generate import GenerationDefaults, SamplingConfig
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


def _trained(name: str) -> Callable[[], tuple[LumosConfig, dict[str, torch.Tensor]]]:
    def load() -> tuple[LumosConfig, dict[str, torch.Tensor]]:
        from packcache_core.demo.card import WEIGHTS_DIR, load_demo

        return load_demo(WEIGHTS_DIR, name)

    return load


@functools.cache
def _read_card(folder: Path, name: str) -> tuple[str, GenerationDefaults]:
    from packcache_core.demo.card import read_card

    c = read_card(folder, name)
    return c.tokenizer, c.defaults


def _card_of(name: str) -> Callable[[], tuple[str, GenerationDefaults]]:
    def card() -> tuple[str, GenerationDefaults]:
        from packcache_core.demo import card

        return _read_card(card.WEIGHTS_DIR, name)  # read once per folder

    return card


# Trained on synthetic clips; each ships packcache_core/builtin/<name>.{json,safetensors}.
# demo-base: 6 latent frames of pans, zooms and objects at absolute positions; demo: from
# demo-base, also trained on camera paths that turn, seen as its card's cache policy holds
# them (`packcache_core/demo/views.py`); demo-long: up to 16 latent frames whose content needs
# memory (`packcache_core/demo/long.py`), the quality benchmark's test bed.
TRAINED = ("demo", "demo-base", "demo-long")
# name -> factory of (config, float32 state dict)
REGISTRY: dict[str, Callable[[], tuple[LumosConfig, dict[str, torch.Tensor]]]] = {
    "tiny-random": _tiny_random,
    **{name: _trained(name) for name in TRAINED},
}
# name -> (video tokenizer, what the model recommends where a request says nothing)
CARDS: dict[str, Callable[[], tuple[str, GenerationDefaults]]] = {
    name: _card_of(name) for name in TRAINED
}
# Built-in models without a card: short clips, few steps (they are for tests and smoke runs)
QUICK = GenerationDefaults(SamplingConfig(steps=8), latent_frames=3)
QUICK_TOKENIZER = "builtin:patch"


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


def _card(name: str) -> tuple[str | None, GenerationDefaults]:
    """(video tokenizer, defaults) of a model: a built-in model's card, `QUICK` for the other
    built-ins, (None, `GenerationDefaults()`) for a checkpoint folder: Lumos-1's published
    sampling settings with the registry's default cache policy, the paper's `packcache` (the
    official loop keeps the full cache; `full` reproduces it)."""
    if not is_builtin(name):
        return None, GenerationDefaults()
    card = CARDS.get(name.removeprefix(PREFIX))
    return card() if card is not None else (QUICK_TOKENIZER, QUICK)


def model_defaults(name: str) -> GenerationDefaults:
    """What a model does where a request says nothing: a built-in model's card, `QUICK` for
    the other built-ins, for a checkpoint folder Lumos-1's published sampling settings and the
    paper's `packcache` (a bounded cache; the official loop's full cache is `full`)."""
    return _card(name)[1]


def model_tokenizer(name: str) -> str | None:
    """The video tokenizer a built-in model goes with (its card's, else `builtin:patch`); None
    for a checkpoint folder, whose Cosmos tokenizer is a separate download."""
    return _card(name)[0]
