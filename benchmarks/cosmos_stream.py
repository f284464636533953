"""The streaming Cosmos decoder over a long clip: time and memory per latent frame.

    nice -n 10 python benchmarks/cosmos_stream.py --json benchmarks/results/cosmos-stream-cpu.json
    python benchmarks/cosmos_stream.py --quick --json /tmp/cs.json      # seconds, tiny shapes

What it runs: the full-width DV4x8x8 decoder (`cosmos_net.py`, random weights, float32) fed
one random latent frame at a time through `CosmosStreamDecoder`, as a served stream feeds it,
for `--frames` latent frames at `--size` (default 200 frames at 128x64, on the CPU). Each
push records its wall time, its CPU time (all threads; on a shared CPU it does not count
waiting), the 1-minute load average, the process's resident memory after it and the causal
state's bytes. The summary compares the median push time of frames 10-20 with frames 190-200
(a decoder that re-decoded the prefix would grow linearly) and the resident memory over the
run. With
`--psnr`, it also decodes a shorter clip whole and streamed with several attention windows and
reports each window's PSNR against the whole decode. The load average is recorded, since the
CPU is shared. What it is not: a test; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from packcache_core.video.base import to_uint8_frames
from packcache_core.video.causal_state import CausalState
from packcache_core.video.cosmos import DEFAULT_WINDOW, CosmosStreamDecoder
from packcache_core.video.cosmos_net import DVConfig, InvQuantizedDecoder, randomize

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def stream_run(
    net: InvQuantizedDecoder,
    frames: int,
    h: int,
    w: int,
    window: int | None,
    partial: Path | None = None,
) -> list:
    g = torch.Generator().manual_seed(0)
    stream = CosmosStreamDecoder(net, torch.device("cpu"), window)
    rows = []
    for i in range(frames):
        codes = torch.randint(0, 64000, (h, w), generator=g)
        start, cpu = time.perf_counter(), time.process_time()
        stream.push(codes)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "index": i,
                "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu,  # all threads; waiting not counted
                "rss": rss_bytes(),
                "state": stream.state_bytes,
                "load1": os.getloadavg()[0],
            }
        )
        if i % 10 == 0:
            print(f"frame {i}: {seconds:.3f} s, rss {rss_bytes() / 2**20:.0f} MiB", flush=True)
            if partial is not None:  # a cut run keeps what it measured
                partial.write_text(json.dumps({"frames": rows}))
    return rows


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@torch.inference_mode()
def window_psnr(net: InvQuantizedDecoder, frames: int, h: int, w: int, windows: list[int]) -> dict:
    codes = torch.randint(0, 64000, (1, frames, h, w), generator=torch.Generator().manual_seed(1))
    whole = net(codes.to(torch.int32))[0]  # (3, T, H, W)
    out: dict[str, Any] = {}
    for window in [None, *windows]:
        state = CausalState(window)
        pushes = [net(codes[:, i : i + 1].to(torch.int32), state)[0] for i in range(frames)]
        streamed = torch.cat(pushes, dim=1)
        out[str(window)] = {
            "psnr_db": psnr(to_uint8_frames(streamed), to_uint8_frames(whole)),
            "max_abs_diff": float((streamed - whole).abs().max()),
        }
        print(f"window {window}: {out[str(window)]}", flush=True)
    return out


def summarize(rows: list[dict], early: tuple[int, int], late: tuple[int, int]) -> dict:
    def median(key: str, a: int, b: int) -> float:
        return statistics.median(r[key] for r in rows[a:b])

    e, lt = median("seconds", *early), median("seconds", *late)
    ce, cl = median("cpu_seconds", *early), median("cpu_seconds", *late)
    rss = [r["rss"] for r in rows]
    return {
        f"median_seconds_{early[0]}_{early[1]}": e,
        f"median_seconds_{late[0]}_{late[1]}": lt,
        "late_over_early": lt / e,
        f"median_cpu_seconds_{early[0]}_{early[1]}": ce,
        f"median_cpu_seconds_{late[0]}_{late[1]}": cl,
        "cpu_late_over_early": cl / ce,
        "load1_early": median("load1", *early),
        "load1_late": median("load1", *late),
        "rss_bytes_at_early_end": rows[early[1] - 1]["rss"],
        "rss_bytes_at_end": rss[-1],
        "rss_bytes_max": max(rss),
        "state_bytes_at_early_end": rows[early[1] - 1]["state"],
        "state_bytes_at_end": rows[-1]["state"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", default="128x64", help="WIDTHxHEIGHT in pixels")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--psnr", action="store_true", help="also PSNR per window (64x64, 24 frames)")
    p.add_argument("--quick", action="store_true", help="1/16 width, 24 frames: checks the script")
    args = p.parse_args(argv)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cfg = DVConfig(channels=8) if args.quick else DVConfig()
    frames = 24 if args.quick else args.frames
    width, height = (int(v) for v in args.size.split("x"))
    net = randomize(InvQuantizedDecoder(cfg), seed=1, output_gain=0.05).eval()
    load = os.getloadavg()
    partial = args.json.with_suffix(".partial.json")
    rows = stream_run(net, frames, height // 8, width // 8, args.window, partial)
    early, late = ((2, 6), (18, 22)) if args.quick else ((10, 20), (frames - 10, frames))
    result: dict[str, Any] = {
        "config": {
            "channels": cfg.channels, "frames": frames, "size": [width, height],
            "window": args.window, "dtype": "float32", "threads": args.threads,
        },
        "machine": {"torch": torch.__version__, "cpus": os.cpu_count(), "load_before": load},
        "summary": summarize(rows, early, late),
        "frames": rows,
    }  # fmt: skip
    result["machine"]["load_after"] = os.getloadavg()
    if args.psnr:
        size = (2, 2) if args.quick else (8, 8)
        result["window_psnr"] = window_psnr(net, 12 if args.quick else 24, *size, [2, 4, 8, 16])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    partial.unlink(missing_ok=True)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
