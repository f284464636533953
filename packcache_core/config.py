"""Model configuration for the Lumos-1 transformer (Chameleon decoder with MM-RoPE).

This is the subset of Hugging Face's `config.json` that changes the numbers Lumos-1 computes.
It is not a general Chameleon config: fields that only matter to training or to the unused
VQ-GAN (`vq_config`, `vocabulary_map`, `z_loss_weight`, ...) are read and ignored.

Invariant: a `LumosConfig` that constructs is one this package can run exactly; anything else
raises `ValueError` that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# Chameleon's text vocabulary; Cosmos code c has LLM id CODE_OFFSET + c.
CODE_OFFSET = 65536
MAX_CODES = 64000
# Lumos-1's resolution buckets, by nominal square side (`image.crop_size_list`): 352 for the
# 256p checkpoints (`*/stage-2-joint`), 528 for 384p (the reference's default), 656 above.
TARGET_SIZES = (352, 528, 656)
# Field annotation -> the JSON value types it accepts.
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool}


@dataclass(frozen=True)
class LumosConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    swin_norm: bool = False
    model_parallel_size: int = 1
    pad_token_id: int = 1
    attention_bias: bool = False
    mlp_bias: bool = False
    mask_image_logits: bool = False

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "model_parallel_size",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"config field {name!r} must be positive, got {getattr(self, name)}"
                )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads} (GQA)"
            )
        if self.head_dim % 32:
            # MM-RoPE cuts head_dim/2 frequencies into groups of 16 (t, h, w interleaved).
            raise ValueError(
                f"head_dim {self.head_dim} is not a multiple of 32, which MM-RoPE requires"
            )
        for heads in ("num_attention_heads", "num_key_value_heads"):
            if getattr(self, heads) % self.model_parallel_size:
                # q_norm and k_norm each repeat their [mp, D] affine rows heads/mp times
                raise ValueError(
                    f"{heads} {getattr(self, heads)} is not a multiple of "
                    f"model_parallel_size {self.model_parallel_size} (qk-norm affine rows)"
                )
        if self.vocab_size <= CODE_OFFSET:
            raise ValueError(
                f"vocab_size {self.vocab_size} has no video codes (must exceed {CODE_OFFSET})"
            )
        if self.attention_bias or self.mlp_bias:
            raise ValueError("attention_bias / mlp_bias are not supported (Lumos-1 has none)")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ValueError("rope_theta and rms_norm_eps must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def n_codes(self) -> int:
        """Number of video codes the output head can produce (ids CODE_OFFSET + [0, n_codes))."""
        return min(self.vocab_size - CODE_OFFSET, MAX_CODES)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes of K and V for one token over all layers, for one sequence (one CFG branch)."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes

    @property
    def n_params(self) -> int:
        h, i, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        kv = self.num_key_value_heads * self.head_dim
        per_layer = (
            2 * h * h
            + 2 * h * kv
            + 3 * h * i
            + 2 * h
            + 4 * self.model_parallel_size * self.head_dim
        )
        return 2 * self.vocab_size * h + n * per_layer + h

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> LumosConfig:
        """Build from a Hugging Face `config.json` dict, naming any missing or unsupported field."""
        required = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        missing = [k for k in required if k not in raw]
        if missing:
            raise ValueError(f"config.json is missing required field(s): {', '.join(missing)}")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(
                f"config field 'hidden_act' = {raw['hidden_act']!r} is unsupported (silu)"
            )
        if raw.get("rope_scaling") not in (None, {}):
            raise ValueError(
                f"config field 'rope_scaling' = {raw['rope_scaling']!r} is unsupported"
            )
        if raw.get("mm_rope") is False:
            raise ValueError(
                "config field 'mm_rope' is false: this is not a Lumos-1 (MM-RoPE) model"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: raw[k] for k in known if k in raw and raw[k] is not None}
        kwargs.setdefault("num_key_value_heads", raw["num_attention_heads"])
        for f in fields(cls):  # name the field; bool is an int subclass, so it is checked apart
            value, kind = kwargs.get(f.name), _JSON_TYPES[str(f.type)]
            if value is not None and (
                not isinstance(value, kind) or (isinstance(value, bool) and f.type != "bool")
            ):
                raise ValueError(f"config field {f.name!r} = {value!r} is not of type {f.type}")
        try:
            return cls(**kwargs)
        except TypeError as e:  # wrong value types reach here
            raise ValueError(f"config.json has a field of the wrong type: {e}") from e

    def to_hf_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(
            model_type="chameleon",
            mm_rope=True,
            hidden_act="silu",
            rope_scaling=None,
            tie_word_embeddings=False,
        )
        return out
