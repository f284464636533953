"""Does a fixed-size cache keep long videos good? Each policy at equal memory, on held-out clips.

    python benchmarks/quality.py --quick --json q.json       # minutes: teacher-forced on 32 clips
    python benchmarks/quality.py --json benchmarks/results/quality-demo-long-cpu.json  # full run

What it does: takes `builtin:demo-long` (trained on clips of up to 16 latent frames whose content
needs memory: a camera that sways back over ground it left, objects that leave and come back;
`packcache_core/demo/long.py`) and held-out clips it never saw, at the trained length (1x) and
at twice it (2x), and compares cache policies that hold the same history memory as a one-frame
window (history tokens within 1.0-1.1x of it, printed beside every row), with `full` above
them and two references: "freeze" (copy the previous true frame) and "oracle" (copy each column
from the latest true frame that showed it, knowing the camera's motion: perfect memory).

Measures:
- Teacher-forced accuracy (deterministic): for each frame, the share of its codes that the
  guided argmax of the first denoising step (every code MASK) gets right, predicted from the
  cache alone; then the true frame is written back exactly as inference writes a finished
  frame (history mask, packing). `tf_accuracy` over all frames after the first, and
  `tf_accuracy_reentry` over frames where content that had left the view comes back.
- Free-running (sampled with the card's settings, several seeds): per frame pair, whether the
  generated frame moved the way the camera did (the shift in whole columns that best matches
  consecutive generated frames' codes), on frames after the policy first packs or evicts
  history; code accuracy on re-entry frames; "revisit consistency", the share of codes a
  generated frame shares with the generated frame the camera last showed at the same place
  (1.0 in the truth).
- Paired bootstrap 95% intervals over clips (and seeds) of `a - b` for the comparisons listed.
- A quality-against-memory curve: teacher-forced accuracy against history tokens, one line per
  policy family, as a PNG next to the JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import (
    bootstrap,
    command_line,
    machine_info,
    markdown_table,
    print_machine,
    pyplot,
    save,
    save_figure,
)
from packcache_core.batch import tick
from packcache_core.cache import simulate_history, visible_tokens
from packcache_core.demo.card import WEIGHTS_DIR, load_demo, read_card
from packcache_core.demo.long import LongClip, make_long_clip
from packcache_core.demo.train import FPS
from packcache_core.generate import (
    SamplingConfig,
    VideoGeneration,
    VideoRequest,
    cache_plan_for,
)
from packcache_core.host import prepare_host
from packcache_core.layout import FrameLayout, history_mask_positions
from packcache_core.loading import build_model
from packcache_core.model import LumosTransformer
from packcache_core.pipeline import VideoParams
from packcache_core.policy import CachePolicy, policy_from_spec
from packcache_core.text import ByteTextTokenizer, build_prompt_ids
from packcache_core.video import load_video_tokenizer

MODEL = "demo-long"
# Rows at about the memory of a one-frame window (the ratio is printed beside each). "packcache"
# is the registry's defaults: the paper's rule (W = 3). On demo-long's 4x8 grid its 4 boundary
# tokens per held frame make it 48 history tokens against the window's 40, so "packcache-eq"
# is the same rule at the budget whose total is 40 (28 grid tokens: 14 / 7 / 7).
ROWS = {
    "full": "full",
    "packcache": "packcache",
    "packcache-eq": "packcache:budget=0.77778",
    "packcache-floors": "packcache-floors",  # the defaults before the paper's rule (W = 2)
    "sliding": "sliding:window=1",
    "sliding-norebase": "sliding:window=1,rebase=false",
    "sink": "sink",
    "packcache-norebase": "packcache:rebase=false",
    "packcache-dropmasked": "packcache:drop_masked=true",
    "packcache-knorm": "packcache:selector=knorm",
    "packcache-floors-norebase": "packcache-floors:rebase=false",
    # rebased, but only once the video passes the last trained index (15): bounded positions
    "packcache-at15": "packcache:rebase_at=15",
    "sliding-at15": "sliding:window=1,rebase_at=15",
}
FREE_ROWS = ("full", "packcache", "packcache-eq", "packcache-floors", "sliding", "sliding-norebase")
SWEEP = {  # teacher-forced only
    "packcache-w2": "packcache:window=2",
    "packcache-w4": "packcache:window=4",
    "packcache-w5": "packcache:window=5",
    "packcache-rho0.25": "packcache:rho=0.25",
    "packcache-rho0.75": "packcache:rho=0.75",
    "packcache-floors-w4": "packcache-floors:window=4",
    "packcache-floors-floor0": "packcache-floors:floor=0",
    "packcache-floors-floor0.25": "packcache-floors:floor=0.25",
}
MEMORY = (1, 2, 4)  # frames of history memory on the curve
CURVE = {  # family -> specs at growing memory (teacher-forced only)
    "sliding": [f"sliding:window={m}" for m in MEMORY],
    "sliding-norebase": [f"sliding:window={m},rebase=false" for m in MEMORY],
    "packcache": [f"packcache:budget={m}" for m in MEMORY],  # the paper's W = 3
    "packcache-norebase": [f"packcache:budget={m},rebase=false" for m in MEMORY],
    "packcache-floors": [f"packcache-floors:budget={m},window={2 * m}" for m in MEMORY],
    "sink": [f"sink:budget={m},window={m}" for m in MEMORY],
}
QUICK_ROWS = (*FREE_ROWS, "sink", "packcache-norebase")
COMPARISONS = [  # (a, b, metric): each on all frames and on re-entry frames
    *(
        (a, b, metric)
        for a, b in (
            ("packcache", "sliding"),
            ("packcache", "sliding-norebase"),
            ("packcache-eq", "sliding"),  # equal totals
            ("packcache-eq", "sliding-norebase"),
            ("packcache", "packcache-floors"),
            ("packcache", "sink"),
            ("full", "packcache"),
            ("packcache", "packcache-norebase"),
            ("packcache", "packcache-dropmasked"),
            ("packcache", "packcache-knorm"),
            ("sliding-norebase", "sliding"),  # what rebasing costs a window
            ("packcache-at15", "packcache"),  # saturating against classic rebase
            ("sliding-at15", "sliding-norebase"),
        )
        for metric in ("tf_accuracy", "tf_accuracy_reentry")
    ),
    ("packcache", "sliding", "free_direction"),
    ("packcache", "sliding-norebase", "free_direction"),
    ("packcache-eq", "sliding", "free_direction"),
    ("packcache", "packcache-floors", "free_direction"),
    ("sliding-norebase", "sliding", "free_direction"),
]


@dataclass(frozen=True)
class Bed:
    """The model under test and what its requests share."""

    model: LumosTransformer
    trained: int  # latent frames, conditioning included
    sampling: SamplingConfig
    size: tuple[int, int]  # (width, height)

    def request(self, clip: LongClip, codes: torch.Tensor) -> VideoRequest:
        n = codes.shape[0]
        W, H = self.size
        seconds = VideoParams(clip.caption, latent_frames=n, fps=FPS).seconds
        ids = build_prompt_ids(ByteTextTokenizer(), clip.caption, W, H, FPS, seconds)
        return VideoRequest(ids, codes[0], n, FPS, seconds)


def load_bed(folder: Path) -> Bed:
    cfg, state = load_demo(folder, MODEL)
    card = read_card(folder, MODEL)
    assert card.defaults.size is not None
    model = build_model(cfg, state, "cpu", torch.float32)
    return Bed(model, card.defaults.latent_frames, card.defaults.sampling, card.defaults.size)


def teacher_forced(
    bed: Bed, clip: LongClip, codes: torch.Tensor, policy: CachePolicy
) -> np.ndarray:
    """(n - 1,) accuracy per frame 1 .. n-1 (see the module docstring)."""
    gen = VideoGeneration(bed.model, bed.request(clip, codes), bed.sampling, policy)
    acc = []
    for t in range(1, codes.shape[0]):
        logits = gen.predict_frame()  # (h w, n_codes)
        acc.append((logits.argmax(-1) == codes[t].flatten()).float().mean().item())
        gen.replay_frame(codes[t])
    gen.close()
    return np.array(acc)


def column_shift(a: torch.Tensor, b: torch.Tensor) -> int:
    """Whole-column shift s in {-1, 0, 1} of the camera from frame a to frame b (b's column j
    shows what a's column j + s showed) that makes the most codes equal."""
    w = a.shape[1]
    score = {
        s: (b[:, max(0, -s) : w - max(0, s)] == a[:, max(0, s) : w + min(0, s)]).float().mean()
        for s in (-1, 0, 1)
    }
    return max(score, key=lambda s: (float(score[s]), -abs(s)))


def history_capacity(bed: Bed, clip: LongClip, codes: torch.Tensor, policy: CachePolicy) -> int:
    """History tokens per branch the policy's cache is planned for (nothing allocated)."""
    request = bed.request(clip, codes)
    return cache_plan_for(bed.model, request, policy, bed.sampling).history_capacity


def first_packed(policy: CachePolicy, bed: Bed, codes: torch.Tensor, clip: LongClip, n: int) -> int:
    """First frame generated from a history the policy has cut (packed or evicted)."""
    layout = FrameLayout(*codes.shape[1:])
    vis = visible_tokens(
        layout, history_mask_positions(layout.grid_tokens, bed.sampling.history_mask_ratio)
    )
    for t in range(2, n):
        if simulate_history(policy, layout, vis, t - 1) < (t - 1) * layout.tokens:
            return t
    return n


def generate_together(
    bed: Bed, runs: list[tuple[LongClip, torch.Tensor, int]], policy: CachePolicy
) -> list[torch.Tensor]:
    """Free-running codes (n, h, w) of each (clip, true codes, seed), all advanced by the
    server's step loop (`batch.tick`: one forward per tick for every run's step). A run's
    codes do not depend on which runs share its ticks (`tests/core/test_batch.py`)."""
    gens = [
        VideoGeneration(bed.model, bed.request(clip, codes), bed.sampling, policy, seed)
        for clip, codes, seed in runs
    ]
    out: list[list[torch.Tensor]] = [[codes[0]] for _, codes, _ in runs]
    while live := [i for i, g in enumerate(gens) if not g.done]:
        for i, outcome in zip(live, tick([gens[i] for i in live]), strict=True):
            assert outcome.error is None, outcome.error
            if outcome.result is not None:
                out[i].append(outcome.result.codes)
    for g in gens:
        g.close()
    return [torch.stack(codes) for codes in out]


def free_scores(clip: LongClip, codes: torch.Tensor, g: torch.Tensor, start: int) -> dict[str, Any]:
    """Direction, re-entry accuracy and revisit consistency of generated codes `g` against
    the truth `codes` (see the module docstring); direction on frames `start` ..."""
    n = codes.shape[0]
    cols = clip.camera_columns(n)
    camera = clip.motion in ("sway", "pan")
    moves = [(column_shift(g[t - 1], g[t]) == cols[t] - cols[t - 1]) for t in range(start, n)]
    reentry = clip.reentry(n)
    acc = (g == codes).float().mean((1, 2)).numpy()
    revisit = []
    for t in range(2, n):
        same = [s for s in range(t - 1) if cols[s] == cols[t]]
        if same and camera:
            revisit.append(float((g[t] == g[same[-1]]).float().mean()))
    return {
        "direction": float(np.mean(moves)) if moves and camera else None,
        "reentry_accuracy": float(acc[reentry].mean()) if reentry.any() else None,
        "consistency": float(np.mean(revisit)) if revisit else None,
    }


def per_clip(rows: dict[str, list[dict[str, Any]]], name: str, metric: str) -> np.ndarray:
    return np.array([r[metric] if r[metric] is not None else np.nan for r in rows[name]])


def evaluate(bed: Bed, factor: int, args: argparse.Namespace, tok: Any) -> dict[str, Any]:
    n = factor * bed.trained
    clips = [make_long_clip(args.split, i, 2 * bed.trained) for i in range(args.clips)]
    codes = [
        torch.stack([tok.encode_image(f) for f in c.latent_frames(n)]) for c in clips
    ]  # (n, h, w) each
    reentry = [c.reentry(n)[1:] for c in clips]
    specs = {k: v for k, v in ROWS.items() if k in QUICK_ROWS} if args.quick else dict(ROWS)
    if not (args.quick or args.main_rows):
        specs.update(SWEEP)
    tf: dict[str, list[dict[str, Any]]] = {}
    history: dict[str, int] = {}
    for name, spec in specs.items():
        policy = policy_from_spec(spec)
        history[name] = history_capacity(bed, clips[0], codes[0], policy)
        tf[name] = []
        for clip, c, re in zip(clips, codes, reentry, strict=True):
            acc = teacher_forced(bed, clip, c, policy)
            tf[name].append(
                {
                    "per_frame": acc,
                    "tf_accuracy": acc.mean(),
                    "tf_accuracy_reentry": acc[re].mean() if re.any() else None,
                }
            )
    refs = {
        "freeze": [(c[:-1] == c[1:]).float().mean((1, 2)).numpy() for c in codes],
        "oracle": [
            (cl.oracle_codes(c) == c[1:]).float().mean((1, 2)).numpy()
            for cl, c in zip(clips, codes, strict=True)
        ],
    }
    for name, accs in refs.items():
        tf[name] = [
            {
                "per_frame": a,
                "tf_accuracy": a.mean(),
                "tf_accuracy_reentry": a[re].mean() if re.any() else None,
            }
            for a, re in zip(accs, reentry, strict=True)
        ]
    free: dict[str, list[dict[str, Any]]] = {}
    k = min(args.free_clips, len(clips))
    runs = [(clips[i], codes[i], seed) for i in range(k) for seed in range(args.seeds)]
    start = first_packed(policy_from_spec(ROWS["packcache"]), bed, codes[0], clips[0], n)
    for name in FREE_ROWS:
        generated = generate_together(bed, runs, policy_from_spec(ROWS[name])) if runs else []
        free[name] = [
            free_scores(clip, c, g, start) for (clip, c, _), g in zip(runs, generated, strict=True)
        ]
        print(f"  {factor}x free-running {name}: done", flush=True)
    window = history["sliding"]
    summary: dict[str, Any] = {}
    for name in tf:
        row = {
            "tf_accuracy": float(np.mean(per_clip(tf, name, "tf_accuracy"))),
            "tf_accuracy_reentry": float(np.nanmean(per_clip(tf, name, "tf_accuracy_reentry"))),
            "tf_per_frame": np.mean([r["per_frame"] for r in tf[name]], axis=0).round(4).tolist(),
        }
        if name in history:
            row["history_tokens"] = history[name]
            row["memory_vs_window"] = round(history[name] / window, 3)
            row["spec"] = specs[name]
        row["tf_per_clip"] = [round(float(x), 4) for x in per_clip(tf, name, "tf_accuracy")]
        if free.get(name):
            for m, key in (
                ("direction", "free_direction"),
                ("reentry_accuracy", "free_reentry_accuracy"),
                ("consistency", "free_consistency"),
            ):
                row[key] = float(np.nanmean(per_clip(free, name, m)))
        summary[name] = row
    rng = np.random.default_rng(0)
    comparisons = []
    for a, b, metric in COMPARISONS:
        if a not in tf or b not in tf:
            continue
        if metric.startswith("free_"):
            if not free.get(a) or not free.get(b):
                continue
            m = metric.removeprefix("free_")
            da, db = per_clip(free, a, m), per_clip(free, b, m)
        else:
            da, db = per_clip(tf, a, metric), per_clip(tf, b, metric)
        d = (da - db)[~np.isnan(da - db)]
        lo, hi = bootstrap(d, rng)
        comparisons.append(
            {
                "a": a,
                "b": b,
                "metric": metric,
                "diff": float(d.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "n": int(d.size),
            }
        )
    curve = {}
    for family, family_specs in ({} if args.main_rows else CURVE).items():
        points = []
        for spec in family_specs:
            policy = policy_from_spec(spec)
            tokens = history_capacity(bed, clips[0], codes[0], policy)
            some = zip(clips[: args.curve_clips], codes, strict=False)
            accs = [teacher_forced(bed, cl, c, policy).mean() for cl, c in some]
            points.append(
                {"spec": spec, "history_tokens": tokens, "tf_accuracy": float(np.mean(accs))}
            )
        curve[family] = points
    references = {name: summary.pop(name) for name in refs}
    info = {
        "latent_frames": n,
        "clips": len(clips),
        "free_clips": k,
        "seeds": args.seeds,
        "window_tokens": window,
        "curve_clips": args.curve_clips,
    }
    # one dict per policy row, then what is not a policy under its own keys
    return {
        **summary,
        "references": references,
        "comparisons": comparisons,
        "curve": curve,
        "info": info,
    }


NOT_ROWS = ("references", "comparisons", "curve", "info")


def policy_rows(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in NOT_ROWS}


def table(factor: str, result: dict[str, Any]) -> str:
    rows = []
    for name, r in {**policy_rows(result), **result["references"]}.items():
        rows.append(
            [
                name,
                r.get("history_tokens", "-"),
                r.get("memory_vs_window", "-"),
                f"{r['tf_accuracy']:.3f}",
                f"{r['tf_accuracy_reentry']:.3f}",
                f"{r['free_direction']:.2f}" if "free_direction" in r else "-",
                f"{r['free_reentry_accuracy']:.3f}" if "free_reentry_accuracy" in r else "-",
                f"{r['free_consistency']:.3f}" if "free_consistency" in r else "-",
            ]
        )
    head = [
        "policy",
        "history tokens",
        "x window",
        "TF acc",
        "TF acc re-entry",
        "free direction",
        "free re-entry acc",
        "revisit consistency",
    ]
    info = result["info"]
    out = f"\n{factor} ({info['latent_frames']} latent frames, {info['clips']} clips)\n"
    out += markdown_table(head, rows) + "\n\n"
    comp = [
        [
            c["a"],
            c["b"],
            c["metric"],
            f"{c['diff']:+.3f}",
            f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
            c["n"],
        ]
        for c in result["comparisons"]
    ]
    return out + markdown_table(["a", "b", "metric", "a - b", "95% CI", "n"], comp)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    factors = list(results["summary"])
    fig, axes = plt.subplots(1, len(factors), figsize=(6 * len(factors), 4.5), squeeze=False)
    for ax, factor in zip(axes[0], factors, strict=True):
        res = results["summary"][factor]
        for family, points in res["curve"].items():
            ax.plot(
                [p["history_tokens"] for p in points],
                [p["tf_accuracy"] for p in points],
                "o-",
                label=family,
            )
        for ref in ("full", "freeze", "oracle"):
            row = res["full"] if ref == "full" else res["references"][ref]
            ax.axhline(
                row["tf_accuracy"],
                ls="--",
                lw=1,
                label=ref,
                color={"full": "k", "freeze": "grey", "oracle": "g"}[ref],
            )
        ax.axvline(res["info"]["window_tokens"], ls=":", color="grey")
        n = min(res["info"]["clips"], res["info"]["curve_clips"])
        ax.set(
            title=f"{factor}: {res['info']['latent_frames']} latent frames (curves: {n} clips)",
            xlabel="history tokens (per branch)",
            ylabel="teacher-forced accuracy",
        )
        ax.legend(fontsize=8)
    save_figure(fig, "builtin:demo-long, held-out clips: quality against cache memory", path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=WEIGHTS_DIR, help="where demo-long.* are")
    p.add_argument(
        "--quick", action="store_true", help="main rows only; free-running on 6 clips, 1 seed"
    )
    p.add_argument("--clips", type=int, default=32)
    p.add_argument(
        "--split",
        default="heldout",
        help="clips never trained on: heldout (the dev set earlier defaults were chosen on) "
        "or fresh (first used to report the paper's rule)",
    )
    p.add_argument("--main-rows", action="store_true", help="no sweep and no curve")
    p.add_argument(
        "--free-clips", type=int, default=None, help="clips run free (0: teacher-forced only)"
    )
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--curve-clips", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, help="processes (one per length at most)")
    p.add_argument(
        "--factors",
        type=lambda text: [int(f) for f in text.split(",")],
        default=[1, 2],
        help="lengths as multiples of the trained one",
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    if args.free_clips is None:
        args.free_clips = 6 if args.quick else args.clips
    if args.curve_clips is None:
        args.curve_clips = 12 if args.quick else args.clips
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    return args


def run_factor(args: argparse.Namespace, factor: int) -> dict[str, Any]:
    """One length's results, in this process or a worker (each loads its own model)."""
    prepare_host("cpu", args.threads)
    bed = load_bed(args.folder)
    result = evaluate(bed, factor, args, load_video_tokenizer("builtin:patch-small"))
    print(table(f"{factor}x", result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_host("cpu", args.threads)
    bed = load_bed(args.folder)
    info = machine_info(torch.device("cpu"), torch.float32)
    print_machine(info)
    t0 = time.perf_counter()
    if args.jobs > 1:  # one process per length, results the same as in one process
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {f: pool.submit(run_factor, args, f) for f in args.factors}
            summary = {f"{f}x": fut.result() for f, fut in futures.items()}
    else:
        summary = {f"{f}x": run_factor(args, f) for f in args.factors}
    meta = {
        "machine": info,
        "trained_latent_frames": bed.trained,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": command_line(),
        "defaults": ROWS["packcache"],
        "split": args.split,
        "sampling": asdict(bed.sampling),
    }
    print(f"took {meta['seconds']} s")
    save({"meta": meta, "summary": summary}, args.json, args.png, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
