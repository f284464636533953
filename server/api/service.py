"""Video jobs as the API sees them: create, extend (a video of this server, or an uploaded one
continued), remix, look up, list, fetch content, delete.

What it is: the operations behind `/v1/videos` and the websocket, shared by both: a request
becomes checked `VideoParams`, a stored `JobRecord` and an engine submission; stored records
plus the engine's live progress become OpenAI video objects. What it is not: HTTP parsing
(routes) or generation (engine).

Invariants: a record exists for every request the engine accepted, and for no request it
refused; `progress` is 100 only for completed videos. A job is stored with the `owner` that
made it; every operation naming jobs takes the caller's scope (an owner, or None for an admin)
and treats another owner's job exactly as a missing one.
"""

from __future__ import annotations

import io
import secrets
import time
from contextlib import AsyncExitStack
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

from fastapi.concurrency import run_in_threadpool
from PIL import Image

from packcache_core.layout import latent_frames_for, rgb_frames
from packcache_core.pipeline import VideoParams
from packcache_core.record import Recorded
from packcache_core.request import (
    Limits,
    RequestError,
    added_latent_frames,
    continuation,
    extension,
    remixed,
)
from packcache_core.video.input import Clip, clip_frames, is_video
from packcache_core.video.output import spritesheet
from server.api.params import (
    decode_upload,
    decode_video_upload,
    open_upload,
    probe_video_upload,
    to_video_params,
    video_decode_bytes,
)
from server.api.schemas import (
    ExtendRequest,
    GenerationOptions,
    VideoDeleted,
    VideoError,
    VideoList,
    VideoObject,
)
from server.engine.events import JobListener, percent
from server.engine.job import Submission
from server.entry.runtime import Runtime
from server.errors import InvalidRequest, NotFound, NotReady, StorageError, Unavailable
from server.storage.store import JobRecord


def new_video_id() -> str:
    return "video_" + secrets.token_hex(16)


def _record(
    job_id: str,
    model: str,
    params: VideoParams,
    seconds: str | None,
    size: str,
    owner: str,
    remixed_from: str | None,
) -> JobRecord:
    return JobRecord(
        owner=owner,
        remixed_from_video_id=remixed_from,
        id=job_id,
        status="queued",
        created_at=time.time(),
        model=model,
        prompt=params.prompt,
        size=size,
        seconds=seconds or f"{params.num_frames / params.fps:.3g}",
        frames=params.num_frames,
        latent_frames=params.latent_frames,
        fps=params.fps,
        seed=params.seed,
        steps=params.sampling.steps,
        cache_policy=params.policy.name,
    )


async def create(
    rt: Runtime,
    job_id: str,
    opts: GenerationOptions,
    image_bytes: bytes | None,
    stream: JobListener | None = None,
    image_param: str = "input_reference",
    *,
    owner: str,
    open_ended: bool = False,
    text_slots: int = 0,
    realtime: bool = False,
) -> VideoObject:
    """Check, store (as `owner`'s) and submit a request; returns once the engine admitted it.
    `image_bytes` None: text-to-video. A websocket stream may be `open_ended`, hold
    `text_slots` for a new prompt, and be `realtime`: paced to playback (see
    `engine/pace.py`)."""
    if image_bytes is not None and is_video(image_bytes):  # a video to continue
        lengths = {"seconds": None, "frames": None, "latent_frames": None}
        base_opts = opts.model_copy(update=lengths)
        base = to_video_params(base_opts, rt.settings, open_ended, text_slots)
        seconds = None if opts.seconds is None else float(opts.seconds)
        more, length = base.latent_frames - 1, "seconds"  # the default: a clip's new frames
        if opts.frames is not None:
            more, length = latent_frames_for(opts.frames) - 1, "frames"
        elif seconds is not None or opts.latent_frames is not None:
            more = _added(seconds, opts.latent_frames, rt.settings.limits)
            length = "seconds" if opts.latent_frames is None else "latent_frames"
        start = Start(job_id, stream, realtime)
        return await continue_upload(rt, base, more, length, image_bytes, image_param, owner, start)
    params = to_video_params(opts, rt.settings, open_ended, text_slots, image_bytes is None)
    return await _start(
        rt, job_id, params, image_bytes, opts.seconds, stream, image_param, owner, realtime=realtime
    )


