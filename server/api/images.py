"""Text-to-image as the API sees it: `POST /v1/images/generations` and its URL content.

What it is: `generate`, which checks a request (the model, `n` against `max_images`, `size`
against the model's sizes, the prompt), submits `n` one-latent-frame text-to-video jobs to the
engine (the same admission, batching, metrics and timeouts as videos; seeds differ per image),
waits for their frames, and encodes them as PNG, JPEG or WebP: inline (`b64_json`) or stored
for `url` (`server/storage/images.py`, tenant-scoped, kept `retention_s`). What it is not: a job
store entry: an image is made within its request, so `/v1/videos` never lists it, and a
request that goes away cancels its images.

Invariant: every job this module submits is cancelled in the engine when its request fails
or goes away before it finished (it is freed before its next step).
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from dataclasses import replace

import torch
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from packcache_core.pipeline import VideoParams
from packcache_core.request import RequestError, image_size, resolve_image
from server.api.schemas import ImageData, ImageFormat, ImageGenerationRequest, ImagesResponse
from server.engine.events import Event, Finished, Frame
from server.engine.job import Submission
from server.entry.runtime import Runtime
from server.errors import InvalidRequest, NotFound, ServerError

DEFAULT_QUALITY = 90  # jpeg / webp when `output_compression` is not given
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def new_image_id() -> str:
    return "img_" + secrets.token_hex(16)


def image_params(rt: Runtime, body: ImageGenerationRequest) -> VideoParams:
    """Checked parameters of one image of `body` (raises `InvalidRequest` naming the field)."""
    s = rt.settings
    if body.model is not None and body.model != s.model_name:
        raise InvalidRequest(
            f"unknown model {body.model!r}; this server serves {s.model_name!r}",
            param="model",
            code="model_not_found",
        )
    if body.n > s.max_images:
        raise InvalidRequest(
            f"n {body.n}: this server makes at most {s.max_images} images a request (max_images)",
            param="n",
        )
    pipeline = rt.require_engine().pipeline
    try:
        size = image_size(body.size, pipeline.image_sizes(), pipeline.text_size())
        return resolve_image(body.prompt, size, s.generation_defaults, s.limits)
    except RequestError as e:
        raise InvalidRequest(str(e), param=e.param) from e


class _Collect:
    """A job's listener: the frame it made, and how it finished (engine thread -> loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rgb: torch.Tensor | None = None
        self.done: asyncio.Future[Finished] = loop.create_future()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Frame):
            self.rgb = event.rgb[-1]
        elif isinstance(event, Finished):
            self.loop.call_soon_threadsafe(self._finish, event)

    def _finish(self, event: Finished) -> None:
        if not self.done.done():
            self.done.set_result(event)


async def _make(rt: Runtime, params: VideoParams) -> torch.Tensor:
    """One image, (H, W, 3) uint8, through the engine; cancelled with its caller."""
    engine = rt.require_engine()
    job_id = new_image_id()
    collect = _Collect(asyncio.get_running_loop())
    try:
        await engine.submit(Submission(job_id, None, params, (collect,)))
        finished = await asyncio.shield(collect.done)
    except BaseException:
        engine.cancel(job_id)  # refused (nothing to cancel), or the caller went away
        raise
    if finished.status != "completed" or collect.rgb is None:
        code = finished.code or finished.status
        raise ServerError(f"the image could not be made: {finished.message or code}", code=code)
    return collect.rgb


def encode(rgb: torch.Tensor, fmt: ImageFormat, quality: int | None) -> bytes:
    buf = io.BytesIO()
    options = {} if fmt == "png" else {"quality": DEFAULT_QUALITY if quality is None else quality}
    Image.fromarray(rgb.numpy()).save(buf, format=PIL_FORMATS[fmt], **options)
    return buf.getvalue()


async def generate(
    rt: Runtime, body: ImageGenerationRequest, owner: str, base_url: str
) -> ImagesResponse:
    """Make `body.n` images (seeds `seed`, `seed + 1`, ...) and answer them as asked."""
    params = image_params(rt, body)
    tasks = [
        asyncio.ensure_future(_make(rt, replace(params, seed=params.seed + i)))
        for i in range(body.n)
    ]
    try:
        frames = await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # one failed or the caller left: the others stop too
            task.cancel()
    data = []
    for rgb in frames:
        blob = await run_in_threadpool(encode, rgb, body.output_format, body.output_compression)
        if body.response_format == "b64_json":
            data.append(ImageData(b64_json=base64.b64encode(blob).decode("ascii")))
            continue
        image_id = new_image_id()
        await run_in_threadpool(rt.images.save, owner, image_id, body.output_format, blob)
        data.append(ImageData(url=f"{base_url.rstrip('/')}/v1/images/{image_id}/content"))
    W, H = params.size or (0, 0)
    return ImagesResponse(
        created=int(time.time()), data=data, output_format=body.output_format, size=f"{W}x{H}"
    )


def content(rt: Runtime, image_id: str, scope: str | None) -> tuple[str, str]:
    """(path, media type) of an image made for a URL, if `scope` reaches it; else NotFound."""
    path = rt.images.find(image_id, scope)
    if path is None:
        raise NotFound(f"no image with id {image_id!r}", param="image_id", code="image_not_found")
    return str(path), MEDIA_TYPES[path.suffix.lstrip(".")]
