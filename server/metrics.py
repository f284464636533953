"""Prometheus metrics on an injected registry, fed by the engine's plain statistics.

What it is: `Metrics`, which implements `EngineObserver` (histograms and counters observed as
events happen) and reads gauges from the engine and device memory at scrape time. Names and
buckets follow serving-conventions §6; the full table is in `server/METRICS.md`. What it is not:
a source of truth for device memory (DCGM/NVML are), or anything the core imports.

Invariants: only low-cardinality labels (policy, status, reason, device); every label value a
dashboard needs exists from start-up at 0; names are stable (dashboards and alerts use them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from packcache_core.policy import POLICIES
from server.engine.engine import Engine
from server.engine.events import FinalStatus, FrameStats, RequestStats

PREFIX = "packcache"
STATUSES = get_args(FinalStatus)  # the engine's list: one home
REJECT_REASONS = ("queue_full", "request_too_large", "unavailable")

FRAME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600)
TTFF_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
E2E_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BYTES_BUCKETS = tuple(float(1 << k) for k in range(24, 39))  # 16 MiB .. 256 GiB, x2
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
RTF_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
LEAD_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 20, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry, device: str) -> None:
        self.device = device
        r = registry
        self.frame_latency = Histogram(
            f"{PREFIX}_frame_latency_seconds",
            "Wall time per generated latent frame (since the request's previous one), decoded",
            ["policy"],
            buckets=FRAME_BUCKETS,
            registry=r,
        )
        self.ttff = Histogram(
            f"{PREFIX}_time_to_first_frame_seconds",
            "Arrival to the first generated latent frame decoded, queue wait included",
            buckets=TTFF_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Arrival to finish, by final status",
            ["status"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Arrival to start (cache allocated)",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.step = Histogram(
            f"{PREFIX}_denoise_step_seconds",
            "One denoising step of one request",
            ["policy"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            f"{PREFIX}_batch_requests",
            "Requests whose denoising steps shared one forward (1: a step alone)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.frame_peak = Histogram(
            f"{PREFIX}_frame_peak_memory_bytes",
            "Largest device memory in use during the steps of one latent frame",
            ["device"],
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_requests", "Finished requests by final status", ["status"], registry=r
        )
        self.rejected = Counter(
            f"{PREFIX}_requests_rejected",
            "Requests refused at admission, by reason",
            ["reason"],
            registry=r,
        )
        self.frames = Counter(
            f"{PREFIX}_frames_generated",
            "RGB frames decoded from generated latent frames",
            ["policy"],
            registry=r,
        )
        self.rtf = Histogram(
            f"{PREFIX}_realtime_factor",
            "Generation wall seconds per second of video, completed unpaced requests",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.lead = Histogram(
            f"{PREFIX}_stream_lead_seconds",
            "Paced streams: video seconds emitted ahead of playback, at each generated frame",
            buckets=LEAD_BUCKETS,
            registry=r,
        )
        self.stall = Counter(
            f"{PREFIX}_stream_stall_seconds",
            "Paced streams: seconds playback waited for frames (underrun)",
            registry=r,
        )
        self.ws_open = Gauge(
            f"{PREFIX}_websocket_streams_open", "Open /v1/videos/stream connections", registry=r
        )
        self.info = Info(f"{PREFIX}_model", "Served model", registry=r)
        self._registry = r
        # Create every known label set now, so series exist (at 0) before the first event.
        for family, values in [
            (self.frame_latency, tuple(POLICIES)),  # the registry as it is now
            (self.step, tuple(POLICIES)),
            (self.frames, tuple(POLICIES)),
            (self.duration, STATUSES),
            (self.requests, STATUSES),
            (self.rejected, REJECT_REASONS),
            (self.frame_peak, (device,)),
        ]:
            for value in values:
                family.labels(value)

    def bind(self, engine: Engine, ready: Callable[[], bool], weight_bytes: int) -> None:
        """Gauges read at scrape time from the engine and its device memory."""
        mem, r, d = engine.memory, self._registry, self.device

        def gauge(name: str, doc: str, read: Callable[[], float], device: bool = False) -> None:
            g = Gauge(f"{PREFIX}_{name}", doc, ["device"] if device else [], registry=r)
            (g.labels(d) if device else g).set_function(read)

        gauge(
            "gpu_memory_allocated_bytes",
            "Allocator bytes in live tensors (CPU: tracked)",
            mem.allocated,
            device=True,
        )
        gauge(
            "gpu_memory_reserved_bytes",
            "Allocator bytes held (CPU: weights + reservations)",
            mem.reserved,
            device=True,
        )
        gauge(
            "gpu_memory_peak_allocated_bytes",
            "Largest allocated since start",
            mem.peak,
            device=True,
        )
        gauge("model_weights_bytes", "Bytes of the model's weights", lambda: weight_bytes)
        gauge(
            "kv_cache_bytes",
            "KV cache bytes held by running requests",
            lambda: engine.stats.kv_bytes,
        )
        gauge(
            "kv_cache_budget_bytes",
            "Memory budget for KV caches plus one step's activations",
            lambda: engine.stats.budget_bytes,
        )
        gauge(
            "memory_reserved_bytes",
            "Reserved by running requests: caches + one tick's activations",
            lambda: engine.stats.reserved_bytes,
        )
        gauge(
            "kv_cache_usage_ratio",
            "memory_reserved_bytes / kv_cache_budget_bytes",
            lambda: engine.stats.reserved_bytes / max(1, engine.stats.budget_bytes),
        )
        gauge("num_requests_running", "Requests generating", lambda: engine.stats.running)
        gauge("num_requests_waiting", "Accepted, not yet started", lambda: engine.stats.waiting)
        gauge("ready", "1 when /ready answers 200", lambda: float(ready()))

    # -- EngineObserver -------------------------------------------------------------------

    def on_reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def on_start(self, queue_wait_s: float) -> None:
        self.queue_wait.observe(queue_wait_s)

    def on_step(self, policy: str, seconds: float) -> None:
        self.step.labels(policy).observe(seconds)

    def on_batch(self, requests: int) -> None:
        self.batch.observe(requests)

    def on_frame(self, frame: FrameStats) -> None:
        self.frame_latency.labels(frame.policy).observe(frame.latency_s)
        self.frame_peak.labels(self.device).observe(frame.peak_memory_bytes)
        self.frames.labels(frame.policy).inc(frame.rgb_frames)
        if frame.time_to_first_frame_s is not None:
            self.ttff.observe(frame.time_to_first_frame_s)
        if frame.pace is not None:
            self.lead.observe(frame.pace.lead_s)
            self.stall.inc(frame.pace.stall_s)

    def on_finish(self, status: FinalStatus, stats: RequestStats) -> None:
        self.requests.labels(status).inc()
        self.duration.labels(status).observe(stats.duration_s)
        # A paced request is held to playback, so its factor is about 1 by construction and
        # says nothing of the engine's speed: its stall seconds tell whether it kept up.
        if status == "completed" and stats.realtime_factor is not None and not stats.realtime:
            self.rtf.observe(stats.realtime_factor)
