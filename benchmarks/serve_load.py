"""Load test of the server: N concurrent clients per cache policy, over websockets and REST.

    python benchmarks/serve_load.py --quick                     # CI smoke run, under a minute
    python benchmarks/serve_load.py --clients 4 --duration 60 --json out/load.json
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --size 672x384 --steps 50

What it does: starts `packcache serve` on a free loopback port (built-in random model, a
temporary data folder) unless `--url` names a running server, waits for `/ready`, then for each
policy runs `--clients` concurrent clients for `--duration` seconds. Each client submits one
request after another (the same image and prompt, `cache_policy` set, a fresh seed each) until
the time is up, and waits for the requests it started. Half the clients use the websocket
(`/v1/videos/stream`), half REST (`POST /v1/videos`, then polling `GET /v1/videos/{id}`).

What is reported per policy: throughput (generated RGB frames per second of wall time, from
the first submission to the last completion), time to first frame (submission to the first
generated latent frame: websocket clients time it themselves, REST clients take the server's
`stats.time_to_first_frame_s`), per-frame latency (the gap between consecutive generated
latent frames on websockets; the first frame's gap is its time to first frame) as p50, p95 and
max, rejections (HTTP 429 / 503, websocket close 1013: the client waits `Retry-After` or 1 s and
tries again until the time is up), failures, and peak memory (the largest
`packcache_gpu_memory_allocated_bytes` and `packcache_kv_cache_bytes` seen on `/metrics`,
sampled every 0.25 s, and the largest per-request `stats.peak_memory_bytes`). Output: a
markdown table, `--json`, and a PNG (`--plot`, default next to the JSON).

What it is not: a model benchmark (see `cache_policies.py`); with the built-in model on a CPU
the numbers say how the serving path behaves under concurrency, not how fast Lumos-1 is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from benchmarks.configs import synthetic_image

LANES = ("full", "sliding", "packcache")  # compared by default; any registered policy may run
TRY_AGAIN = 1013  # websocket close code: queue full, starting or shutting down


@dataclass
class Record:
    """One request as a client saw it."""

    transport: str
    submitted: float
    ok: bool = False
    rejections: int = 0
    error: str | None = None
    ttff: float | None = None
    frame_gaps: list[float] = field(default_factory=list)  # per generated latent frame
    rgb_frames: int = 0  # generated RGB frames (the conditioning frame excluded)
    finished: float | None = None
    stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    """What every request of a run asks for."""

    prompt: str
    size: str
    latent_frames: int
    steps: int
    png: bytes

    def fields(self, policy: str, seed: int) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "size": self.size,
            "latent_frames": self.latent_frames,
            "steps": self.steps,
            "seed": seed,
            "cache_policy": policy,
        }


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(height, width).numpy()).save(buf, format="PNG")
    return buf.getvalue()


async def ws_request(base: str, job: Job, policy: str, seed: int, deadline: float) -> Record:
    """One websocket request; retried after a 1013 close until `deadline`."""
    rec = Record("ws", time.perf_counter())
    msg = {
        "type": "generate",
        "image": base64.b64encode(job.png).decode(),
        **job.fields(policy, seed),
    }
    url = base.replace("http", "ws", 1) + "/v1/videos/stream"
    while True:
        try:
            async with connect(url, max_size=None) as ws:
                await ws.send(json.dumps(msg))
                await _ws_receive(ws, rec)
                return rec
        except ConnectionClosed as e:
            if e.rcvd is None or e.rcvd.code != TRY_AGAIN or time.perf_counter() > deadline:
                rec.error = f"closed {e.rcvd.code if e.rcvd else '?'}"
                return rec
            rec.rejections += 1
            await asyncio.sleep(1.0)


async def _ws_receive(ws: Any, rec: Record) -> None:
    last = rec.submitted
    seen: set[int] = set()
    async for raw in ws:
        if isinstance(raw, bytes):
            continue  # frame pixels: the header before them carried what we time
        m = json.loads(raw)
        if m["type"] == "frame" and m["latent_index"] >= 1:
            rec.rgb_frames += 1
            if m["latent_index"] not in seen:  # first RGB frame of a new latent frame
                seen.add(m["latent_index"])
                now = time.perf_counter()
                rec.frame_gaps.append(now - last)
                rec.ttff = rec.ttff if rec.ttff is not None else now - rec.submitted
                last = now
        elif m["type"] == "completed":
            rec.ok, rec.finished, rec.stats = True, time.perf_counter(), m["stats"]
            return
        elif m["type"] == "error":
            rec.error = m["error"]["code"]
            return


async def rest_request(
    http: httpx.AsyncClient, job: Job, policy: str, seed: int, deadline: float
) -> Record:
    """One REST request: create (retried on 429/503 until `deadline`), then poll."""
    rec = Record("rest", time.perf_counter())
    data = {k: str(v) for k, v in job.fields(policy, seed).items()}
    while True:
        files = {"input_reference": ("image.png", job.png, "image/png")}
        r = await http.post("/v1/videos", data=data, files=files)
        if r.status_code not in (429, 503) or time.perf_counter() > deadline:
            break
        rec.rejections += 1
        await asyncio.sleep(float(r.headers.get("retry-after", 1)))
    if r.status_code != 200:
        rec.error = f"http {r.status_code}"
        return rec
    vid = r.json()["id"]
    while True:
        v = (await http.get(f"/v1/videos/{vid}")).json()
        if v["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    rec.finished = time.perf_counter()
    if v["status"] == "failed":
        rec.error = (v.get("error") or {}).get("code", "failed")
        return rec
    rec.ok, rec.stats = True, v["stats"]
    rec.ttff = v["stats"]["time_to_first_frame_s"]
    rec.rgb_frames = v["stats"]["frames"] - 1
    return rec


async def client(
    i: int, base: str, http: httpx.AsyncClient, job: Job, policy: str, deadline: float
) -> list[Record]:
    out, n = [], 0
    while time.perf_counter() < deadline:
        seed = 1000 * i + n
        if i % 2 == 0:
            out.append(await ws_request(base, job, policy, seed, deadline))
        else:
            out.append(await rest_request(http, job, policy, seed, deadline))
        n += 1
    return out


async def sample_metrics(
    http: httpx.AsyncClient, peaks: dict[str, float], stop: asyncio.Event
) -> None:
    names = ("packcache_gpu_memory_allocated_bytes", "packcache_kv_cache_bytes")
    while not stop.is_set():
        text = (await http.get("/metrics")).text
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            key = name.split("{", 1)[0]
            if key in names:
                peaks[key] = max(peaks.get(key, 0.0), float(value.split()[0]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def run_policy(
    base: str, job: Job, policy: str, clients: int, duration: float
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        peaks: dict[str, float] = {}
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_metrics(http, peaks, stop))
        start = time.perf_counter()
        deadline = start + duration
        runs = await asyncio.gather(
            *(client(i, base, http, job, policy, deadline) for i in range(clients))
        )
        stop.set()
        await sampler
    records = [r for run in runs for r in run]
    return summarize(records, start, peaks)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summarize(records: list[Record], start: float, peaks: dict[str, float]) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    end = max((r.finished for r in ok if r.finished), default=time.perf_counter())
    gaps = [g for r in ok for g in r.frame_gaps]
    ttff = [r.ttff for r in ok if r.ttff is not None]
    return {
        "requests": len(records),
        "completed": len(ok),
        "failed": sum(1 for r in records if not r.ok),
        "rejections": sum(r.rejections for r in records),
        "wall_seconds": end - start,
        "throughput_fps": sum(r.rgb_frames for r in ok) / (end - start),
        "ttff_p50": pct(ttff, 0.5),
        "ttff_p95": pct(ttff, 0.95),
        "ttff_max": max(ttff, default=None),
        "frame_latency_p50": pct(gaps, 0.5),
        "frame_latency_p95": pct(gaps, 0.95),
        "frame_latency_p99": pct(gaps, 0.99),
        "frame_latency_max": max(gaps, default=None),
        "peak_memory_allocated_bytes": peaks.get("packcache_gpu_memory_allocated_bytes"),
        "peak_kv_cache_bytes": peaks.get("packcache_kv_cache_bytes"),
        "peak_request_memory_bytes": max(
            (r.stats["peak_memory_bytes"] for r in ok if r.stats), default=None
        ),
        "errors": sorted({r.error for r in records if r.error}),
        "records": [asdict(r) for r in records],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    args: argparse.Namespace, data_dir: str, *flags: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`packcache serve` (with more `flags`) on a free loopback port; returns (process, base
    URL) once ready."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--model", args.model, "--device", args.device, "--data-dir", data_dir,
        "--max-running", str(args.max_running), "--log-level", "warning", *flags,
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    log = open(Path(data_dir) / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: see {log.name}")
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise SystemExit(f"server not ready after {args.start_timeout} s: see {log.name}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--quick", action="store_true", help="2 clients, 3 s per policy, tiny clips")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per policy")
    p.add_argument("--policies", default=",".join(LANES), help="registered cache policies")
    p.add_argument("--size", default="128x128", help="WxH of the clip")
    p.add_argument("--latent-frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--model", default="builtin:tiny-random", help="when starting the server")
    p.add_argument("--device", default="cpu", help="when starting the server")
    p.add_argument("--max-running", type=int, default=8, help="when starting the server")
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.size = 2, 3.0, "64x64"
        args.latent_frames, args.steps = 3, 2
    args.policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    return args


def tables(policies: dict[str, dict[str, Any]]) -> str:
    head = ["policy", "completed", "failed", "rejections", "frames/s", "TTFF p50 s",
            "TTFF p95 s", "frame p50 s", "frame p95 s", "frame max s", "peak memory MiB",
            "peak KV MiB"]  # fmt: skip

    def mib(x: float | None) -> float | None:
        return None if x is None else x / 2**20

    rows = [
        [name, s["completed"], s["failed"], s["rejections"], s["throughput_fps"], s["ttff_p50"],
         s["ttff_p95"], s["frame_latency_p50"], s["frame_latency_p95"], s["frame_latency_max"],
         mib(s["peak_memory_allocated_bytes"]), mib(s["peak_kv_cache_bytes"])]
        for name, s in policies.items()
    ]  # fmt: skip
    return report.markdown_table(head, rows)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = report.pyplot()
    pols = results["policies"]
    names = list(pols)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.25
    for k, key in enumerate(("frame_latency_p50", "frame_latency_p95", "frame_latency_max")):
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax1.bar(xs, [pols[n][key] or 0 for n in names], width, label=key.rsplit("_", 1)[1])
    ax1.set(
        xticks=range(len(names)), xticklabels=names, ylabel="seconds", title="per-frame latency"
    )
    ax1.legend()
    ax2.bar(names, [pols[n]["throughput_fps"] for n in names], color="tab:green")
    ax2.set(ylabel="RGB frames / s", title="throughput")
    c = results["config"]
    title = (f"{c['clients']} clients, {c['duration']} s per policy, {c['size']}, "
                 f"{c['latent_frames']} latent frames, T={c['steps']}")  # fmt: skip
    report.save_figure(fig, title, path)


async def run_all(base: str, job: Job, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out = {}
    for policy in args.policies:
        print(f"  {policy}: {args.clients} clients for {args.duration:.0f} s ...", flush=True)
        out[policy] = await run_policy(base, job, policy, args.clients, args.duration)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device if args.url is None else "cpu")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16  # the server's "auto"
    machine = report.machine_info(device, dtype)
    w, h = (int(x) for x in args.size.split("x"))
    job = Job("a kite over green hills", args.size, args.latent_frames, args.steps, png_bytes(w, h))
    with tempfile.TemporaryDirectory(prefix="packcache-load-") as data_dir:
        proc, base = (None, args.url) if args.url else start_server(args, data_dir)
        try:
            machine["server"] = base if proc else f"{base} (remote: device and dtype are its own)"
            report.print_machine(machine)
            print(f"server {base}; clients {args.clients} ({(args.clients + 1) // 2} websocket, "
                  f"{args.clients // 2} REST), {args.size}, {args.latent_frames} latent frames, "
                  f"T={args.steps}", flush=True)  # fmt: skip
            policies = asyncio.run(run_all(base, job, args))
        finally:
            if proc is not None:
                stop_server(proc)
    machine["load_avg_end"] = report.load_now()
    cfg = {
        k: getattr(args, k)
        for k in ("clients", "duration", "size", "latent_frames", "steps", "model")
    }
    results = {
        "config": cfg,
        "machine": machine,
        "policies": policies,
        "summary": {
            key: {n: s[key] for n, s in policies.items()}
            for key in (
                "throughput_fps",
                "ttff_p50",
                "frame_latency_p50",
                "frame_latency_p95",
                "frame_latency_max",
                "rejections",
                "peak_memory_allocated_bytes",
            )
        },
    }
    print()
    print(tables(policies))
    report.save(results, args.json, args.plot, plot)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