class Start(NamedTuple):
    """How a new video is started: its id, a stream listening (None: none), paced or not."""

    job_id: str
    stream: JobListener | None = None
    realtime: bool = False


async def remix(
    rt: Runtime, source_id: str, prompt: str, scope: str | None, owner: str
) -> VideoObject:
    """A new video from a completed one's conditioning image (if it had one) and settings,
    with `prompt`."""
    params, image, recorded = await _source(rt, source_id, scope, "remixed", None)
    try:
        params = remixed(params, prompt, len(recorded.codes), rt.settings.limits)
    except RequestError as e:
        raise InvalidRequest(str(e), param=e.param) from e
    job_id = new_video_id()
    return await _start(rt, job_id, params, image, None, None, "input_reference", owner, source_id)


async def extend(
    rt: Runtime,
    body: ExtendRequest,
    scope: str | None,
    owner: str,
    upload: bytes | None = None,
    start: Start | None = None,
) -> VideoObject:
    """A new video that continues a video by `body`'s length, and is the whole video, the
    source's frames first: a completed one of this server (`body.video`), whose cache is
    rebuilt from its recorded frames (no video is decoded or encoded again), or an `upload`
    (`continue_upload`). `start`: its id, stream and pacing (default: a new id, unstreamed)."""
    start = start or Start(new_video_id())
    limits = rt.settings.limits
    length = "seconds" if body.latent_frames is None else "latent_frames"
    seconds = None if body.seconds is None else float(body.seconds)
    if upload is not None:
        opts = GenerationOptions.model_validate({"prompt": body.prompt})
        base = to_video_params(opts, rt.settings)
        more = _added(seconds, body.latent_frames, limits)
        return await continue_upload(rt, base, more, length, upload, "video", owner, start)
    assert body.video is not None, "the route gives a reference or a file"
    source_id = body.video.id
    params, image, recorded = await _source(rt, source_id, scope, "extended", "video")
    try:
        more = added_latent_frames(seconds, body.latent_frames, limits)
        params = extension(params, len(recorded.codes), body.prompt, more, limits, length)
    except RequestError as e:
        raise InvalidRequest(str(e), param=e.param) from e
    return await _start(
        rt,
        start.job_id,
        params,
        image,
        None,
        start.stream,
        "input_reference",
        owner,
        resume=(source_id, recorded),
        realtime=start.realtime,
    )


def _added(seconds: float | None, latent_frames: int | None, limits: Limits) -> int:
    try:
        return added_latent_frames(seconds, latent_frames, limits)
    except RequestError as e:
        raise InvalidRequest(str(e), param=e.param) from e


async def continue_upload(
    rt: Runtime,
    base: VideoParams,
    more: int,
    length: str,
    data: bytes,
    param: str,
    owner: str,
    start: Start | None = None,
) -> VideoObject:
    """A new video that continues an uploaded one (`data`, sent as `param`) by `more` latent
    frames with `base`'s prompt and settings (`length`: the field `more` came from, named
    when `more` alone is too long; a video too long for what is left is named as `param`). The
    upload is probed, decoded within the decode budget, resampled to the server's rate and
    the video's size (`packcache_core.video.input`); the engine encodes its frames, caches
    them as given frames and generates after the last. `start`: its id, stream and pacing
    (default: a new id, no stream, unpaced)."""
    start = start or Start(new_video_id())
    engine, settings, limits = rt.require_engine(), rt.settings, rt.settings.limits
    room = limits.longest(base.policy) - more  # latent frames the upload may fill
    try:
        if room < 1:
            continuation(base, 0, more, limits, length)  # raises, naming the limit
        probe = await run_in_threadpool(probe_video_upload, data, settings, param)
        size = engine.pipeline.output_size(probe.width, probe.height, base)
        most = rgb_frames(room + 1)  # a clip one latent frame too long shows it is
        if probe.seconds is not None:
            stated = clip_frames(probe.seconds, settings.fps, most)
            continuation(base, latent_frames_for(stated) - 1, more, limits, param)
        charge = video_decode_bytes(probe, size, most, settings, param)
        async with rt.decodes.admit(charge) as permit:
            decode = partial(decode_video_upload, data, settings, param, size, most)
            clip = await permit.decode(decode)
            given = latent_frames_for(clip.shape[0]) - 1
            params = continuation(replace(base, size=size), given, more, limits, param)
            return await _start(
                rt,
                start.job_id,
                params,
                None,
                None,
                start.stream,
                param,
                owner,
                realtime=start.realtime,
                clip=clip,
            )
    except RequestError as e:
        raise InvalidRequest(str(e), param=e.param) from e


