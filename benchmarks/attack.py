"""An outside attack on a real `packcache serve`: one bounded probe per finding of issue 27.

    python benchmarks/attack.py                       # ~5 min on 2 busy CPU cores
    python benchmarks/attack.py --json out/attack.json

What it does: starts `packcache serve` (`builtin:tiny-random` on the CPU, an API key, info
logging, `--max-running 2`) on a free loopback port with a fresh data directory, and probes it
as a client would, over HTTP and websockets, each probe bounded in count and concurrency:
large, binary, malformed and non-BMP control messages on a fixed-length stream (1); 8-way
concurrent first requests for spritesheets (2); two prompts for one frame, then an extension
(3); `cancel` and `stop` behind a `prompt` while queued (4, 8); prompts during the last frame
(5); 1,000 prompts then `stop` (6); a reader at 10 messages/s with and without `frame_window`
(7); a remix past the length limit, invalid UTF-8, a key in the URL, `stop` with an unknown
field, an image past Pillow's own limit (8); every `seconds` the OpenAI SDK offers, a prompt
too long for the text slots (Also); then SIGTERM with a paced stream and a job unfinished, and
a restart on the same data that must finish both (9).

Reported (JSON, and a summary on stdout): requests sent (HTTP requests, websocket connections
and messages), HTTP 5xx, tracebacks and ERROR lines in the server's log, videos lost (accepted
and expected to complete, yet not `completed` after the restart), the server's RSS after
warm-up and after the probes, the load average, and each probe's findings with `ok`.

What it is not: a fuzzer (tests/reliability has those) or a benchmark of speed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

KEY = "sk-attack-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY: dict[str, Any] = {"size": "64x64", "steps": 1}
ROOT = Path(__file__).resolve().parents[1]
BOUNDED = 64  # --max-bounded-latent-frames: the SDK's longest `seconds` (20: 61) fits
PROBE_S = 150.0  # a probe that takes longer is stopped and reported (the run stops by itself)


@dataclass
class Tally:
    http: int = 0
    http_5xx: int = 0
    ws_connections: int = 0
    ws_messages: int = 0
    expected: list[str] = field(default_factory=list)  # videos that must end completed


def image_b64() -> str:
    img = Image.new("RGB", (96, 64), (200, 40, 40))
    for x in range(0, 96, 8):
        img.putpixel((x, x % 64), (20, 200, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


class Served:
    """`packcache serve` in a subprocess, its log in the data directory."""

    def __init__(self, data: Path, flags: list[str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data, self.flags = data, flags
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data / "server.log"

    def start(self, timeout: float) -> None:
        cmd = [sys.executable, "-m", "server", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data), "--log-level", "info", *self.flags]
        env = os.environ | {"PACKCACHE_API_KEYS": KEY}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"packcache serve exited with {self.proc.returncode}: {self.log}")
            try:
                if httpx.get(self.base + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"packcache serve not ready after {timeout} s: {self.log}")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def sigterm(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def record(self, video_id: str) -> dict[str, Any]:
        return dict(json.loads((self.data / "videos" / video_id / "request.json").read_text()))


class Client:
    """HTTP and websocket calls that count what they send."""

    def __init__(self, served: Served, http: httpx.AsyncClient, tally: Tally) -> None:
        self.served, self.http, self.tally = served, http, tally
        self.ws_url = served.base.replace("http", "ws", 1) + "/v1/videos/stream"

    async def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self.tally.http += 1
        reply = await self.http.request(method, path, headers=AUTH, **kw)
        self.tally.http_5xx += reply.status_code >= 500
        return reply

    async def create(self, **fields: Any) -> str:
        data = {"prompt": "a red square drifting", **TINY, **fields}
        files = {"input_reference": ("in.png", base64.b64decode(image_b64()), "image/png")}
        reply = await self.call(
            "POST", "/v1/videos", data={k: str(v) for k, v in data.items()}, files=files
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["id"])

    async def done(self, video_id: str, timeout: float = 120) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            video: dict[str, Any] = (await self.call("GET", f"/v1/videos/{video_id}")).json()
            if video["status"] in ("completed", "failed"):
                return video
            await asyncio.sleep(0.2)
        raise TimeoutError(video_id)

    def stream(self, query: str = "") -> Any:
        self.tally.ws_connections += 1
        headers = None if query else AUTH
        return connect(self.ws_url + query, additional_headers=headers, max_size=None)

    async def send(self, ws: ClientConnection, message: Any) -> None:
        self.tally.ws_messages += 1
        await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def open(self, ws: ClientConnection, **fields: Any) -> None:
        await self.send(
            ws,
            {
                "type": "generate",
                "prompt": "a red square drifting",
                "image": image_b64(),
                **TINY,
                **fields,
            },
        )


async def until(
    ws: ClientConnection, kind: str, log: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The next message of `kind` ("": any), or the final one; every JSON message goes to
    `log`."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), 120)
        if isinstance(raw, bytes):
            continue
        message: dict[str, Any] = json.loads(raw)
        if log is not None:
            log.append(message)
        if not kind or message["type"] in (kind, "completed", "error"):
            return message


def kinds(log: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in log if m["type"] == kind]


async def large_control_messages(c: Client) -> dict[str, Any]:
    """Item 1: big, binary, malformed and non-BMP control messages cost nothing."""
    log: list[dict[str, Any]] = []
    async with c.stream() as ws:
        await c.open(ws, latent_frames=5)
        await until(ws, "started", log)
        for message in [
            {"type": "prompt", "prompt": "\U0001f600" * 1600},
            "x" * 30_000,
            b"\x00\x01",
            {"type": "pause"},
        ]:
            await c.send(ws, message)
        final = await until(ws, "completed", log)
    c.tally.expected.append(final["id"])
    rejected = kinds(log, "rejected")
    return {
        "rejected": [m["error"]["code"] for m in rejected],
        "final": final["type"],
        "ok": final["type"] == "completed" and len(rejected) == 4,
    }


async def spritesheets(c: Client, videos: int = 3, concurrency: int = 8) -> dict[str, Any]:
    """Item 2: concurrent first requests for a spritesheet all get the same whole file."""
    ids = [await c.create(latent_frames=2) for _ in range(videos)]
    c.tally.expected += ids
    statuses: list[int] = []
    identical = True
    for video_id in ids:
        assert (await c.done(video_id))["status"] == "completed"
        path = f"/v1/videos/{video_id}/content?variant=spritesheet"
        replies = await asyncio.gather(*(c.call("GET", path) for _ in range(concurrency)))
        statuses += [r.status_code for r in replies]
        identical &= len({r.content for r in replies}) == 1
    return {
        "requests": len(statuses),
        "non_200": sum(s != 200 for s in statuses),
        "ok": identical and set(statuses) == {200},
    }


async def prompt_order(c: Client) -> dict[str, Any]:
    """Item 3: two prompts for one frame: the last sent is in force, recorded once; an
    extension that asks for the other text records a change."""
    log: list[dict[str, Any]] = []
    async with c.stream() as ws:
        await c.open(ws, open_ended=True, cache_policy="sliding", latent_frames=3)
        await until(ws, "latent_frame", log)
        await c.send(ws, {"type": "prompt", "prompt": "zebra stripes"})
        await c.send(ws, {"type": "prompt", "prompt": "apple tree"})
        while len(kinds(log, "prompt_changed")) + len(kinds(log, "rejected")) < 2:
            await until(ws, "", log)  # any message
        await c.send(ws, {"type": "stop"})
        final = await until(ws, "completed", log)
    c.tally.expected.append(final["id"])
    changes = c.served.record(final["id"])["prompt_changes"]
    made = final["stats"]["latent_frames"] - 1
    body = {"video": {"id": final["id"]}, "prompt": "zebra stripes", "latent_frames": 2}
    extension = (await c.call("POST", "/v1/videos/extensions", json=body)).json()["id"]
    c.tally.expected.append(extension)
    await c.done(extension)
    extended = c.served.record(extension)["prompt_changes"]
    indexes = [i for i, _ in changes]
    ok = (
        len(set(indexes)) == len(indexes)
        and changes[-1][1] == "apple tree"
        and extended[-1] == [made + 1, "zebra stripes"]
    )
    return {"recorded": changes, "extension_records": extended, "ok": ok}


async def queued_control(c: Client) -> dict[str, Any]:
    """Items 4 and 8: `cancel` behind a `prompt`, and `stop` of an open-ended stream, while
    queued behind two long jobs: answered at once, nothing started, no video."""
    blockers = [await c.create(latent_frames=12, steps=4, cache_policy="full") for _ in range(2)]
    out: dict[str, Any] = {}
    cases: list[tuple[str, dict[str, Any], list[dict[str, str]]]] = [
        (
            "cancel_behind_prompt",
            {"latent_frames": 4},
            [{"type": "prompt", "prompt": "a blue circle"}, {"type": "cancel"}],
        ),
        (
            "stop_before_first_frame",
            {"open_ended": True, "cache_policy": "sliding"},
            [{"type": "stop"}],
        ),
    ]
    for name, fields, control in cases:
        log: list[dict[str, Any]] = []
        async with c.stream() as ws:
            await c.open(ws, **fields)
            queued = await until(ws, "queued", log)
            t0 = time.monotonic()
            for message in control:
                await c.send(ws, message)
            final = await until(ws, "completed", log)
        out[name] = {
            "position": queued["position"],
            "final": final.get("error", {}).get("code", final["type"]),
            "answered_s": round(time.monotonic() - t0, 3),
            "started": bool(kinds(log, "started")),
        }
    for video_id in blockers:  # ours to stop: not lost
        await c.call("DELETE", f"/v1/videos/{video_id}")
    out["ok"] = (
        out["cancel_behind_prompt"]["final"] == "cancelled"
        and out["stop_before_first_frame"]["final"] == "stopped_before_first_frame"
        and not any(out[k]["started"] for k in ("cancel_behind_prompt", "stop_before_first_frame"))
    )
    return out


async def prompts_at_the_end(c: Client, most: int = 30) -> dict[str, Any]:
    """Item 5: prompts sent all through a 3-latent-frame video: none acknowledged past its end."""
    log: list[dict[str, Any]] = []
    sent = 0
    async with c.stream() as ws:
        await c.open(ws, latent_frames=3, steps=3)
        while True:
            message = await until(ws, "progress", log)
            if message["type"] != "progress":
                break
            if sent < most:
                await c.send(ws, {"type": "prompt", "prompt": f"turn {sent}"})
                sent += 1
    c.tally.expected.append(message["id"])
    past = [m for m in kinds(log, "prompt_changed") if m["latent_index"] >= 3]
    codes = sorted({m["error"]["code"] for m in kinds(log, "rejected")})
    return {
        "sent": sent,
        "acknowledged": len(kinds(log, "prompt_changed")),
        "rejected_codes": codes,
        "past_the_end": len(past),
        "ok": not past and message["type"] == "completed",
    }


async def prompt_flood(c: Client, n: int = 1000) -> dict[str, Any]:
    """Item 6: 1,000 prompts then `stop`: bounded, answered, `stop` not held behind them."""
    log: list[dict[str, Any]] = []
    async with c.stream() as ws:
        await c.open(ws, open_ended=True, cache_policy="sliding")
        await until(ws, "latent_frame", log)
        for i in range(n):
            await c.send(ws, {"type": "prompt", "prompt": f"flood {i}"})
        t0 = time.monotonic()
        await c.send(ws, {"type": "stop"})
        final = await until(ws, "completed", log)
        stop_s = time.monotonic() - t0
    c.tally.expected.append(final["id"])
    answered = len(kinds(log, "prompt_changed")) + len(kinds(log, "rejected"))
    changes = c.served.record(final["id"])["prompt_changes"]
    return {
        "prompts": n,
        "answered": answered,
        "stop_to_final_s": round(stop_s, 3),
        "latent_frames": final["stats"]["latent_frames"],
        "recorded_changes": len(changes),
        "ok": answered == n and len(changes) <= final["stats"]["latent_frames"],
    }


async def slow_reader(c: Client, window: int | None, rate: float = 5.0) -> dict[str, Any]:
    """Item 7: a reader at `rate` messages/s (slower than this loaded CPU generates 64x64
    frames), acknowledging each frame once read."""
    fields: dict[str, Any] = {"latent_frames": 10}
    if window is not None:
        fields["frame_window"] = window
    messages, header = 0, None
    t0 = time.monotonic()
    async with c.stream() as ws:
        await c.open(ws, **fields)
        while True:
            raw = await asyncio.wait_for(ws.recv(), 120)
            messages += 1
            await asyncio.sleep(1 / rate)
            if isinstance(raw, bytes):
                if window is not None and header is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await c.send(ws, {"type": "ack", "index": header["index"]})
                continue
            header = json.loads(raw)
            if header["type"] in ("completed", "error"):
                break
    c.tally.expected.append(header["id"])
    return {
        "window": window,
        "messages_read": messages,
        "read_s": round(time.monotonic() - t0, 2),
        "dropped": header.get("dropped"),
    }


async def small_items(c: Client) -> dict[str, Any]:
    """Item 8: a remix past the limit, `stop` with a field, invalid UTF-8, a key in the URL,
    an image past Pillow's own limit."""
    log: list[dict[str, Any]] = []
    async with c.stream() as ws:  # an open-ended source past max_bounded_latent_frames
        await c.open(ws, open_ended=True, cache_policy="sliding", latent_frames=3)
        for _ in range(BOUNDED):
            await until(ws, "latent_frame", log)
        await c.send(ws, {"type": "stop", "now": True})
        await c.send(ws, {"type": "stop"})
        final = await until(ws, "completed", log)
    c.tally.expected.append(final["id"])
    remix = await c.call(
        "POST", f"/v1/videos/{final['id']}/remix", json={"prompt": "a blue circle"}
    )
    stop_field = [m["error"]["param"] for m in kinds(log, "rejected")]
    for before in (
        [],
        [{"type": "generate", "prompt": "x", "image": image_b64(), **TINY, "latent_frames": 2}],
    ):
        async with c.stream() as ws:
            for message in before:
                await c.send(ws, message)
            c.tally.ws_messages += 1
            await ws.send(b"\xff\xfe{}", text=True)  # a text frame that is not UTF-8
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 60)
            except ConnectionClosed:
                pass
    async with c.stream(f"?api_key={KEY}") as ws:  # a key in the URL: logged redacted
        await c.send(ws, {"type": "cancel"})
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
    files = {"input_reference": ("big.png", png_header(20_000, 20_000), "image/png")}
    bomb = await c.call("POST", "/v1/videos", data={"prompt": "x"}, files=files)
    bomb_message = bomb.json()["error"]["message"]
    return {
        "remix_status": remix.status_code,
        "remix_message": remix.json()["error"]["message"] if remix.status_code != 200 else None,
        "stop_with_a_field_param": stop_field,
        "bomb_status": bomb.status_code,
        "bomb_message": bomb_message,
        "ok": remix.status_code == 400
        and stop_field == ["now"]
        and bomb.status_code == 400
        and "decompression" not in bomb_message.lower(),
    }


