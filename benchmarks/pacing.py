"""Paced streams: do N `realtime` websocket streams keep up at a load the engine sustains unpaced?

    python benchmarks/pacing.py                         # ~70 s on 2 CPU cores
    python benchmarks/pacing.py --quick                 # smoke run, ~15 s
    python benchmarks/pacing.py --json out/pacing.json

What it does: starts `packcache serve` on a free loopback port (`builtin:tiny-random` on the CPU,
the video frame rate `--fps`, the lead bound `--pace-lead-s`). First, unpaced: `--streams`
concurrent websocket streams of `--latent-frames` each, generated as fast as the engine can;
their generated RGB frames over the wall time (first request sent to last `completed`) are
what the engine sustains. Then the load check: paced streams need `streams * fps` RGB frames
per second once playing; the script prints that against the unpaced throughput and stops
(exit 2) unless it is at most `--max-load` of it (choose a smaller `--size`, fewer `--steps`
or a lower `--fps`). Then, paced: the same streams again with `"realtime": true`, sent together.

What is reported per paced stream: from the server's `completed.stats`, stall seconds,
the largest lead (video seconds emitted ahead of playback) against the bound, the realtime
factor and time to first frame; and the client's own view, by the same playback model
(`server/engine/pace.py`) fed with the arrival time of each `latent_frame` message: its stall
seconds and largest lead (what a player on this socket would have seen, transport included).
Output: a markdown table, `--json` (with the load average at start and end), a PNG of the
client-side lead over time (`--plot`, default next to the JSON).

What it is not: a speed benchmark (see `serve_load.py`, `batching.py`); with the tiny model on
a shared CPU it shows whether pacing holds its bound and keeps streams fed, not how fast
Lumos-1 is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from websockets.asyncio.client import connect

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from benchmarks.serve_load import png_bytes, start_server, stop_server
from server.engine.pace import Pace


@dataclass
class Stream:
    """One websocket stream as its client saw it."""

    realtime: bool
    sent: float = 0.0
    finished: float | None = None
    rgb_frames: int = 0  # generated RGB frames received (the conditioning frame excluded)
    leads: list[tuple[float, float]] = field(default_factory=list)  # (s since sent, lead s)
    client_stall_s: float = 0.0
    client_max_lead_s: float = 0.0
    stats: dict[str, Any] | None = None
    error: str | None = None


class _At:
    """A clock that reads what it was last set to (a message's arrival time)."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


async def stream(url: str, message: dict[str, Any], fps: int) -> Stream:
    """Send one request and read its stream to the end, replaying its playback as it goes."""
    rec, clock = Stream(message["realtime"]), _At()
    player = Pace(fps, float("inf"), clock)  # the client's playback model; never holds
    async with connect(url, max_size=None) as ws:
        rec.sent = time.perf_counter()
        await ws.send(json.dumps(message))
        async for raw in ws:
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            if m["type"] == "frame" and m["latent_index"] > 0:
                rec.rgb_frames += 1
            elif m["type"] == "latent_frame":  # after its RGB frames: the player has them
                clock.now = time.perf_counter()
                lead, _ = player.emitted(1 + 4 * m["latent_index"])
                rec.leads.append((clock.now - rec.sent, lead))
            elif m["type"] in ("completed", "error"):
                rec.finished = time.perf_counter()
                rec.stats = m.get("stats")
                rec.error = m["error"]["code"] if m["type"] == "error" else None
                break
    rec.client_stall_s, rec.client_max_lead_s = player.stall_s, player.max_lead_s
    return rec


async def run_phase(base: str, args: argparse.Namespace, realtime: bool) -> list[Stream]:
    """`--streams` streams sent together; returns them once all have ended."""
    w, h = (int(x) for x in args.size.split("x"))
    image = base64.b64encode(png_bytes(w, h)).decode()
    url = base.replace("http", "ws", 1) + "/v1/videos/stream"
    messages = [
        {"type": "generate", "prompt": "a kite over green hills", "image": image,
         "size": args.size, "latent_frames": args.latent_frames, "steps": args.steps,
         "seed": i, "realtime": realtime}
        for i in range(args.streams)
    ]  # fmt: skip
    return list(await asyncio.gather(*(stream(url, m, args.fps) for m in messages)))


def throughput(streams: list[Stream]) -> float:
    """Generated RGB frames per second of wall time, first request sent to last end."""
    start = min(s.sent for s in streams)
    end = max(s.finished or time.perf_counter() for s in streams)
    return sum(s.rgb_frames for s in streams) / (end - start)


def row(s: Stream, bound: float) -> dict[str, Any]:
    st = s.stats or {}
    return {
        "ok": s.error is None and s.stats is not None,
        "error": s.error,
        "stall_s": st.get("stall_s"),
        "max_lead_s": st.get("max_lead_s"),
        "bound_s": bound,
        "realtime_factor": st.get("realtime_factor"),
        "ttff_s": st.get("time_to_first_frame_s"),
        "client_stall_s": s.client_stall_s,
        "client_max_lead_s": s.client_max_lead_s,
        "rgb_frames": s.rgb_frames,
        "leads": s.leads,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ["stream", "stall s", "max lead s", "bound s", "realtime factor", "TTFF s",
            "client stall s", "client max lead s"]  # fmt: skip
    keys = ("stall_s", "max_lead_s", "bound_s", "realtime_factor", "ttff_s", "client_stall_s",
            "client_max_lead_s")  # fmt: skip
    return report.markdown_table(
        head, [[str(i), *(r[k] for k in keys)] for i, r in enumerate(rows)]
    )


def plot(results: dict[str, Any], path: Path) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, r in enumerate(results["paced"]["streams"]):
        t, lead = zip(*r["leads"], strict=True) if r["leads"] else ((), ())
        ax.plot(t, lead, marker=".", label=f"stream {i}")
    c = results["config"]
    ax.axhline(c["pace_lead_s"], color="k", linestyle="--", label="bound")
    ax.axhline(c["pace_lead_s"] + 4 / c["fps"], color="grey", linestyle=":", label="+1 latent")
    ax.set(xlabel="seconds since the request", ylabel="client-side lead, s")
    ax.legend()
    report.save_figure(fig, f"{c['streams']} paced streams, {c['size']}, T={c['steps']}", path)


def verdict(summary: dict[str, Any], machine: dict[str, Any]) -> str:
    def stalls(key: str) -> str:
        return "none" if summary[key] == 0 else f"up to {summary[key]:.2f} s"

    return (
        f"\nstalls: {stalls('stall_s_max')} (server), {stalls('client_stall_s_max')} (client); "
        f"max lead {summary['max_lead_s']:.2f} s, limit {summary['lead_limit_s']:.2f} s (bound "
        f"+ one latent frame); load average: start {machine['load_avg']}, end "
        f"{machine['load_avg_end']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 short streams of tiny clips")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--size", default="64x64", help="WxH of the clip")
    p.add_argument("--latent-frames", type=int, default=31, help="conditioning included")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--fps", type=int, default=3, help="the server's video frame rate")
    p.add_argument("--pace-lead-s", type=float, default=2.0, help="the server's lead bound")
    p.add_argument("--max-load", type=float, default=0.6, help="paced need / unpaced capacity")
    p.add_argument("--model", default="builtin:tiny-random")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-running", type=int, default=8)
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.latent_frames, args.fps, args.max_load = 2, 6, 4, 1.0
    return args


async def run_all(base: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"  unpaced: {args.streams} streams ...", flush=True)
    unpaced = await run_phase(base, args, realtime=False)
    capacity, need = throughput(unpaced), args.streams * args.fps
    print(f"  the engine sustains {capacity:.1f} RGB frames/s unpaced; {args.streams} paced "
          f"streams at {args.fps} fps need {need} ({need / capacity:.0%} of it)",
          flush=True)  # fmt: skip
    out: dict[str, Any] = {
        "unpaced": {"throughput_fps": capacity, "errors": [s.error for s in unpaced if s.error]},
        "need_fps": need,
        "load_ratio": need / capacity,
    }
    if need > args.max_load * capacity:
        print(f"  more than --max-load {args.max_load:.0%}: choose a smaller --size, fewer "
              "--steps or a lower --fps", flush=True)  # fmt: skip
        return out
    print(f"  paced: {args.streams} streams ...", flush=True)
    paced = await run_phase(base, args, realtime=True)
    out["paced"] = {"streams": [row(s, args.pace_lead_s) for s in paced]}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    machine = report.machine_info(torch.device(args.device), torch.float32)
    max_latent = str(max(21, args.latent_frames))
    flags = ("--fps", str(args.fps), "--pace-lead-s", str(args.pace_lead_s),
             "--max-latent-frames", max_latent)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="packcache-pacing-") as data_dir:
        proc, base = start_server(args, data_dir, *flags)
        try:
            report.print_machine(machine)
            print(f"server {base}; {args.streams} streams of {args.latent_frames} latent frames, "
                  f"{args.size}, T={args.steps}, {args.fps} fps, bound {args.pace_lead_s} s",
                  flush=True)  # fmt: skip
            phases = asyncio.run(run_all(base, args))
        finally:
            stop_server(proc)
    machine["load_avg_end"] = report.load_now()
    keys = ("streams", "size", "latent_frames", "steps", "fps", "pace_lead_s", "max_load", "model")
    results = {"config": {k: getattr(args, k) for k in keys}, "machine": machine, **phases}
    if "paced" not in phases:  # the load check failed: the unpaced numbers, then exit 2
        if args.json:
            report.write_json(args.json, results)
        raise SystemExit(2)
    rows = phases["paced"]["streams"]
    results["summary"] = {
        "load_ratio": phases["load_ratio"],
        "all_completed": all(r["ok"] for r in rows),
        "stall_s_max": max(r["stall_s"] or 0.0 for r in rows),
        "client_stall_s_max": max(r["client_stall_s"] for r in rows),
        "max_lead_s": max(r["max_lead_s"] or 0.0 for r in rows),
        "lead_limit_s": args.pace_lead_s + 4 / args.fps,  # the bound plus one latent frame
    }
    print()
    print(table(rows))
    print(verdict(results["summary"], machine))
    report.save(results, args.json, args.plot, plot)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
