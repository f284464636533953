"""Output helpers shared by the benchmark scripts: machine description, markdown, JSON, plots.

What it is: plain functions that format numbers. What it is not: a place that measures
anything. Invariant: JSON output is strict (no NaN or Infinity: non-finite numbers become null).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def machine_info(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Where the numbers come from: host, CPU, accelerator, dtype, torch, threads, load."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
    }
    info["load_avg"] = load_now()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_now() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other jobs on a shared machine skew timings)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['host']} | {info['cpu']} x{info['cpu_count']} | device {info['device']}"
        f" ({info['device_name']}) | dtype {info['dtype']} | torch {info['torch']}"
        f" | threads {info['threads']} | load {info.get('load_avg')}",
        flush=True,
    )


def fmt(x: float | int | str | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def bootstrap(diff: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of the mean of paired differences `diff` (n draws)."""
    idx = rng.integers(0, diff.size, (n, diff.size))
    means = diff[idx].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def command_line() -> str:
    """The command this process ran, quoted so that a shell takes it back as it was given."""
    return shlex.join(["python", *sys.argv])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += [
        "| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows
    ]
    return "\n".join(lines)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(
    results: dict[str, Any],
    json_path: Path | None,
    png_path: Path | None,
    plot: Callable[[dict[str, Any], Path], None],
) -> None:
    """Write the JSON (if asked) and the PNG (asked, or next to the JSON)."""
    if json_path:
        write_json(json_path, results)
        print(f"wrote {json_path}")
    png = png_path or (json_path.with_suffix(".png") if json_path else None)
    if png:
        plot(results, png)
        print(f"wrote {png}")


def save_figure(fig: Any, title: str, path: Path) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
