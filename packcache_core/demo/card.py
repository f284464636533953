"""The demo model's shipped files: a model card (JSON) and compact bf16 weights (safetensors).

What it is: `ModelCard` (config, tokenizer, frame size, trained length, recommended sampling,
training provenance), `pack_state` which keeps only the vocabulary rows the demo model uses,
and `load_demo` which rebuilds a full-vocabulary float32 state dict for `build_model`. What it is
not: a loader of official checkpoints (`loading.py`) or the registry (`builtin.py`).

The file stores `model.embed_tokens.weight` for the ids in `model.embed_tokens.ids` only (text
bytes, structural and n-grid tokens, codes) and `lm_head.weight` for the code ids only (the
sampler never reads another row); every other row of the full (65536 + n_codes, hidden) matrices
is zero. That is ~690 + 400 rows instead of 2 x 65936, so the file is a few MB.

Invariant: `load_demo()` returns exactly the tensors `build_model` expects for `card.config`,
and the rows that were stored come back bit for bit (bf16 -> float32 is exact).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from packcache_core.config import CODE_OFFSET, LumosConfig
from packcache_core.generate import GenerationDefaults, SamplingConfig
from packcache_core.model import LumosTransformer
from packcache_core.policy import DEFAULT_POLICY

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "builtin"


def use_weights_dir(folder: Path) -> None:
    """`builtin:<name>` loads its weights and card from `folder` (a training run's `--out`)
    from now on, instead of the shipped ones: how benchmarks measure a snapshot before it
    ships (a model loaded before keeps what it loaded)."""
    global WEIGHTS_DIR
    WEIGHTS_DIR = folder


def snapshot_record(folder: Path, name: str = "demo") -> dict[str, Any]:
    """What a benchmark's JSON says of a snapshot it measured (`use_weights_dir`): the folder
    and the command its card records (read at call time, so it travels with the results)."""
    return {"folder": str(folder), "command": read_card(folder, name).training.get("command")}


def card_file(name: str = "demo") -> str:
    return f"{name}.json"


def weights_file(name: str = "demo") -> str:
    return f"{name}.safetensors"


CARD_FILE, WEIGHTS_FILE = card_file(), weights_file()  # builtin:demo's
EMBED, EMBED_IDS, HEAD = "model.embed_tokens.weight", "model.embed_tokens.ids", "lm_head.weight"


@dataclass(frozen=True)
class ModelCard:
    """What a user of `builtin:demo` needs besides the weights."""

    config: LumosConfig
    tokenizer: str  # the video tokenizer it was trained with
    defaults: GenerationDefaults  # frame size, trained length, sampling that suits it
    fps: int
    # Provenance for people (command, seed, time, loss); no code reads it.
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = self.defaults
        out = {
            "config": self.config.to_hf_dict(),
            "tokenizer": self.tokenizer,
            "text_tokenizer": "builtin:bytes",
            "size": list(d.size) if d.size else None,
            "latent_frames": d.latent_frames,
            "fps": self.fps,
            "sampling": asdict(d.sampling),
            "cache_policy": {"name": d.cache_policy, "params": d.policy_params},
            "training": self.training,
        }
        return json.dumps(out, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        size = (int(raw["size"][0]), int(raw["size"][1])) if raw.get("size") else None
        policy = raw.get("cache_policy", {"name": DEFAULT_POLICY, "params": {}})
        defaults = GenerationDefaults(
            SamplingConfig(**raw["sampling"]),
            size,
            raw["latent_frames"],
            policy["name"],
            policy["params"],
        )
        config = LumosConfig.from_hf_dict(raw["config"])
        return cls(config, raw["tokenizer"], defaults, raw["fps"], raw.get("training", {}))


def pack_state(model: LumosTransformer, vocab: torch.Tensor) -> dict[str, torch.Tensor]:
    """bf16 tensors to ship from a compact training model (embedding rows = `vocab`, output
    head rows = the codes), with the embedding's ids alongside."""
    out = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    assert out[EMBED].shape[0] == vocab.numel(), "embedding rows must match the vocabulary"
    out[EMBED_IDS] = vocab.to(torch.int64).contiguous()
    return out


def unpack_state(cfg: LumosConfig, packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full-vocabulary float32 state dict from packed tensors (absent rows are zero)."""
    state = {k: v.float() for k, v in packed.items() if k not in (EMBED, EMBED_IDS, HEAD)}
    embed = torch.zeros(cfg.vocab_size, cfg.hidden_size)
    embed[packed[EMBED_IDS]] = packed[EMBED].float()
    head = torch.zeros(cfg.vocab_size, cfg.hidden_size)
    head[CODE_OFFSET : CODE_OFFSET + packed[HEAD].shape[0]] = packed[HEAD].float()
    state[EMBED], state[HEAD] = embed, head
    return state


def save_demo(
    card: ModelCard, packed: dict[str, torch.Tensor], folder: Path = WEIGHTS_DIR, name: str = "demo"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(packed, str(folder / weights_file(name)), metadata={"format": "pt"})
    (folder / card_file(name)).write_text(card.to_json())


def read_card(folder: Path = WEIGHTS_DIR, name: str = "demo") -> ModelCard:
    path = folder / card_file(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the demo model ships with the package "
            "(or run scripts/train_demo_model.py to make it)"
        )
    return ModelCard.from_json(path.read_text())


def load_demo(
    folder: Path = WEIGHTS_DIR, name: str = "demo"
) -> tuple[LumosConfig, dict[str, torch.Tensor]]:
    """(config, float32 full state dict) of `builtin:<name>` from its shipped files."""
    card = read_card(folder, name)
    return card.config, unpack_state(card.config, load_file(str(folder / weights_file(name))))
