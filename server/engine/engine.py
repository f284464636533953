"""The engine: one thread that owns the model and runs every request's device work.

What it is: `Engine`, whose thread takes submissions from a bounded intake, prepares and plans
them (image -> codes, prompt -> ids, cache size), lets the scheduler admit them by memory,
and runs ticks: in each, the scheduler's next batch of running requests (all of them, up to
`max_batch`, in round-robin order) does one unit of work each, so all of them progress. A
request's prefill runs alone (prompts differ in length); the denoising steps of the others run
as one batched forward per frame geometry (the core's step loop, `batch.tick`: each request's
two rows attend over its own fixed-size cache), then each request samples, writes back and
decodes on its own; the engine accounts each request's outcome. With `max_batch` 1 a tick is
one request's step (round robin, no batching). A paced request (`realtime`, see `pace.py`)
that leads playback by `pace_lead_s` or more is passed over; when every running request is, the
thread sleeps until the first of them falls below its bound or a submission or cancel wakes it.
Each event goes to the request's listeners at once (frames as soon as a latent frame decodes).
What it is not: a web handler (nothing here awaits; routes await `submit`, which the engine
answers through the caller's event loop) or a writer of files (the recorder listens).

Joining and leaving a batch: a newcomer's first tick is its prefill; it joins the batched
forward in the next tick, at the start of its first frame, and leaves after its last frame (or
when it fails, is cancelled or times out, before the next tick). Members need not share frame
boundaries: each row carries its own positions, mask and step index, and a row's result does
not depend on the other rows, so holding a newcomer back until the others start a frame would
only delay its first frame.

Invariants: device work happens only on the engine thread; a request's cancel flag and deadline
are checked before every tick, so before each of its steps; a request that fails is finished
and its cache freed without touching any other request (`tick` runs a batched forward that
raises again one request at a time, so that only the faulty one fails); every accepted request gets
exactly one `Finished` event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from packcache_core.batch import tick
from packcache_core.generate import PromptTooLong
from packcache_core.host import release_freed_blocks
from packcache_core.pipeline import FrameOutput, Pipeline, StepMemory, VideoRun
from packcache_core.record import Recorded
from server.engine.events import (
    EngineObserver,
    Event,
    FinalStatus,
    Finished,
    Frame,
    NullObserver,
    Progress,
    PromptChanged,
    Queued,
    Started,
)
from server.engine.job import Admission, Job, PromptRequest, Submission, answer
from server.engine.memory import DeviceMemory
from server.engine.pace import DEFAULT_LEAD_S, Pace
from server.engine.scheduler import FifoScheduler, tick_bytes
from server.errors import InvalidRequest, NotReady, Overloaded, ServerError, Unavailable

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.25
# An open-ended video hands freed heap back every this many latent frames: the allocator keeps
# freed blocks for speed (packcache_core/host.py), so where temporaries of other threads land
# between its steps can otherwise raise the heap's high-water mark, step by step, for hours.
TRIM_EVERY = 50
MIN_WAIT_S = 0.001


CLIENT_CANCEL = "cancelled by the client"
NOTHING_MADE = "stopped before its first frame: no video was made"


def _prompt_refusal(e: ValueError) -> InvalidRequest:
    code = "prompt_too_long" if isinstance(e, PromptTooLong) else "invalid_prompt"
    return InvalidRequest(str(e), param="prompt", code=code)


def _held(job: Job) -> bool:
    """A paced request ahead of playback: passed over this tick, its turn goes to others."""
    return job.pace is not None and job.pace.held()


@dataclass(frozen=True)
class EngineConfig:
    budget_bytes: int
    max_running: int
    max_queued: int
    request_timeout_s: float
    stall_timeout_s: float
    max_batch: int = 1  # requests stepped together per tick (1: one step at a time)
    max_stream_s: float = 3600.0  # an open-ended video ends (completed) this long after arrival
    pace_lead_s: float = DEFAULT_LEAD_S  # a paced request is held this far ahead of playback


@dataclass(frozen=True)
class EngineStats:
    """A consistent snapshot for metrics and /ready, replaced whole by the engine thread."""

    running: int = 0
    waiting: int = 0  # in the queue or not yet planned
    kv_bytes: int = 0
    reserved_bytes: int = 0
    budget_bytes: int = 0


class Engine:
    def __init__(
        self,
        pipeline: Pipeline,
        config: EngineConfig,
        memory: DeviceMemory,
        observer: EngineObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock  # the playback clock of paced requests (tests pass a fake one)
        self.config = config
        self.memory = memory
        self.observer: EngineObserver = observer or NullObserver()
        self.scheduler: FifoScheduler[Job] = FifoScheduler(
            config.budget_bytes, config.max_running, config.max_queued, config.max_batch
        )
        self.stats = EngineStats(budget_bytes=config.budget_bytes)
        self._lock = threading.Lock()  # guards _intake, _jobs and _accepting
        self._intake: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._accepting = True
        self._stopping = False
        self.failure: str | None = None  # why the loop died, if it did (never set by `stop`)
        self._wake = threading.Event()
        self._heartbeat = time.monotonic()
        self._mean_request_s = 10.0  # for Retry-After
        self._thread = threading.Thread(target=self._run, name="packcache-engine", daemon=True)

    # -- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    async def submit(self, sub: Submission) -> Admission:
        """Queue a request; returns once the engine has planned and admitted it.

        Raises:
            Overloaded: the waiting queue is full (429, `retry_after` set).
            InvalidRequest: the request cannot be prepared or can never fit the budget.
            Unavailable: the engine is stopping.
        """
        reply: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        c = self.config
        job = Job(
            sub,
            sub.arrived + (c.max_stream_s if sub.params.open_ended else c.request_timeout_s),
            reply,
        )
        with self._lock:
            # The intake holds requests not yet planned; bounded like the queue plus the
            # requests that could start at once.
            full = len(self._intake) >= self.config.max_queued + self.config.max_running
            error = self._refusal() if full or not self._accepting else None
            if error is None:
                self._intake.append(job)
                self._jobs[sub.job_id] = job
        if error is not None:
            self.observer.on_reject(error.code)
            raise error
        self._wake.set()
        return await reply

    def cancel(
        self, job_id: str, status: FinalStatus = "cancelled", reason: str = CLIENT_CANCEL
    ) -> bool:
        """Ask the engine to stop a request; it is finished before its next step (queued or
        running). `reason` is the message its video keeps: who decided, in words."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel_reason = reason
        job.cancel_requested = status
        self._wake.set()
        return True

    def end(self, job_id: str) -> bool:
        """Ask an open-ended video to end: it completes with the frames finished so far
        (one in progress is dropped), before its next step."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return False
        if not job.open_ended:
            raise InvalidRequest(
                "only an open-ended video is stopped; cancel a fixed-length one",
                code="not_open_ended",
            )
        job.end_requested = True
        self._wake.set()
        return True

    async def change_prompt(self, job_id: str, prompt: str) -> int:
        """Have a video follow `prompt` from its next frame; returns the generated latent
        frame it takes effect at (`request_prompt`, awaited)."""
        return await self.request_prompt(job_id, prompt)

    def request_prompt(self, job_id: str, prompt: str) -> asyncio.Future[int]:
        """Queue a prompt change without waiting for it (call on an event loop): the future
        is answered, on that loop, with the generated latent frame it takes effect at, once
        the video runs. Prompts queued together take effect together: the last one sent wins
        and the earlier ones are answered `superseded`.

        Raises (at once, or through the future):
            NotReady: the video has finished, or would finish before the change takes effect.
            InvalidRequest: the prompt does not fit the text slots the video holds, or a
                later one replaced it before it took effect.
        """
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.prompts.append(PromptRequest(prompt, reply))
        if job is None:
            raise NotReady(
                f"video {job_id} has finished; its prompt can no longer change",
                code="video_finished",
            )
        self._wake.set()
        return reply

    def job_ids(self) -> list[str]:
        """Every request accepted and not finished: waiting, queued or running."""
        with self._lock:
            return list(self._jobs)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def stalled(self) -> bool:
        """Busy, yet no loop iteration (one tick) finished within the stall timeout."""
        busy = self.stats.running > 0 or self.stats.waiting > 0
        return busy and time.monotonic() - self._heartbeat > self.config.stall_timeout_s

    def set_budget(self, budget_bytes: int) -> None:
        self.scheduler.budget_bytes = budget_bytes  # read by the engine thread's next admit
        self.stats = EngineStats(budget_bytes=budget_bytes)

    def set_decode_bytes(self, decode_bytes: int) -> None:
        """One frame's decode peak (measured at warm-up): every reservation's tick then holds
        at least this much."""
        self.scheduler.decode_bytes = decode_bytes

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop admitting, let running requests finish for `grace_s`, cancel the rest, join."""
        with self._lock:
            self._accepting = False
        end = time.monotonic() + grace_s
        while time.monotonic() < end and (self.stats.running or self.stats.waiting):
            time.sleep(0.05)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=60)

    # -- the engine thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping:
                    self._heartbeat = time.monotonic()
                    self._take_intake()
                    self._reap()
                    self._admit()
                    batch = self.scheduler.next_batch(held=_held)
                    if not batch:  # nothing runs, or every running request is paced and ahead
                        self._wake.wait(self._idle_s())
                        self._wake.clear()
                        continue
                    self._tick(batch)
        except BaseException as e:
            log.exception("the engine loop died")  # /ready turns false: the thread is gone
            self.failure = f"{type(e).__name__}: {e}"
            raise
        finally:
            self._shutdown()  # nobody waits forever

    def _idle_s(self) -> float:
        """How long the loop may sleep when no request can step: until the first held request
        falls below its bound (never 0, so a frozen clock cannot make it spin), or a while."""
        waits = [job.pace.wait_s() for job in self.scheduler.running if job.pace is not None]
        return max(MIN_WAIT_S, min([IDLE_WAIT_S, *waits]))

    def _take_intake(self) -> None:
        while True:
            with self._lock:
                if not self._intake:
                    return
                job = self._intake.popleft()
            self._accept(job)
            self._publish()

    def _accept(self, job: Job) -> None:
        if job.cancel_requested is not None:
            self._drop(job, InvalidRequest("cancelled before it started", code="cancelled"))
            return
        error: ServerError
        try:
            clip = None if job.sub.clip is None else job.sub.clip.take()
            prepared = self.pipeline.prepare(job.sub.image, job.sub.params, clip)
            del clip  # encoded: its frames are freed now, not when the job ends
            spec = self.pipeline.plan(prepared)
            job.prepared, job.spec = prepared, spec
            job.step_memory = self.pipeline.step_memory(spec)
            job.decoder_bytes = self.pipeline.decoder_bytes(prepared)
            decision = self.scheduler.offer(job, self._mean_request_s)
        except ServerError as e:  # can never fit, or the queue is full
            self.observer.on_reject(e.code)
            error = e
        except ValueError as e:  # the core refuses the request (e.g. a caption with a marker)
            error = InvalidRequest(str(e), param=getattr(e, "param", None))
        except Exception as e:
            log.exception("preparing %s failed", job.id)
            error = ServerError(f"could not prepare the request: {e}")
        else:
            width, height = prepared.size
            position = self.scheduler.position(job)
            job.resolve(Admission(position, width, height, job.cache_bytes, job.activation_bytes))
            self._emit(job, Queued(position))
            if decision == "start":
                self._start(job)
            return
        self._drop(job, error)

    def _drop(self, job: Job, error: ServerError) -> None:
        """Refuse a request that was never admitted (its caller gets `error`)."""
        with self._lock:
            self._jobs.pop(job.id, None)
        job.resolve(error)

    def _admit(self) -> None:
        started = self.scheduler.admit()
        for job in started:
            self._start(job)
        if started:
            for pos, job in enumerate(self.scheduler.waiting, 1):
                self._emit(job, Queued(pos))

    def _start(self, job: Job) -> None:
        assert job.prepared is not None
        job.started_at = job.last_frame_at = time.monotonic()
        if job.sub.realtime:
            job.pace = Pace(job.sub.params.fps, self.config.pace_lead_s, self.clock)
        self.observer.on_start(job.started_at - job.sub.arrived)
        self._publish()
        try:
            job.run = self.pipeline.start(job.prepared, job.spec)
            first = job.run.first_rgb()  # (1, H, W, 3); (0, H, W, 3) for text-to-video
            given = job.prepared.given  # an uploaded video's frames after its first
            job.prepared = None  # the run holds what it needs
        except Exception as e:
            log.exception("starting %s failed", job.id)
            self._finish(job, "failed", "generation_error", f"could not start: {e}")
            return
        p = job.sub.params
        height, width = first.shape[1:3]
        latent, frames = (None, None) if p.open_ended else (p.latent_frames, p.num_frames)
        started = Started(width, height, p.fps, latent, frames, job.policy, job.cache_bytes)
        self._emit(job, started)
        if first.shape[0]:  # text-to-video: frame 0 comes with the first generated frame
            self._emit(job, Frame(0, 0, first))
        job.rgb_frames = int(first.shape[0])
        if job.sub.resume is not None:
            self._resume(job, job.sub.resume)
        elif given is not None:  # an upload's frames: replayed as a record's are, and recorded
            self._resume(job, Recorded(list(given), None), new=True)

    def _resume(self, job: Job, recorded: Recorded, new: bool = False) -> None:
        """Rebuild a resumed job's cache from its record and send the frames again (the MP4 is
        written anew); the job then continues with its next frame. `new`: the frames are not
        in the job's record yet (an uploaded video's given frames): their events carry them."""
        assert job.run is not None
        try:
            outs = job.run.resume(recorded.codes, recorded.state)
        except Exception as e:
            log.exception("resuming %s failed", job.id)
            self._finish(job, "failed", "resume_failed", f"could not resume: {e}")
            return
        for out in outs:
            index, job.rgb_frames = job.rgb_frames, job.rgb_frames + int(out.rgb.shape[0])
            r = out.result
            codes, state = (r.codes, r.state) if new else (None, None)
            self._emit(job, Frame(index, r.index, out.rgb, codes=codes, sampler=state))
        generation = job.run.generation
        self._emit(job, Progress(generation.steps_done, generation.total_steps))
        log.info("%s resumed after %d recorded frames", job.id, len(outs))
        if job.open_ended:  # its reader went with the process that died: it ends here
            job.run.stop()
        if job.run.done:
            self._finish(job, "completed")

    def _reap(self) -> None:
        """Before the next step: finish cancelled and timed-out requests (running or waiting),
        end open-ended videos asked to end (or at their longest), apply prompt changes."""
        now = time.monotonic()
        for job in [*self.scheduler.running, *self.scheduler.waiting]:
            if job.cancel_requested == "cancelled":
                self._finish(job, "cancelled", "cancelled", job.cancel_reason)
            elif job.end_requested and job.first_frame_at is None:  # queued, or no frame yet
                self._finish(job, "cancelled", "stopped_before_first_frame", NOTHING_MADE)
            elif job.run is not None and (
                job.end_requested or (job.open_ended and now > job.deadline)
            ):
                job.run.stop()
                self._finish(job, "completed")
            elif job.cancel_requested == "timeout" or now > job.deadline:
                limit = self.config.request_timeout_s
                self._finish(job, "timeout", "timeout", f"did not finish within {limit:g} s")
            elif job.run is not None:
                self._change_prompts(job, job.run)

    def _change_prompts(self, job: Job, run: VideoRun) -> None:
        """Apply the prompt changes queued since the last step. They all take effect at the
        same frame, where the generation keeps the last one set: only that one is answered
        `prompt_changed` (and recorded); the earlier ones are `superseded`. A change that
        would take effect after a fixed-length video's last frame is refused."""
        with self._lock:
            queued, job.prompts = list(job.prompts), deque()
        taken: list[tuple[PromptRequest, int]] = []
        for request in queued:
            try:
                index = run.change_prompt(request.prompt)
            except ValueError as e:  # too long for its text slots, or a reserved marker
                answer(request.reply, _prompt_refusal(e))
                continue
            if not job.open_ended and index >= job.sub.params.latent_frames:
                last = job.sub.params.latent_frames - 1
                why = f"video {job.id} ends with latent frame {last}, before the change"
                answer(request.reply, NotReady(why, code="video_finished"))
                continue
            taken.append((request, index))
        for request, _ in taken[:-1]:
            why = "a later prompt, sent before this one took effect, replaced it"
            answer(request.reply, InvalidRequest(why, param="prompt", code="superseded"))
        if taken:
            (prompt, reply), index = taken[-1]
            answer(reply, index)
            self._emit(job, PromptChanged(prompt, index))

    def _tick(self, jobs: list[Job]) -> None:
        """One unit of work for each job (`batch.tick`), then each job's outcome accounted."""
        runs = [job.run for job in jobs]
        assert all(run is not None for run in runs)
        self.memory.begin_step()
        outcomes = tick(runs)  # type: ignore[arg-type]
        forwards: dict[int, list[StepMemory]] = {}  # each batched forward's members
        for job, o in zip(jobs, outcomes, strict=True):
            if o.batch > 1:
                forwards.setdefault(o.forward, []).append(job.step_memory)
        for size in {o.forward: o.batch for o in outcomes if o.forward >= 0}.values():
            self.observer.on_batch(size)
        for job, o in zip(jobs, outcomes, strict=True):
            if o.error is not None:
                log.exception("step of %s failed", job.id, exc_info=o.error)
                self._finish(job, "failed", "generation_error", f"generation failed: {o.error}")
                continue
            batch = forwards.get(o.forward, [])
            estimate = tick_bytes(batch, len(batch)) if o.batch > 1 else job.activation_bytes
            self._stepped(job, o.result, o.seconds, self.memory.end_step(estimate), o.denoised)

    def _stepped(
        self, job: Job, out: FrameOutput | None, seconds: float, peak: int, denoised: bool
    ) -> None:
        """Account a unit of work `job` has done and send its events; finish it if done."""
        assert job.run is not None
        steps_done, total = job.run.generation.steps_done, job.run.generation.total_steps
        job.record_step(seconds, peak, denoised)
        if denoised:
            self.observer.on_step(job.policy, seconds)
        self._emit(job, Progress(steps_done, total))
        if out is not None:
            if job.open_ended and out.result.index % TRIM_EVERY == 0:
                release_freed_blocks()  # a video without end must not hold a growing heap
            index = job.rgb_frames  # frame_done counts this frame's RGB frames
            stats = job.frame_done(time.monotonic(), int(out.rgb.shape[0]))
            r = out.result
            used = r.cache.bytes_used
            frame = Frame(index, r.index, out.rgb, stats.latency_s, used, r.codes, r.state)
            self._emit(job, frame)
            self.observer.on_frame(stats)
        if job.run.done:
            self._finish(job, "completed")

    def _finish(
        self, job: Job, status: FinalStatus, code: str | None = None, message: str | None = None
    ) -> None:
        run, job.run = job.run, None
        try:
            if run is not None:
                run.close()  # frees the cache now
        finally:  # a close that raises (a broken device) still finishes the request
            self._forget(job, status, code, message)

    def _forget(self, job: Job, status: FinalStatus, code: str | None, message: str | None) -> None:
        self.scheduler.remove(job)
        with self._lock:
            self._jobs.pop(job.id, None)
            unanswered, job.prompts = list(job.prompts), deque()
        for request in unanswered:
            gone = NotReady(f"video {job.id} has finished", code="video_finished")
            answer(request.reply, gone)
        now = time.monotonic()
        stats = job.stats(now)
        if status == "completed":
            self._mean_request_s = 0.8 * self._mean_request_s + 0.2 * stats.duration_s
        self._publish()
        self._emit(job, Finished(status, code, message, stats))
        self.observer.on_finish(status, stats)

    def _emit(self, job: Job, event: Event) -> None:
        for listener in job.sub.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("listener of %s failed on %s", job.id, type(event).__name__)

    def _publish(self) -> None:
        s = self.scheduler
        with self._lock:
            intake = len(self._intake)
        kv, reserved = s.kv_bytes, s.reserved_bytes
        self.stats = EngineStats(
            len(s.running), len(s.waiting) + intake, kv, reserved, s.budget_bytes
        )
        self.memory.track(kv, reserved)

    def _refusal(self) -> ServerError:
        if not self._accepting:
            return Unavailable("the server is shutting down", retry_after=5)
        return Overloaded(
            "server busy: too many requests waiting; retry later", retry_after=self._mean_request_s
        )

    def _shutdown(self) -> None:
        with self._lock:  # from now on `submit` refuses at once instead of waiting forever
            self._accepting = False
        # Stopped on purpose (a drain out of time, the end of the app): the job is left to be
        # resumed from its record. A loop that died fails its jobs, as the process exits.
        status: FinalStatus = "interrupted" if self.failure is None else "failed"
        message = "the server shut down before the job finished" + (
            "; it resumes from its last recorded frame when the server starts again"
            if status == "interrupted"
            else ""
        )
        for job in [*self.scheduler.running, *self.scheduler.waiting]:
            try:
                self._finish(job, status, "shutdown", message)
            except Exception:  # finished all the same; the next job must be too
                log.exception("freeing %s at shutdown failed", job.id)
        with self._lock:
            pending, self._intake = list(self._intake), deque()
        for job in pending:
            self._drop(job, Unavailable("the server is shutting down", retry_after=5))