async def _source(
    rt: Runtime, source_id: str, scope: str | None, verb: str, param: str | None
) -> tuple[VideoParams, bytes | None, Recorded]:
    """A completed video's saved request, image (None: text-to-video) and recorded frames,
    for a new video made from it (`verb`: what is done to it, for the messages); NotFound or
    NotReady otherwise."""
    source = lookup(rt, source_id, scope)
    if source.status != "completed":
        raise NotReady(
            f"video {source_id} is {source.status}; only a completed video is {verb}",
            param=param,
        )
    try:
        return await run_in_threadpool(rt.files.load_request, source_id)
    except (OSError, ValueError, KeyError) as e:
        raise NotFound(f"video {source_id} keeps no record to be {verb} from", param=param) from e


async def _start(
    rt: Runtime,
    job_id: str,
    params: VideoParams,
    image_bytes: bytes | None,
    seconds: str | None,
    stream: JobListener | None,
    image_param: str,
    owner: str,
    remixed_from: str | None = None,
    resume: tuple[str, Recorded] | None = None,
    realtime: bool = False,
    clip: Clip | None = None,
) -> VideoObject:
    """Store and submit; `resume`: (a video, its recorded frames) the new one starts with;
    `clip`: an uploaded video's frames (decoded by the caller), whose first frame is kept as
    the job's input image (a restart replays the others from the job's record)."""
    try:
        engine = rt.require_engine()
    except Unavailable:
        rt.metrics.on_reject("unavailable")
        raise
    async with AsyncExitStack() as held:
        image = None
        if clip is not None:
            image = clip.first()
            width, height = engine.pipeline.output_size(image.width, image.height, params)
            image_bytes = await run_in_threadpool(png, image)
        elif image_bytes is None:  # text-to-video: nothing to decode
            width, height = engine.pipeline.text_size(params.size)
        else:
            opened = await run_in_threadpool(open_upload, image_bytes, rt.settings, image_param)
            permit = await held.enter_async_context(rt.decodes.admit(opened.decode_bytes))
            image = await permit.decode(partial(decode_upload, opened, image_param))
            width, height = engine.pipeline.output_size(image.width, image.height, params)
        size = f"{width}x{height}"
        model = rt.settings.model_name
        record = _record(job_id, model, params, seconds, size, owner, remixed_from)
        await run_in_threadpool(rt.store.create, record)
        listener = rt.recorder.listener(job_id, params, then=stream)
        try:
            save = partial(_save_request, rt, job_id, params, image_bytes, resume, realtime)
            await run_in_threadpool(save)
            recorded = None if resume is None else resume[1]
            sub = Submission(
                job_id, image, params, (listener,), resume=recorded, realtime=realtime, clip=clip
            )
            await engine.submit(sub)
        except BaseException:  # refused, or the caller went away: no record, no work
            engine.cancel(job_id)
            rt.store.delete(job_id)
            rt.files.remove(job_id)
            raise
        finally:
            if clip is not None:  # the engine has encoded its frames (or never will)
                clip.close()
    # Leaving the block closed the image: the engine reads its pixels only to prepare the
    # request, before `submit` returns, and a job must not hold them until it finishes.
    return video_object(rt, record)


