"""Benchmark configurations: model shape, latent grid, prompt length, clip length, steps.

What it is: `BenchConfig` and `CONFIGS`, plus the one conditioning image and prompt every
policy of a run sees (`conditioning`). What it is not: a trained model; every config uses
random weights (`builtin.random_state_dict`), because speed and cache behaviour do not depend
on what the weights learned.

Every config keeps Lumos-1's real vocabulary (129536 ids, 64000 video codes), so the output
head and the sampler cost what they cost in Lumos-1.

Shapes:
- `quick`: tiny, for a CI smoke run of a few seconds.
- `paper-shaped`: a CPU config sized so that, with the full cache at the last of 13 latent
  frames, attention takes about the share of the whole denoising step that it takes in the
  paper's setting (~75%). Why this shape is in `cache_policies.py`'s docstring.
- `lumos-1b`, `lumos-3b`: the Lumos-1 shapes at 672x384 (48 x 84 latent grid) for GPU runs.
  The repo does not publish them; we assume Llama-3.2 1B/3B widths and depths with Chameleon's
  vocabulary (Lumos-1 says it keeps the LLM architecture; the 3B shape gives 3.6B parameters
  with the untied 129536-id head, the size reported for Lumos-1 3B). head_dim is 64 and 128,
  multiples of 32 as MM-RoPE needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from packcache_core.config import LumosConfig
from packcache_core.layout import SEP
from packcache_core.video import load_video_tokenizer

VOCAB = 129536  # 65536 Chameleon ids + 64000 Cosmos codes
TEXT_IDS = (100, 8000)  # plain text ids: no BOS, SEP, frame or video marker in this range


@dataclass(frozen=True)
class BenchConfig:
    name: str
    model: LumosConfig
    grid: tuple[int, int]  # latent (h, w)
    text_tokens: int  # BOS + text + SEP of the conditional branch
    latent_frames: int  # conditioning frame included (13 = 48 RGB frames)
    steps: int  # denoising steps per frame
    device: str
    dtype: torch.dtype

    @property
    def frame_tokens(self) -> int:
        h, w = self.grid
        return 4 + h * (w + 1)

    def shape(self) -> dict[str, Any]:
        """The model and clip shape, for the `config` of a results file."""
        m = self.model
        return {
            "name": self.name,
            "hidden_size": m.hidden_size,
            "intermediate_size": m.intermediate_size,
            "layers": m.num_hidden_layers,
            "heads": m.num_attention_heads,
            "kv_heads": m.num_key_value_heads,
            "vocab_size": m.vocab_size,
            "grid": list(self.grid),
            "frame_tokens": self.frame_tokens,
            "text_tokens": self.text_tokens,
            "latent_frames": self.latent_frames,
            "steps": self.steps,
        }

    def describe(self) -> str:
        """The same, in one line for a script's log."""
        m, (h, w) = self.model, self.grid
        return (
            f"config {self.name}: hidden {m.hidden_size}, {m.num_hidden_layers} layers, "
            f"{m.num_attention_heads} heads ({m.num_key_value_heads} kv), vocab {m.vocab_size}, "
            f"grid {h}x{w} ({self.frame_tokens} tokens/frame), {self.latent_frames} latent "
            f"frames, T={self.steps}"
        )


def _model(hidden: int, inter: int, layers: int, heads: int, kv: int) -> LumosConfig:
    return LumosConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
    )


def _lumos(name: str, model: LumosConfig) -> BenchConfig:
    """A Lumos-1 shape at 672x384 (48 x 84 codes), 13 latent frames, T = 50, bf16 on CUDA."""
    return BenchConfig(name, model, (48, 84), 200, 13, 50, "cuda", torch.bfloat16)


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        BenchConfig("quick", _model(64, 172, 2, 2, 2), (8, 12), 16, 6, 2, "cpu", torch.float32),
        BenchConfig(
            "paper-shaped",
            _model(256, 688, 16, 4, 4),  # Chameleon's 2.6875x MLP ratio
            (24, 40),  # 988 tokens per frame
            64,  # ~5% of a frame, as a long caption is of a 4084-token frame
            13,
            4,
            "cpu",
            torch.float32,
        ),
        _lumos("lumos-1b", _model(2048, 8192, 16, 32, 8)),
        _lumos("lumos-3b", _model(3072, 8192, 28, 24, 8)),
    )
}


def synthetic_image(height: int, width: int) -> torch.Tensor:
    """(H, W, 3) uint8 landscape: sky gradient, a sun, two hills, a little texture."""
    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None, :].expand(height, width)
    sky = torch.stack([0.35 + 0.3 * y, 0.55 + 0.25 * y, 0.95 - 0.2 * y])  # (3, H, W)
    sun = ((x - 0.75) ** 2 + ((y - 0.25) * height / width) ** 2 < 0.006).float()
    img = sky * (1 - sun) + torch.tensor([1.0, 0.9, 0.5])[:, None, None] * sun
    for base, amp, freq, color in (
        (0.62, 0.08, 5.0, (0.2, 0.5, 0.2)),
        (0.8, 0.05, 9.0, (0.1, 0.3, 0.1)),
    ):
        hill = (y > base + amp * torch.sin(freq * x * math.pi)).float()
        img = img * (1 - hill) + torch.tensor(color)[:, None, None] * hill
    g = torch.Generator().manual_seed(0)
    img = img + 0.03 * torch.randn(1, height, width, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def conditioning(cfg: BenchConfig, seed: int = 0) -> tuple[list[int], torch.Tensor]:
    """(prompt ids, (h, w) codes of the conditioning image), the same for every policy."""
    h, w = cfg.grid
    codes = load_video_tokenizer("builtin:patch").encode_image(synthetic_image(8 * h, 8 * w))
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(*TEXT_IDS, (cfg.text_tokens - 2,), generator=g).tolist()
    return [0, *text, SEP], codes
