"""The running server's parts and their life cycle: open, boot (load, warm up), shut down.

What it is: `Runtime`, built by the app factory from `Settings` and a registry; `open()` opens
the job store and data directory and marks jobs a dead process left unfinished as failed;
`boot()` loads the model off the event loop, starts the engine, runs a tiny warm-up generation
and fixes the memory budget; `sweep()` deletes videos past their retention, periodically;
`drain()` (on SIGTERM, see `drain.py`) stops admitting and lets accepted requests finish for a
while; `shutdown()` stops the engine and flushes the recorder.
What it is not: HTTP (routes reach it through `deps.py`).

Invariants: `/ready` is true only after a successful warm-up and while the engine thread lives
and is not stalled, and false from the first moment of a drain; without an engine, or while
draining, routes that need one answer 503. Once the engine thread has died the runtime stays
failed (`/health` 503 too) and `exit_code` is set: only a new process can serve again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Literal

import torch
from PIL import Image
from prometheus_client import CollectorRegistry

from packcache_core.generate import GenerationDefaults
from packcache_core.host import prepare_host
from packcache_core.loading import check_float16
from packcache_core.pipeline import Pipeline, VideoParams
from server.api.decodes import DecodeGate
from server.api.params import decode_upload, open_upload
from server.api.security import ApiKeys
from server.engine.engine import Engine, EngineConfig
from server.engine.events import Event, Finished
from server.engine.job import Submission
from server.engine.memory import memory_for, module_bytes, resolve_budget
from server.errors import Overloaded, ServerError, StorageError, Unavailable
from server.metrics import Metrics
from server.settings import Settings
from server.storage.images import ImageFiles
from server.storage.open import open_store
from server.storage.recorder import JobRecorder, VideoFiles
from server.storage.store import JobRecord, JobStore

log = logging.getLogger(__name__)
WARMUP_TIMEOUT_S = 600.0
WATCH_S = 0.2  # how often the supervisor looks at the engine thread and the job store
CLAIM_S = 2.0  # how often it looks for jobs a replica that died left unfinished
ENGINE_DIED_EXIT = 1  # the process's exit status after the engine thread died
DRAIN_POLL_S = 0.05
STREAM_CLOSE_S = 5.0  # after a drain, for websockets to send their final message and close
RESTART_CODE = "server_restarted"  # a job a stopped process left that cannot be resumed


class Runtime:
    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.keys = ApiKeys(settings.api_keys, settings.admin_api_keys)
        self.decodes = DecodeGate(
            settings.decode_budget_bytes, settings.max_decoding, settings.decode_wait_s
        )
        self.phase: Literal["starting", "ready", "failed", "draining", "stopping"] = "starting"
        self.started_at = time.time()  # the served model's `created` (`GET /v1/models`)
        self.failure: str | None = None
        self.exit_code: int | None = None  # set when only a restart helps; the runner exits
        self.engine: Engine | None = None
        self.metrics = Metrics(registry, str(settings.torch_device()))
        self.open_streams = 0  # websockets open now (the stream route counts them)
        self.metrics.ws_open.set_function(lambda: self.open_streams)
        # Set by open(), in the lifespan (they touch the disk):
        self.files: VideoFiles
        self.images: ImageFiles  # text-to-image results sent as URLs
        self.store: JobStore
        self.recorder: JobRecorder
        self.io: ThreadPoolExecutor | None = None
        self.orphans: list[JobRecord] = []  # unfinished jobs a stopped process left

    def open(self) -> None:
        """Store, files and recorder: enough to serve stored videos while the model loads."""
        s = self.settings
        self.files = VideoFiles(s.data_dir / "videos")
        self.images = ImageFiles(s.data_dir / "images")
        self.store = open_store(s.job_store_url())
        self.orphans = self.store.claim_unfinished()  # resumed once the engine runs
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packcache-io")
        self.recorder = JobRecorder(self.store, self.files, self.io, self._cancel)

    async def sweep(self) -> None:
        """Every `retention_sweep_s`, delete the videos whose retention has passed (records,
        then files); runs for the life of the app (the lifespan cancels it)."""
        if not self.settings.retention_s:
            return
        while True:
            try:
                await asyncio.to_thread(self.expire)
            except StorageError as e:  # the store is down for now: the next sweep retries
                log.warning("retention sweep: %s", e.message)
            await asyncio.sleep(self.settings.retention_sweep_s)

    def expire(self) -> list[str]:
        """Delete every video that finished more than `retention_s` ago, and every image
        made that long ago (none when 0: kept forever); returns the videos' ids."""
        if not self.settings.retention_s:
            return []
        images = self.images.expire(time.time() - self.settings.retention_s)
        if images:
            log.info("retention: deleted %d expired images", images)
        expired = self.store.expire(time.time() - self.settings.retention_s)
        for job_id in expired:
            self.files.remove(job_id)
        if expired:
            log.info("retention: deleted %d expired videos", len(expired))
        return expired

    def _cancel(self, job_id: str) -> None:
        if self.engine is not None:
            self.engine.cancel(job_id)

    def require_engine(self) -> Engine:
        if self.engine is None or self.phase != "ready":
            raise Unavailable(f"the server is not ready ({self.phase})", retry_after=5)
        return self.engine

    def readiness(self) -> tuple[bool, str | None]:
        if self.phase != "ready":
            return False, self.failure or self.phase
        assert self.engine is not None
        if not self.engine.alive:
            return False, "the engine thread has stopped"
        if self.engine.stalled:
            return False, "the engine made no step within the stall timeout"
        return True, None

    async def boot(self) -> None:
        """Load, start the engine, warm up, then open for requests and supervise the engine;
        records any failure."""
        try:
            await self._boot()
        except Exception as e:
            log.exception("start-up failed")
            self.phase, self.failure = "failed", f"start-up failed: {e}"
            return
        self.phase = "ready"
        log.info("ready: %s on %s", self.settings.model_name, self.settings.torch_device())
        await self._supervise()

    async def _supervise(self) -> None:
        """If the engine thread dies, fail: /health and /ready answer 503 and `exit_code` is set,
        so the runner (`drain.py`) exits and an orchestrator starts a fresh process. Meanwhile,
        follow the job store (`_follow_store`)."""
        engine = self.engine
        assert engine is not None
        loop = asyncio.get_running_loop()
        next_claim = loop.time() + CLAIM_S
        while engine.failure is None:
            await asyncio.sleep(WATCH_S)
            if self.phase != "ready":  # draining: take on nothing new
                continue
            claim = loop.time() >= next_claim
            if claim:
                next_claim = loop.time() + CLAIM_S
            try:
                await self._follow_store(engine, claim)
            except ServerError as e:  # the database is away: try again on the next round
                log.warning("following the job store: %s", e.message)
        self.failure = f"the engine thread died ({engine.failure}); the process must restart"
        self.phase, self.exit_code = "failed", ENGINE_DIED_EXIT
        log.critical(self.failure)

    async def _follow_store(self, engine: Engine, claim: bool) -> None:
        """What other replicas sharing the store did: a job whose record was deleted (through
        any replica) stops here before its next step; with `claim`, jobs that a replica which
        died left unfinished are resumed here (with SQLite, only this process's own, once)."""
        ids = engine.job_ids() if self.store.shared else []  # else deletes come through here
        if ids:
            known = await asyncio.to_thread(self.store.known, ids)
            for job_id in set(ids) - known:
                log.info("%s: deleted elsewhere; cancelling it", job_id)
                engine.cancel(job_id)
        if claim:
            await self.resume(await asyncio.to_thread(self.store.claim_unfinished))

    async def _boot(self) -> None:
        s = self.settings
        device, dtype = s.torch_device(), s.torch_dtype()
        host = prepare_host(device, s.threads)  # see packcache_core/host.py
        log.info("%d intra-op threads, malloc tuned: %s", host.threads, host.malloc_tuned)
        pipeline = await asyncio.to_thread(load_pipeline, s, device, dtype)
        weights = module_bytes(pipeline.model)
        memory = memory_for(device, weights)
        provisional = s.memory_budget_bytes or memory.free_bytes() or 1 << 62
        config = EngineConfig(
            provisional,
            s.max_running,
            s.max_queued,
            s.request_timeout_s,
            s.stall_timeout_s,
            s.max_batch,
            s.max_stream_s,
            s.pace_lead_s,
        )
        self.engine = Engine(pipeline, config, memory)
        self.metrics.bind(self.engine, lambda: self.readiness()[0], weights)
        self.metrics.info.info({"model": s.model_name, "device": str(device), "dtype": str(dtype)})
        self.engine.start()
        if s.warmup:
            await warm_up(self.engine, s.generation_defaults)
            # one frame's decode at the largest size served, measured where the device can tell
            decode = await asyncio.to_thread(memory.transient, pipeline.decode_probe)
            if decode is not None:
                log.info("decoding one latent frame peaks at %d bytes", decode)
                self.engine.set_decode_bytes(decode)
        budget = await asyncio.to_thread(
            resolve_budget, s.memory_budget_bytes, memory, s.memory_headroom_bytes
        )
        self.engine.set_budget(budget)
        self.engine.observer = self.metrics  # warm-up stays out of the metrics
        await self.resume(self.orphans)

    async def resume(self, records: list[JobRecord]) -> None:
        """Submit again, from their records, the jobs a stopped process left queued or
        running; each carries on from its last recorded frame, paced if it was. One that
        finds no room here (queue or decoder full) is released to the store, to be claimed
        again (here or by another replica); one that cannot resume at all (its model
        changed, its record is gone) fails with the reason."""
        assert self.engine is not None
        for record in records:
            try:
                await self._resubmit(self.engine, record)
            except Overloaded as e:
                log.info("%s: no room to resume it now (%s); left for the next claim", record.id, e)
                await asyncio.to_thread(self.store.release, [record.id])
            except (OSError, ValueError, KeyError, ServerError) as e:
                reason = "its saved request is gone" if isinstance(e, FileNotFoundError) else e
                message = (
                    f"the server stopped before this job finished and could not resume it "
                    f"({reason}); submit it again"
                )
                log.warning("%s: %s", record.id, message)
                await asyncio.to_thread(self._fail_orphan, record.id, message)
            else:
                log.info("%s: resumed", record.id)

    async def _resubmit(self, engine: Engine, record: JobRecord) -> None:
        """Its image decoded within the decode budget, as an upload's is; then submitted."""
        model = self.settings.model_name
        if record.model != model:
            raise ValueError(f"it was made by model {record.model!r}, this server runs {model!r}")
        params, image, recorded = await asyncio.to_thread(self.files.load_request, record.id)
        realtime = await asyncio.to_thread(self.files.realtime, record.id)
        listener = self.recorder.listener(record.id, params)
        if image is None:  # text-to-video: nothing to decode
            sub = Submission(
                record.id, None, params, (listener,), resume=recorded, realtime=realtime
            )
            await engine.submit(sub)
            return
        param = "input_reference"
        opened = await asyncio.to_thread(open_upload, image, self.settings, param)
        async with self.decodes.admit(opened.decode_bytes) as permit:
            decoded = await permit.decode(partial(decode_upload, opened, param))
            sub = Submission(
                record.id, decoded, params, (listener,), resume=recorded, realtime=realtime
            )
            await engine.submit(sub)

    def _fail_orphan(self, job_id: str, message: str) -> None:
        self.store.finish(job_id, "failed", (RESTART_CODE, message))
        self.files.remove(job_id)

    async def drain(self, grace_s: float, hurry: asyncio.Event) -> None:
        """Stop admitting, let accepted requests finish for up to `grace_s` (until `hurry` is
        set), then stop the engine, which leaves the rest unfinished and resumable (code
        `shutdown` to their streams); returns once
        every outcome is recorded and the streams have had a moment to send theirs."""
        if self.phase == "ready":
            self.phase = "draining"  # /ready and new requests answer 503 from now on
        engine = self.engine
        if engine is None:
            return
        busy = lambda: engine.stats.running > 0 or engine.stats.waiting > 0
        log.info("draining: up to %g s for the requests accepted so far", grace_s)
        loop = asyncio.get_running_loop()
        end = loop.time() + grace_s
        while busy() and loop.time() < end and not hurry.is_set():
            await asyncio.sleep(DRAIN_POLL_S)
        if busy():
            left = len(engine.job_ids())
            log.warning(
                "drain: grace period over; %d unfinished jobs stop here, kept with their "
                "records: they resume from their last recorded frame when a server starts on "
                "this data (or another replica claims them)",
                left,
            )
        self.phase = "stopping"
        await asyncio.to_thread(engine.stop)
        if self.io is not None:  # the recorder's one thread runs in order: this waits for all
            await asyncio.to_thread(self.io.submit(lambda: None).result)
        end = loop.time() + STREAM_CLOSE_S
        while self.open_streams > 0 and loop.time() < end:
            await asyncio.sleep(DRAIN_POLL_S)

    def shutdown(self) -> None:
        self.phase = "stopping"
        if self.engine is not None:
            self.engine.stop()
        if self.io is not None:  # opened
            self.io.shutdown(wait=True)  # every finished job recorded
            self.store.close()


