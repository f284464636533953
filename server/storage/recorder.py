"""Persisting jobs as they run: MP4 written frame by frame, thumbnail, status in the job store.

What it is: `VideoFiles` (where a job's files live under the data directory) and
`JobRecorder`, whose per-job listener hands every engine event to one I/O thread, in order, so
the engine thread never waits on an encoder or a disk. What it is not: the engine (it only
listens) or the HTTP layer.

It also keeps each job's live progress (`JobRecorder.live`) from its first event until its
record is final, so a reader never sees a gap between "the engine is done" and "the store says
so", and progress never goes backwards.

Invariants: `video.mp4` exists only for completed jobs (frames go to `video.part.mp4`, renamed
when the writer is closed), and only completed jobs keep a folder (no route serves the files of
a cancelled or failed one); a job's `Finished` reaches the downstream listener (a websocket)
only after its files and record are final, so a client told "completed" can download at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from packcache_core.pipeline import VideoParams
from packcache_core.record import (
    FrameRecord,
    Recorded,
    in_force,
    request_from_json,
    request_to_json,
    write_json,
)
from packcache_core.video.output import Mp4Writer, thumbnail
from server.engine.events import (
    Event,
    Finished,
    Frame,
    JobListener,
    Progress,
    PromptChanged,
    Queued,
    Started,
)
from server.storage.store import JobStore

log = logging.getLogger(__name__)
PROBE_BYTES = 1 << 20  # written and removed at start-up: the data directory takes a write
REALTIME = "realtime"  # request.json's key for a paced job, beside the core's request


@dataclass(frozen=True)
class LiveProgress:
    started: bool
    steps_done: int = 0
    total_steps: int | None = 0


class VideoFiles:
    """`<root>/<job id>/{video.mp4, video.part.mp4, thumbnail.jpg, spritesheet.jpg,
    request.json, input, frames/}`: the video (the spritesheet made when first asked for),
    and the record a job resumes from (the request as resolved, the
    uploaded image, each finished latent frame: `packcache_core.record`)."""

    def __init__(self, root: Path) -> None:
        """Makes `root` and writes a probe there, so an unwritable or full data directory
        stops the server at start-up with one clear error (`OSError`) naming it."""
        self.root = root
        self._making = [threading.Lock() for _ in range(16)]  # `derived`, striped by path
        probe = root / ".write-probe"
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(bytes(PROBE_BYTES))
            probe.unlink()
        except OSError as e:
            reason = f"cannot write to the data directory {root}: {e.strerror}"
            raise OSError(e.errno, reason) from e

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def video(self, job_id: str) -> Path:
        return self.folder(job_id) / "video.mp4"

    def partial(self, job_id: str) -> Path:
        return self.folder(job_id) / "video.part.mp4"

    def thumbnail(self, job_id: str) -> Path:
        return self.folder(job_id) / "thumbnail.jpg"

    def sprites(self, job_id: str) -> Path:
        return self.folder(job_id) / "spritesheet.jpg"

    def derived(self, path: Path, make: Callable[[], bytes]) -> Path:
        """`path`, made by `make` if it is missing: once, whoever asks first (the others
        in this process wait for it), and atomically (a uniquely named part file renamed
        into place, so another process making it too never mixes its bytes with ours)."""
        with self._making[hash(path) % len(self._making)]:
            if not path.is_file():
                fd, part = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(make())
                    os.replace(part, path)
                except BaseException:
                    Path(part).unlink(missing_ok=True)
                    raise
        return path

    def request(self, job_id: str) -> Path:
        return self.folder(job_id) / "request.json"

    def input(self, job_id: str) -> Path:
        return self.folder(job_id) / "input"

    def frames(self, job_id: str) -> FrameRecord:
        return FrameRecord(self.folder(job_id) / "frames")

    def save_request(
        self, job_id: str, params: VideoParams, image: bytes | None, realtime: bool = False
    ) -> None:
        """What a job needs to start again after a crash; written before it is submitted.
        `realtime` (paced to playback, a serving concern) is kept beside the request; `image`
        is None for text-to-video (`params.text_only`), which has no input file."""
        self.folder(job_id).mkdir(parents=True, exist_ok=True)
        if image is not None:
            part = self.input(job_id).with_suffix(".part")
            part.write_bytes(image)
            part.replace(self.input(job_id))
        write_json(self.request(job_id), {**request_to_json(params), REALTIME: realtime})

    def realtime(self, job_id: str) -> bool:
        """Whether the job was paced to playback (False for records made before this)."""
        return bool(json.loads(self.request(job_id).read_text()).get(REALTIME, False))

    def copy_frames(self, source_id: str, job_id: str, count: int) -> None:
        """Start `job_id`'s frame record with the first `count` frames of `source_id`'s."""
        source, target = self.frames(source_id), self.frames(job_id)
        target.folder.mkdir(parents=True, exist_ok=True)
        for index in range(1, count + 1):
            part = target.path(index).with_suffix(".part")
            shutil.copyfile(source.path(index), part)
            part.replace(target.path(index))

    def add_prompt_change(self, job_id: str, latent_index: int, prompt: str) -> None:
        """Keep a prompt change with the request, so a resumed or extended video replays it;
        it replaces one sent earlier for the same frame (the record keeps what took effect)."""
        saved = json.loads(self.request(job_id).read_text())
        params = request_from_json(saved)
        changes = in_force((*params.prompt_changes, (latent_index, prompt)))
        changed = request_to_json(dataclasses.replace(params, prompt_changes=changes))
        write_json(self.request(job_id), saved | changed)  # what the server added is kept

    def load_request(self, job_id: str) -> tuple[VideoParams, bytes | None, Recorded]:
        """The saved request, image (None: text-to-video) and recorded frames; OSError /
        ValueError / KeyError when they are missing or unreadable."""
        params = request_from_json(json.loads(self.request(job_id).read_text()))
        image = None if params.text_only else self.input(job_id).read_bytes()
        return params, image, self.frames(job_id).read()

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


class _Recording:
    """One job's listener: engine thread -> I/O thread."""

    def __init__(
        self,
        recorder: JobRecorder,
        job_id: str,
        params: VideoParams,
        then: JobListener | None,
    ) -> None:
        self.r, self.job_id, self.params, self.then = recorder, job_id, params, then
        self.writer: Mp4Writer | None = None
        self.error: str | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Queued):
            self.r.live[self.job_id] = LiveProgress(started=False)
        elif isinstance(event, Started):
            self.r.live[self.job_id] = LiveProgress(started=True)
        elif isinstance(event, Progress):
            self.r.live[self.job_id] = LiveProgress(True, event.steps_done, event.total_steps)
        if self.then is not None and not isinstance(event, Finished):
            self.then(event)  # frames reach a stream without waiting for the encoder
        if isinstance(event, Started | Frame | PromptChanged | Finished):
            self.r.executor.submit(self._handle, event)

    def _handle(self, event: Event) -> None:
        try:
            if isinstance(event, Started):
                self._start()
            elif isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, PromptChanged):
                self.r.files.add_prompt_change(self.job_id, event.latent_index, event.prompt)
            elif isinstance(event, Finished):
                event = self._finish(event)
        except Exception as e:  # storage trouble fails this job only, with the reason
            log.exception("recording %s failed", self.job_id)
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.error = self.error or f"could not write the video: {reason}"  # no server path
            if isinstance(event, Finished):
                event = self._failed(event)
                self._store_failure(event)
            else:
                self.r.on_error(self.job_id)  # stop generating what cannot be saved
        if isinstance(event, Finished):
            self.r.live.pop(self.job_id, None)  # the record is final now
            if self.then is not None:
                self.then(event)

    def _store_failure(self, event: Finished) -> None:
        """Record the storage failure if the store can; the client hears of it either way."""
        self.r.files.remove(self.job_id)
        try:
            self.r.store.finish(self.job_id, "failed", (event.code or "", self.error or ""))
        except Exception:  # e.g. the database is on the disk that is full
            log.exception("%s: its failure could not be stored either", self.job_id)

    def _failed(self, event: Finished) -> Finished:
        return Finished("failed", "storage_error", self.error, event.stats)

    def _start(self) -> None:
        files = self.r.files
        files.folder(self.job_id).mkdir(parents=True, exist_ok=True)
        self.r.store.mark_started(self.job_id)
        # A video without a preset end grows on disk as a fragmented MP4: playable if cut.
        path, p = files.partial(self.job_id), self.params
        self.writer = Mp4Writer(path, p.fps, fragmented=p.open_ended)

    def _frame(self, event: Frame) -> None:
        if self.error is not None or self.writer is None:
            return
        if event.index == 0:
            self.r.files.thumbnail(self.job_id).write_bytes(thumbnail(event.rgb[0]))
        self.writer.write(event.rgb)
        if event.codes is not None and event.sampler is not None:
            self.r.files.frames(self.job_id).append(event.latent_index, event.codes, event.sampler)

    def _finish(self, event: Finished) -> Finished:
        files, store = self.r.files, self.r.store
        if self.writer is not None:
            self.writer.close()
        if self.error is not None:
            event = self._failed(event)
        if event.status == "interrupted":  # left as it is: the next start resumes it
            return event
        if event.status == "completed":
            files.partial(self.job_id).replace(files.video(self.job_id))
            made = self.writer.frames_written if self.writer is not None else 0
            seconds = f"{made / self.params.fps:.3g}" if self.params.open_ended else None
            kept = store.finish(self.job_id, "completed", stats=event.stats, seconds=seconds)
        else:
            error = (event.code or event.status, event.message or event.status)
            kept = store.finish(self.job_id, "failed", error, event.stats)
        if not kept or event.status != "completed":  # deleted, or nothing to serve: no files
            files.remove(self.job_id)
        return event


class JobRecorder:
    """Makes per-job listeners that record into `files` and `store` on `executor` (one thread)."""

    def __init__(
        self,
        store: JobStore,
        files: VideoFiles,
        executor: Executor,
        on_error: Callable[[str], object],
    ) -> None:
        self.store, self.files, self.executor, self.on_error = store, files, executor, on_error
        self.live: dict[str, LiveProgress] = {}  # written by the engine thread, read anywhere

    def listener(
        self, job_id: str, params: VideoParams, then: JobListener | None = None
    ) -> JobListener:
        """Records the job; forwards every event to `then` (`Finished` once recorded)."""
        return _Recording(self, job_id, params, then)
