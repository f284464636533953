"""The whole product at a real shape: release folders, `packcache serve`, streams through the API.

    python benchmarks/product_run.py --out device-check/product          # CUDA, Lumos-1 1B
    python benchmarks/product_run.py --out /tmp/p --dry                   # CPU, tiny, seconds

Phases, each timed, each written to `<out>/product.json` as soon as it ends (a run cut short
keeps what it measured), none started when `--budget-s` would be exceeded:
1. `folder`: a checkpoint folder at the Lumos-1 1B shape (`configs.py`; or the shapes of a
   real `config.json` given with `--model-config`), random weights in bf16, laid out as
   `save_pretrained` lays it out, and a full-width Cosmos DV4x8x8 folder (`release.py`).
2. `server`: `packcache serve` on them (bf16 on CUDA, the byte text tokenizer since
   Chameleon's file cannot be fetched here), seconds until `/ready` (load and warm-up).
3. `streams`: for `full` and `packcache`, 1, 2, 4 and 8 concurrent clients
   (`serve_load.py`'s clients: half websocket, half REST) at 672x384, 2 steps per frame:
   frames/s, time to first frame, per-latent-frame latency p50/p95/p99, peak memory per
   request (`stats.peak_memory_bytes`) and on `/metrics`.
`--dry` swaps in `configs.py`'s `quick` model, a 1/16-width Cosmos, 64x64, 1 and 2 clients.
What it is not: a quality measure (random weights), or a check of which attention kernel ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import serve_load
from benchmarks.configs import CONFIGS
from benchmarks.release import write_checkpoint_folder, write_cosmos_folder
from packcache_core.config import LumosConfig


class Report:
    """product.json, rewritten after every phase."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"config": config, "phases": {}}
        self.start = time.monotonic()

    def add(self, name: str, result: dict[str, Any], shown: object = None) -> None:
        self.data["phases"][name] = result
        self.path.write_text(json.dumps(self.data, indent=1))
        print(f"== {name}: {json.dumps(result if shown is None else shown)[:300]}", flush=True)

    def left(self, budget: float) -> float:
        return budget - (time.monotonic() - self.start)


def model_config(args: argparse.Namespace) -> LumosConfig:
    if args.model_config is not None:
        return LumosConfig.from_hf_dict(json.loads(args.model_config.read_text()))
    return CONFIGS["quick" if args.dry else args.shape].model


def stream_phase(base: str, args: argparse.Namespace, policy: str, clients: int) -> dict:
    w, h = (int(x) for x in args.size.split("x"))
    image = serve_load.png_bytes(w, h)
    job = serve_load.Job("a kite over green hills", args.size, args.latent_frames, 2, image)
    run = argparse.Namespace(policies=[policy], clients=clients, duration=args.duration)
    summary = asyncio.run(serve_load.run_all(base, job, run))[policy]
    summary.pop("records", None)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry", action="store_true", help="CPU, tiny shapes: checks the command")
    p.add_argument("--shape", default="lumos-1b", choices=("lumos-1b", "lumos-3b"))
    p.add_argument("--model-config", type=Path, help="a real config.json: its shapes")
    p.add_argument("--budget-s", type=float, default=300.0, help="no phase starts past it")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per stream run")
    args = p.parse_args(argv)
    device = "cpu" if args.dry else "cuda"
    args.size = "64x64" if args.dry else "672x384"
    args.latent_frames = 3 if args.dry else 7
    concurrency = (1, 2) if args.dry else (1, 2, 4, 8)
    if args.dry:
        args.duration = min(args.duration, 3.0)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = model_config(args)
    report = Report(args.out / "product.json", {
        "device": device, "size": args.size, "latent_frames": args.latent_frames, "steps": 2,
        "model": {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
                  "params": cfg.n_params}, "torch": torch.__version__,
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="packcache-product-") as tmp:
        root = Path(tmp)
        start = time.monotonic()
        model = write_checkpoint_folder(root / "Lumos-1" / "stage-2-joint-384p", cfg)
        cosmos = write_cosmos_folder(root / "Cosmos-Tokenizer-DV4x8x8", 8 if args.dry else 128)
        size = sum(f.stat().st_size for f in model.iterdir())
        report.add("folder", {"seconds": time.monotonic() - start, "checkpoint_bytes": size})
        server = argparse.Namespace(
            model=str(model), device=device, max_running=8, start_timeout=report.left(args.budget_s)
        )
        start = time.monotonic()
        flags = ("--tokenizer", str(cosmos), "--text-tokenizer", "builtin:bytes")
        proc, base = serve_load.start_server(server, tmp, *flags)
        try:
            report.add("server", {"seconds_to_ready": time.monotonic() - start})
            streams: dict[str, Any] = {}
            for policy in ("full", "packcache"):
                for clients in concurrency:
                    if report.left(args.budget_s) < args.duration + 30:
                        streams[f"{policy}_c{clients}"] = {"skipped": "out of time"}
                        continue
                    key = f"{policy}_c{clients}"
                    streams[key] = stream_phase(base, args, policy, clients)
                    report.add("streams", streams, {key: streams[key]})
        finally:
            serve_load.stop_server(proc)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
