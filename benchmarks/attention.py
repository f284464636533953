"""How the unconditional row's mask is passed to attention: what each way costs.

    python benchmarks/attention.py --json benchmarks/results/attention-cpu.json
    python benchmarks/attention.py --quick
    python benchmarks/attention.py --device cuda --dtype bfloat16 ...   # device_check.py's step

A denoising step attends the frame's queries of both rows (conditional, unconditional) over one
request's cache. The conditional row may attend every key; the unconditional row must not see
the text slots it leaves unused (its prompt is only the 3 header tokens). This times that
attention, `paper-shaped` sizes by default ((2, 4, 988, 64) queries over 12869 keys, the
full cache at the 13th latent frame, and over 4000 keys, about PackCache's), float32, in five
ways, interleaved round by round (the machine's load spreads over all of them):

- `bool`: one call, a boolean key mask (True = may attend), the earlier path;
- `float`: one call, an additive float mask (0 / -inf), the path before the right-aligned
  prefix;
- `none`: one call without a mask (wrong for the unconditional row: the floor a mask can reach);
- `split`: two calls: the conditional row without a mask, the unconditional row with its float
  mask (only the unconditional row carries one);
- `split-none`: two calls without masks, the unconditional row over the keys after the text
  slots plus its header: what the cache runs now (its prefix is right-aligned, so each row
  attends one contiguous run of slots, `KVCache.row_start`); on a GPU the only variant whose
  calls may all use the flash kernels.

It checks that every variant but `none` gives the same output as `bool` (max abs difference)
and prints the median seconds per call and the ratio to `bool`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from packcache_core.host import prepare_host

HEADER = 3  # the unconditional row's valid text slots: the header tokens


def variants(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text: int
) -> dict[str, Callable[[], torch.Tensor]]:
    """q (2, H, S, D), k and v (2, Hkv, K, D); the unconditional row (1) sees no text slot
    past the header."""
    K, dev = k.shape[2], k.device
    gqa = q.shape[1] != k.shape[1]
    valid = torch.ones(2, 1, 1, K, dtype=torch.bool, device=dev)
    valid[1, :, :, HEADER:text] = False
    additive = torch.zeros(valid.shape, dtype=q.dtype, device=dev)
    additive.masked_fill_(~valid, float("-inf"))
    keep = torch.cat((torch.arange(HEADER), torch.arange(text, K))).to(dev)  # uncond's, in order
    k1, v1 = k[1:, :, keep], v[1:, :, keep]  # as if the cache laid them out contiguously

    def sdpa(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=gqa)

    def split(mask: torch.Tensor | None) -> torch.Tensor:
        cond = sdpa(q[:1], k[:1], v[:1])
        if mask is None:
            return torch.cat((cond, sdpa(q[1:], k1, v1)))
        return torch.cat((cond, sdpa(q[1:], k[1:], v[1:], mask)))

    return {
        "bool": lambda: sdpa(q, k, v, valid),
        "float": lambda: sdpa(q, k, v, additive),
        "none": lambda: sdpa(q, k, v),
        "split": lambda: split(additive[1:]),
        "split-none": lambda: split(None),
    }


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Seconds of one call (the device's queue drained before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(keys: int, args: argparse.Namespace) -> dict[str, Any]:
    g = torch.Generator().manual_seed(keys)
    H, Hkv, S, D = args.heads, args.kv_heads or args.heads, args.queries, args.head_dim
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    q = torch.randn(2, H, S, D, generator=g).to(dev, dtype)
    k, v = (torch.randn(2, Hkv, keys, D, generator=g).to(dev, dtype) for _ in range(2))
    runs = variants(q, k, v, args.text)
    want = runs["bool"]().float()
    error = {name: float((fn().float() - want).abs().max()) for name, fn in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn, dev))
    base = statistics.median(times["bool"])
    return {
        name: {
            "median_seconds": statistics.median(ts),
            "vs_bool": statistics.median(ts) / base,
            "max_abs_diff_vs_bool": error[name],
        }
        for name, ts in times.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", default="12869,4000", help="comma list of key counts")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, help="K/V heads (GQA); default: --heads")
    p.add_argument("--queries", type=int, default=988, help="tokens per frame")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--text", type=int, default=67, help="text slots incl. the header")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--quick", action="store_true", help="small sizes, 3 rounds (CI smoke run)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.keys, args.queries, args.rounds = "600", 96, 3
    host = prepare_host(args.device, args.threads)
    print(f"{args.device} {args.dtype}, threads {host.threads}, load {report.load_now()}")
    results: dict[str, Any] = {
        "load_avg": report.load_now(),
        "threads": host.threads,
        "device": args.device,
        "dtype": args.dtype,
    }
    for keys in [int(x) for x in args.keys.split(",")]:
        res = measure(keys, args)
        results[str(keys)] = res
        rows = [
            [name, report.fmt(r["median_seconds"], 4), f"{r['vs_bool']:.2f}x",
             f"{r['max_abs_diff_vs_bool']:.1e}"]
            for name, r in res.items()
        ]  # fmt: skip
        print(f"\n(2, {args.heads}, {args.queries}, {args.head_dim}) queries over {keys} keys")
        print(report.markdown_table(["variant", "s per call", "vs bool", "max |diff|"], rows))
    results["load_avg_end"] = report.load_now()
    if args.json:
        report.write_json(args.json, results)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
