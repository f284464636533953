"""Guidance in hidden space against per-branch logits: one denoising step's output head.

    nice -n 10 python benchmarks/hidden_cfg.py --json benchmarks/results/hidden-cfg-cpu.json
    python benchmarks/hidden_cfg.py --quick --json /tmp/h.json      # seconds, tiny shapes

What it runs: for each model shape (`configs.py`: Lumos-1 1B and 3B hidden widths, the 64000
Cosmos codes), a step's worth of code slots of one frame (672x384: 4032 slots, in the
generator's chunks of `SAMPLE_CHUNK`) through `VideoGeneration._guided_draw` with
`hidden_cfg` off (the head on each branch, then s(c - u) + u) and on (s(c - u) + u on the
hidden states, then the head once), on random hidden states and head weights; median CPU
time of `--repeats` runs (alternated; 1 thread by default, so a shared CPU's waiting is
not counted), and how many drawn codes agree (the same uniforms feed both).
What it is not: a full generation (the transformer's forward is the same in both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from packcache_core.generate import SamplingConfig, VideoGeneration
from packcache_core.sampling import SAMPLE_CHUNK, inverse_cdf_draw

SHAPES = {"lumos-1b": 2048, "lumos-3b": 3072}


class FixedNoise:
    """The same uniforms for both ways, so their draws can be compared."""

    def __init__(self, u: torch.Tensor) -> None:
        self.u = u

    def draw(self, logits: torch.Tensor, rows: torch.Tensor, n: int) -> tuple[Any, Any]:
        return inverse_cdf_draw(logits, self.u[rows])

    def uniform(self, n: int, device: torch.device) -> torch.Tensor:
        return self.u[:n]


def one_step(gen: Any, hidden: torch.Tensor, hidden_cfg: bool) -> tuple[float, torch.Tensor]:
    """Every chunk of slots once; CPU seconds (a shared CPU's waiting not counted) and the
    drawn codes."""
    gen.sampling = SamplingConfig(cfg_scale=15.0, hidden_cfg=hidden_cfg)
    codes = []
    start = time.process_time()
    for i in range(0, hidden.shape[1], SAMPLE_CHUNK):
        h = hidden[:, i : i + SAMPLE_CHUNK]
        rows = torch.arange(h.shape[1])
        codes.append(VideoGeneration._guided_draw(gen, h, rows, h.shape[1])[0])
    return time.process_time() - start, torch.cat(codes)


def measure(width: int, slots: int, n_codes: int, repeats: int, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    head = (torch.randn(n_codes, width, generator=g) / width**0.5).to(dtype)
    model = SimpleNamespace(code_logits=lambda h: torch.nn.functional.linear(h, head).float())
    hidden = torch.randn(2, slots, width, generator=g).to(dtype)  # (2, N, hidden)
    gen = SimpleNamespace(model=model, noise=FixedNoise(torch.rand(SAMPLE_CHUNK, generator=g)))
    runs: dict[bool, list[tuple[float, torch.Tensor]]] = {False: [], True: []}
    for _ in range(repeats):  # alternated, so both ways see the same load
        for on in (False, True):
            runs[on].append(one_step(gen, hidden, on))
    old, new = (statistics.median(t for t, _ in runs[on]) for on in (False, True))
    return {
        "per_branch_cpu_seconds": old,
        "hidden_cpu_seconds": new,
        "speedup": old / new,
        "code_agreement": (runs[False][0][1] == runs[True][0][1]).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--slots", type=int, default=48 * 84, help="code slots of a frame")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--quick", action="store_true", help="tiny shapes: checks the script")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    shapes = {"quick": 64} if args.quick else SHAPES
    slots, n_codes = (200, 400) if args.quick else (args.slots, 64000)
    result: dict[str, Any] = {
        "config": {"slots": slots, "n_codes": n_codes, "dtype": args.dtype, "cfg_scale": 15.0},
        "machine": {"torch": torch.__version__, "threads": args.threads, "load": os.getloadavg()},
    }
    for name, width in shapes.items():
        result[name] = measure(width, slots, n_codes, args.repeats, dtype)
        print(name, json.dumps(result[name]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
