"""Three times the concurrency limit at once: nothing crashes, memory stays in budget, the excess
waits or gets 429, and every accepted request completes."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from websockets.sync.client import connect

from packcache_core.generate import SamplingConfig
from packcache_core.pipeline import Pipeline, StepMemory, VideoParams
from packcache_core.policy import make_policy
from server.engine.scheduler import tick_bytes
from tests.server.conftest import LiveServer, png_bytes
from tests.server.test_stream import request

PROMPT = "a red square drifting"
STEPS = 3
CONCURRENCY = 2  # what the budget below allows
QUEUE = 2


def one_request_memory() -> tuple[int, StepMemory]:
    """(bytes held: KV cache and stream decoder state, step memory) of one test request,
    planned by the real pipeline."""
    pipeline = Pipeline.load("builtin:tiny-random", "builtin:patch")
    params = VideoParams(
        PROMPT, 3, size=(64, 64), policy=make_policy("packcache"), sampling=SamplingConfig(STEPS)
    )
    prepared = pipeline.prepare(Image.open(io.BytesIO(png_bytes())), params)
    spec = pipeline.plan(prepared)
    return spec.bytes + pipeline.decoder_bytes(prepared), pipeline.step_memory(spec)


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    held, step = one_request_memory()
    # two fit (their steps batched), three do not
    budget = CONCURRENCY * held + tick_bytes([step] * CONCURRENCY, CONCURRENCY) + held // 2
    live = LiveServer(
        tmp_path_factory.mktemp("busy"),
        memory_budget_bytes=budget,
        max_queued=QUEUE,
        max_batch=CONCURRENCY,
        stream_prompt_tokens=0,  # the websocket request then needs what a REST one needs
    ).start()
    yield live
    live.stop()


def sample_metrics(server: LiveServer, stop: threading.Event, out: list[dict[str, float]]) -> None:
    while not stop.is_set():
        out.append(server.metrics())
        stop.wait(0.05)


def test_three_times_the_limit(busy_server: LiveServer, tmp_path: Path) -> None:
    server = busy_server
    budget = server.settings.memory_budget_bytes
    assert budget is not None
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_metrics, args=(server, stop, samples))
    sampler.start()

    def post(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            files = {"input_reference": ("in.png", png_bytes(), "image/png")}
            form = {"prompt": PROMPT, "size": "64x64", "latent_frames": "3", "steps": str(STEPS)}
            return c.post("/v1/videos", data=form | {"seed": str(i)}, files=files)

    with ThreadPoolExecutor(3 * CONCURRENCY) as pool:
        responses = list(pool.map(post, range(3 * CONCURRENCY)))
    with connect(server.ws_url) as ws:  # the websocket is refused the same way, with 1013
        ws.send(request(steps=STEPS))
        refusal = ws.recv(timeout=30)
    assert ws.close_code == 1013 and '"queue_full"' in str(refusal)

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * (CONCURRENCY + QUEUE) + [429] * (3 * CONCURRENCY - CONCURRENCY - QUEUE)
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "queue_full"
    accepted = [r.json()["id"] for r in responses if r.status_code == 200]
    assert all(server.wait_done(v)["status"] == "completed" for v in accepted)
    stop.set()
    sampler.join()

    weights = samples[0]["packcache_model_weights_bytes"]
    assert max(s["packcache_num_requests_running"] for s in samples) == CONCURRENCY
    assert max(s["packcache_num_requests_waiting"] for s in samples) >= 1
    assert max(s["packcache_memory_reserved_bytes"] for s in samples) <= budget
    peak = samples[-1]['packcache_gpu_memory_peak_allocated_bytes{device="cpu"}']
    assert weights < peak <= weights + budget  # tracked tensor bytes never left the budget
    final = server.metrics()
    assert final['packcache_requests_rejected_total{reason="queue_full"}'] == 3
    assert final['packcache_requests_total{status="completed"}'] == CONCURRENCY + QUEUE
    assert server.client.get("/ready").status_code == 200