async def also(c: Client) -> dict[str, Any]:
    """The "Also" items: every `seconds` the SDK offers with a bounded policy; the real
    limit of a mid-stream prompt in `prompt_too_long`."""
    statuses = {}
    for seconds in ("4", "8", "12", "16", "20"):
        files = {"input_reference": ("in.png", base64.b64decode(image_b64()), "image/png")}
        form = {"prompt": "x", "seconds": seconds, "cache_policy": "sliding", **TINY}
        reply = await c.call(
            "POST", "/v1/videos", data={k: str(v) for k, v in form.items()}, files=files
        )
        statuses[seconds] = reply.status_code
        if reply.status_code == 200:  # accepted is what is probed: ours to cancel
            await c.call("DELETE", f"/v1/videos/{reply.json()['id']}")
    log: list[dict[str, Any]] = []
    async with c.stream() as ws:
        await c.open(ws, latent_frames=4)
        await until(ws, "started", log)
        await c.send(ws, {"type": "prompt", "prompt": "y" * 1500})
        final = await until(ws, "completed", log)
    c.tally.expected.append(final["id"])
    (too_long,) = kinds(log, "rejected") or [{"error": {"message": ""}}]
    message = too_long["error"]["message"]
    return {
        "seconds_status": statuses,
        "prompt_too_long": message,
        "ok": set(statuses.values()) == {200} and "1500 characters" in message,
    }