def png(image: Image.Image) -> bytes:
    """An uploaded video's first frame as the job's input file (what a restart decodes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _save_request(
    rt: Runtime,
    job_id: str,
    params: VideoParams,
    image: bytes | None,
    resume: tuple[str, Recorded] | None,
    realtime: bool,
) -> None:
    try:
        rt.files.save_request(job_id, params, image, realtime)
        if resume is not None:  # its record starts with the frames it replays
            rt.files.copy_frames(resume[0], job_id, len(resume[1].codes))
    except OSError as e:
        raise StorageError(f"the server cannot store the request now: {e.strerror}") from e


# Fields a video object copies from its record as they are (the record is their one home).
COPIED = tuple(f.name for f in fields(JobRecord) if f.name in VideoObject.model_fields)
DERIVED = ("status", "created_at", "completed_at")  # the object's own form of these


def video_object(rt: Runtime, record: JobRecord) -> VideoObject:
    status, progress = record.status, 100 if record.status == "completed" else 0
    live = rt.recorder.live.get(record.id)
    if live is not None and status in ("queued", "in_progress"):
        status = "in_progress" if live.started else "queued"
        progress = min(99, percent(live.steps_done, live.total_steps))
    elif status == "in_progress":  # another replica runs it: the frames it has recorded
        done = rt.files.frames(record.id).count() * record.steps
        progress = min(99, percent(done, (record.latent_frames - 1) * record.steps))
    elif status == "failed" and record.stats is not None:
        progress = min(99, percent(record.stats.steps, (record.latent_frames - 1) * record.steps))
    error = None
    if record.status == "failed":
        error = VideoError(code=record.error_code or "failed", message=record.error_message or "")
    return VideoObject(
        **{name: getattr(record, name) for name in COPIED if name not in DERIVED},
        status=status,
        progress=progress,
        created_at=int(record.created_at),
        completed_at=None if record.completed_at is None else int(record.completed_at),
        expires_at=expires_at(rt, record),
        error=error,
    )


def expires_at(rt: Runtime, record: JobRecord) -> int | None:
    """When a finished video is deleted (`retention_s` after it finished); None while it runs
    or when videos are kept forever."""
    if record.completed_at is None or not rt.settings.retention_s:
        return None
    return int(record.completed_at + rt.settings.retention_s)


def lookup(rt: Runtime, job_id: str, scope: str | None) -> JobRecord:
    """The record, if `scope` (an owner; None: any) reaches it; else `NotFound`."""
    record = rt.store.get(job_id, owner=scope)
    if record is None:
        raise NotFound(f"no video with id {job_id!r}", param="video_id", code="video_not_found")
    return record


def page(
    rt: Runtime, scope: str | None, limit: int, after: str | None, order: Literal["asc", "desc"]
) -> VideoList:
    records, has_more = rt.store.page(limit, after, order, owner=scope)
    data = [video_object(rt, r) for r in records]
    first, last = (data[0].id, data[-1].id) if data else (None, None)
    return VideoList(data=data, first_id=first, last_id=last, has_more=has_more)


Variant = Literal["video", "thumbnail", "spritesheet"]


def content(rt: Runtime, job_id: str, scope: str | None, variant: Variant) -> Path:
    """A completed video's file; the spritesheet is made from the MP4 when first asked for."""
    record = lookup(rt, job_id, scope)
    if record.status != "completed":
        raise NotReady(f"video {job_id} is {record.status}; content exists once it completed")
    files = rt.files
    where = {"video": files.video, "thumbnail": files.thumbnail, "spritesheet": files.sprites}
    path = where[variant](job_id)
    if variant == "spritesheet" and not path.is_file() and files.video(job_id).is_file():
        try:
            files.derived(path, partial(spritesheet, files.video(job_id)))
        except FileNotFoundError as e:  # deleted while it was being made
            raise NotFound(f"video {job_id} was deleted", code="video_not_found") from e
    if not path.is_file():
        raise NotFound(f"the {variant} of {job_id} is missing from the data directory")
    return path


def delete(rt: Runtime, job_id: str, scope: str | None) -> VideoDeleted:
    """Cancel the job if it runs (its cache is freed before its next step), then forget it."""
    lookup(rt, job_id, scope)
    running = rt.engine is not None and rt.engine.cancel(job_id)
    rt.store.delete(job_id, owner=scope)
    if not running:  # a running job's files are being written: its recorder removes them
        rt.files.remove(job_id)
    return VideoDeleted(id=job_id)