def load_pipeline(s: Settings, device: torch.device, dtype: torch.dtype) -> Pipeline:
    """The served pipeline as the settings ask (float16 refused for bf16 weights unless
    allowed; the target size bucket)."""
    check_float16(s.model, dtype, s.allow_float16)
    return Pipeline.load(
        s.model, s.tokenizer, s.text_tokenizer, str(device), dtype, target_size=s.target_size
    )


async def warm_up(engine: Engine, defaults: GenerationDefaults) -> None:
    """A 2-latent-frame, 2-step generation at 64x64 through the whole path, with the rest of
    the sampling a default request gets (`defaults`: the card's history mask, temperature)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Finished] = loop.create_future()

    def listener(event: Event) -> None:
        if isinstance(event, Finished):
            loop.call_soon_threadsafe(done.set_result, event)

    image = Image.new("RGB", (64, 64), (120, 140, 160))
    sampling = dataclasses.replace(defaults.sampling, steps=2)
    params = VideoParams("warm-up", latent_frames=2, size=(64, 64), sampling=sampling)
    await engine.submit(Submission("warmup", image, params, (listener,)))
    finished = await asyncio.wait_for(done, WARMUP_TIMEOUT_S)
    if finished.status != "completed":
        raise RuntimeError(f"warm-up generation {finished.status}: {finished.message}")