async def drain_and_restart(
    c: Client, served: Served, tally: Tally, timeout: float
) -> dict[str, Any]:
    """Item 9: SIGTERM (drain 1 s) with a REST job and a paced stream unfinished; the
    restarted server on the same data completes both, the stream paced."""
    job = await c.create(latent_frames=10, steps=4, cache_policy="full")
    tally.expected.append(job)
    ws = await c.stream().__aenter__()
    await c.open(ws, latent_frames=16, realtime=True)
    stream = (await until(ws, "latent_frame"))["id"]
    tally.expected.append(stream)
    code = await asyncio.to_thread(served.sigterm, 60)
    close = None
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    except ConnectionClosed as e:
        close = e.rcvd.code if e.rcvd else None
    left = {vid: (served.data / "videos" / vid / "request.json").is_file() for vid in (job, stream)}
    await asyncio.to_thread(served.start, timeout)
    finished = {vid: await c.done(vid, 300) for vid in (job, stream)}
    paced = (finished[stream].get("stats") or {}).get("realtime")
    return {
        "exit_status": code,
        "stream_close_code": close,
        "records_kept": left,
        "after_restart": {vid: v["status"] for vid, v in finished.items()},
        "resumed_paced": paced,
        "ok": code == 0
        and all(left.values())
        and paced is True
        and all(v["status"] == "completed" for v in finished.values()),
    }


