"""After real requests, /metrics holds every documented metric with plausible values."""

from __future__ import annotations

import re
from pathlib import Path

from websockets.sync.client import connect

from tests.server.conftest import LiveServer, wait_until
from tests.server.test_stream import read_until, request

HISTOGRAMS = [
    "packcache_frame_latency_seconds",
    "packcache_time_to_first_frame_seconds",
    "packcache_request_duration_seconds",
    "packcache_queue_wait_seconds",
    "packcache_denoise_step_seconds",
    "packcache_frame_peak_memory_bytes",
    "packcache_realtime_factor",
    "packcache_stream_lead_seconds",
]
COUNTERS = [
    "packcache_requests_total",
    "packcache_requests_rejected_total",
    "packcache_frames_generated_total",
    "packcache_stream_stall_seconds_total",
]
GAUGES = [
    "packcache_gpu_memory_allocated_bytes",
    "packcache_gpu_memory_reserved_bytes",
    "packcache_gpu_memory_peak_allocated_bytes",
    "packcache_model_weights_bytes",
    "packcache_kv_cache_bytes",
    "packcache_kv_cache_budget_bytes",
    "packcache_memory_reserved_bytes",
    "packcache_kv_cache_usage_ratio",
    "packcache_num_requests_running",
    "packcache_num_requests_waiting",
    "packcache_websocket_streams_open",
    "packcache_ready",
    "packcache_model_info",
]
METRICS_MD = Path(__file__).parents[2] / "server" / "METRICS.md"


def total(samples: dict[str, float], name: str) -> float:
    """Sum over label sets of one sample name."""
    return sum(v for k, v in samples.items() if re.fullmatch(rf"{name}(\{{.*\}})?", k))


def test_metrics_after_a_run(server: LiveServer) -> None:
    rest = server.create(latent_frames=3, steps=2).json()
    assert server.wait_done(rest["id"])["status"] == "completed"
    with connect(server.ws_url) as ws:
        ws.send(request(latent_frames=2, steps=2, cache_policy="sliding", window=1))
        assert read_until(ws, "completed")["type"] == "completed"
    with connect(server.ws_url) as ws:  # one cancelled request too (by leaving)
        ws.send(request(latent_frames=10, steps=4, cancel_on_disconnect=True))
        read_until(ws, "progress")
        streams_open = server.metrics()["packcache_websocket_streams_open"]
    m = server.metrics()
    for name in HISTOGRAMS:
        assert f"{name}_count" in {k.split("{")[0] for k in m}, name
    for name in COUNTERS + GAUGES:
        assert any(k.split("{")[0] == name for k in m), name

    steps = (3 - 1) * 2 + (2 - 1) * 2  # denoising steps of the two completed requests
    assert m['packcache_denoise_step_seconds_count{policy="packcache"}'] >= 2 * 2
    assert m['packcache_denoise_step_seconds_count{policy="sliding"}'] == 1 * 2
    assert total(m, "packcache_denoise_step_seconds_count") >= steps
    assert 0 < total(m, "packcache_denoise_step_seconds_sum") < 60
    assert m['packcache_frame_latency_seconds_count{policy="packcache"}'] >= 2
    assert m['packcache_frame_latency_seconds_count{policy="sliding"}'] == 1
    assert m["packcache_time_to_first_frame_seconds_count"] >= 2
    ttff_mean = (
        m["packcache_time_to_first_frame_seconds_sum"]
        / m["packcache_time_to_first_frame_seconds_count"]
    )
    completed = m['packcache_request_duration_seconds_count{status="completed"}']
    e2e_mean = m['packcache_request_duration_seconds_sum{status="completed"}'] / completed
    assert completed == 2 and 0 < ttff_mean < e2e_mean * 1.5
    assert m["packcache_queue_wait_seconds_count"] >= 2
    assert m["packcache_realtime_factor_count"] == 2 and m["packcache_realtime_factor_sum"] > 0
    assert m['packcache_requests_total{status="completed"}'] == 2
    assert m['packcache_frames_generated_total{policy="packcache"}'] >= 8
    assert m['packcache_frames_generated_total{policy="sliding"}'] == 4
    assert m['packcache_requests_rejected_total{reason="queue_full"}'] == 0
    assert streams_open == 1 and m["packcache_websocket_streams_open"] in (0, 1)

    weights = m["packcache_model_weights_bytes"]
    assert weights > 1e6
    peak_frame = (
        m['packcache_frame_peak_memory_bytes_sum{device="cpu"}']
        / m['packcache_frame_peak_memory_bytes_count{device="cpu"}']
    )
    assert weights < peak_frame <= m['packcache_gpu_memory_peak_allocated_bytes{device="cpu"}']
    assert m['packcache_gpu_memory_allocated_bytes{device="cpu"}'] >= weights
    assert m['packcache_gpu_memory_reserved_bytes{device="cpu"}'] >= weights
    assert m["packcache_kv_cache_budget_bytes"] == 4 << 30
    assert m["packcache_ready"] == 1
    assert m['packcache_model_info{device="cpu",dtype="torch.float32",model="builtin:tiny-random"}']

    cancelled = 'packcache_requests_total{status="cancelled"}'
    wait_until(lambda: server.metrics()[cancelled] == 1, timeout=10)  # the socket closed
    idle = server.metrics()
    for name in ("kv_cache_bytes", "memory_reserved_bytes", "num_requests_running"):
        assert idle[f"packcache_{name}"] == 0, name


def test_metrics_md_lists_every_metric() -> None:
    text = METRICS_MD.read_text()
    for name in HISTOGRAMS + COUNTERS + GAUGES:
        assert f"`{name}`" in text, name