async def attack(served: Served, tally: Tally, timeout: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=served.base, timeout=120) as http:
        c = Client(served, http, tally)
        await c.done(await c.create(latent_frames=2))  # warm: allocations settle
        rss_before = served.rss_mib()
        probes: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "1_large_control_messages": lambda: large_control_messages(c),
            "2_spritesheets": lambda: spritesheets(c),
            "3_prompt_order": lambda: prompt_order(c),
            "4_8_queued_control": lambda: queued_control(c),
            "5_prompts_at_the_end": lambda: prompts_at_the_end(c),
            "6_prompt_flood": lambda: prompt_flood(c),
            "7_slow_reader_unwindowed": lambda: slow_reader(c, None),
            "7_slow_reader_window_2": lambda: slow_reader(c, 2),
            "8_small_items": lambda: small_items(c),
            "also": lambda: also(c),
        }
        results: dict[str, Any] = {}
        for name, probe in probes.items():
            t0 = time.monotonic()
            try:
                results[name] = await asyncio.wait_for(probe(), PROBE_S)
            except Exception as e:  # a probe that broke is a finding, not the end of the run
                results[name] = {"ok": False, "exception": f"{type(e).__name__}: {e}"}
            results[name]["seconds"] = round(time.monotonic() - t0, 2)
            print(f"{name}: {json.dumps(results[name])[:300]}", flush=True)
        await asyncio.sleep(2)  # let the last jobs' files close
        rss_after = served.rss_mib()
        restart = drain_and_restart(c, served, tally, timeout)
        results["9_drain_and_restart"] = await asyncio.wait_for(restart, timeout + 2 * PROBE_S)
        print(f"9_drain_and_restart: {json.dumps(results['9_drain_and_restart'])}", flush=True)
        lost = [vid for vid in tally.expected if (await c.done(vid, 300))["status"] != "completed"]
    return {
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_after": round(rss_after, 1),
        "videos_lost": lost,
        "probes": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--start-timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="packcache-attack-") as tmp:
        flags = ["--model", "builtin:tiny-random", "--device", "cpu", "--max-running", "2"]
        flags += ["--max-bounded-latent-frames", str(BOUNDED), "--drain-timeout-s", "1"]
        served = Served(Path(tmp), flags)
        served.start(args.start_timeout)
        tally = Tally()
        try:
            found = asyncio.run(attack(served, tally, args.start_timeout))
        finally:
            if served.proc.poll() is None:
                served.proc.terminate()
                served.proc.wait(timeout=60)
        log = served.log.read_text(errors="replace")
    lines = log.splitlines()
    out = {
        "command": "python benchmarks/attack.py",
        "requests": {
            "http": tally.http,
            "ws_connections": tally.ws_connections,
            "ws_messages": tally.ws_messages,
        },
        "http_5xx": tally.http_5xx,
        "tracebacks": log.count("Traceback (most recent call last)"),
        "error_lines": sum(" ERROR " in line or line.startswith("ERROR") for line in lines),
        "redacted_twice": log.count("[redacted]]"),
        "videos_expected": len(tally.expected),
        **found,
        "videos_lost": len(found["videos_lost"]),
        "lost_ids": found["videos_lost"],
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    summary = {k: v for k, v in out.items() if k != "probes"}
    print(json.dumps(summary, indent=2))
    failed = [name for name, r in found["probes"].items() if not r.get("ok", True)]
    print("probes not ok:", failed or "none")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
