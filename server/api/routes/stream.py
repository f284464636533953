"""The websocket `/v1/videos/stream`: one request per connection, frames as they decode.

Protocol (models in `schemas.py`, also under `components.schemas` of the OpenAPI document):
with API keys configured, the handshake carries one (`Authorization: Bearer <key>`, or the
`api_key` query parameter for browsers); without a valid one it is refused with HTTP 401 (the
OpenAI error body) before anything is read. The client then sends one `StreamRequest` (JSON
text, image inline as base64); the server answers `queued` (position), `started`, then per RGB
frame a `frame` header (JSON) followed by one binary message with the encoded image, a
`latent_frame` (latency, cache bytes in use) after each generated latent frame's images,
`progress` after every denoising step, and finally `completed` (with the request's statistics)
or `error`, then closes (1000 after `completed` or a cancel, 1011 after a failure or timeout,
otherwise the code from `api/errors.py`: 1007 invalid request, 1009 too big, 1013 try again
later). A message larger than uvicorn's `ws_max_size` (`entry/cli.py`), compressed or not, is
closed with 1009 before it is inflated further.

After the request the client may send `{"type": "prompt", "prompt": ...}` (answered by
`prompt_changed` with the latent frame it takes effect at, or `rejected`), `{"type": "stop"}`
(an open-ended video completes with what it made) and `{"type": "cancel"}` (the job stops and
its cache is freed before its next step). They are read as they come, queued or running (the
reader never waits on the engine); any message the video cannot take, malformed or too big
included, is answered `rejected` and the video goes on. A fixed-length job is otherwise the server's
promise: a client that closes the socket, vanishes or stops answering keep-alive pings loses
its stream, never the generation, which runs to completion and stores the video (GET
/v1/videos/{id}/content); an open-ended one ends there, completed; with
`cancel_on_disconnect` leaving cancels either, as a cancel message does. A slow client loses
the oldest unsent frames (see `streaming.py`), never the final message.

What it is not: the job logic (`service.py`) or the send queue (`streaming.py`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any, Literal, get_args

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from packcache_core.request import RequestError, check_prompt
from server.api import service
from server.api.deps import RuntimeDep
from server.api.errors import (
    WS_INTERNAL,
    WS_NORMAL,
    WS_POLICY,
    WS_RESTART,
    error_response,
    validation_message,
    wire,
)
from server.api.schemas import (
    AckMessage,
    CancelMessage,
    ControlMessage,
    ErrorDetail,
    ErrorMessage,
    ExtendRequest,
    RejectedMessage,
    StopMessage,
    StreamRequest,
    VideoReference,
)
from server.api.security import Caller
from server.api.streaming import StreamSender
from server.engine.engine import CLIENT_CANCEL
from server.entry.runtime import Runtime
from server.errors import (
    InvalidRequest,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["stream"])


async def _receive_text(ws: WebSocket, limit: int) -> str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise InvalidRequest("expected a JSON text message, got a binary one")
    if len(text) > limit:
        raise PayloadTooLarge(f"message is larger than the limit of {limit} bytes")
    return str(text)


def _parse_request(text: str) -> StreamRequest:
    try:
        return StreamRequest.model_validate_json(text)
    except ValidationError as e:
        message, param = validation_message(e)
        raise InvalidRequest(f"invalid stream request: {message}", param=param) from e


# What an extension request may set besides `extend`: the rest is the source video's.
EXTENSION_FIELDS = {
    "type",
    "extend",
    "prompt",
    "seconds",
    "latent_frames",
    "model",
    "frame_format",
    "frame_window",
    "realtime",
    "cancel_on_disconnect",
}


def _extension(request: StreamRequest) -> ExtendRequest:
    """The extension a stream request asks for (`extend`), refusing fields it cannot take."""
    extra = sorted(request.model_fields_set - EXTENSION_FIELDS)
    if extra:
        raise InvalidRequest(
            f"an extension keeps its source's settings; leave out {', '.join(extra)}",
            param=extra[0],
        )
    video = VideoReference(id=str(request.extend))
    return ExtendRequest(
        video=video,
        prompt=request.prompt,
        seconds=request.seconds,
        latent_frames=request.latent_frames,
    )


def _decode_image(data: str, limit: int) -> bytes:
    _, _, payload = data.rpartition("base64,")  # a data: URL or bare base64
    if len(payload) > 4 * (limit // 3 + 1):
        raise PayloadTooLarge(f"image is larger than the limit of {limit} bytes", param="image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest("image: not valid base64", param="image") from e


CONTROL = TypeAdapter[ControlMessage](ControlMessage)
Request = Literal["stop", "prompt", "cancel", "ack"]
# Prompt changes a stream may have waiting for the engine at once (a change takes effect at
# the next frame; while the video is queued it waits for the start). More are `rejected`.
MAX_PENDING_PROMPTS = 4
ONLY = (
    'after the request, only {"type": "cancel"}, {"type": "stop"}, '
    '{"type": "prompt", "prompt": "..."} or {"type": "ack", "index": i} are accepted'
)


def control_limit(max_prompt_chars: int) -> int:
    """Longest message after the request that is read: a `prompt` of the longest allowed
    prompt, every character escaped as JSON's longest form (a character outside the BMP is
    a surrogate pair, 12 characters), plus room for the rest."""
    return 12 * max_prompt_chars + 1024


async def _watch_client(
    ws: WebSocket, rt: Runtime, sender: StreamSender, job_id: str
) -> Literal["cancel", "disconnect"]:
    """Serves the client's `stop`, `prompt` and `ack` messages until a cancel or a
    disconnect. Never waits on the engine, so a `cancel` or `stop` is read at once, queued or
    running. Anything
    the video cannot take (a stop of a fixed-length video, a prompt too long, a message too
    big, malformed or of an unknown type) is answered with `rejected`, and the video goes on."""
    limit = control_limit(rt.settings.max_prompt_chars)
    pending: set[asyncio.Future[int]] = set()
    while True:
        received = await ws.receive()
        if received["type"] == "websocket.disconnect":
            return "disconnect"
        message = _parse_control(received, job_id, limit)
        if isinstance(message, RejectedMessage):
            sender.note(message)
            continue
        if isinstance(message, CancelMessage):
            return "cancel"
        if isinstance(message, AckMessage):  # flow control; without a window it changes nothing
            sender.ack(message.index)
            continue
        try:
            if isinstance(message, StopMessage):
                if not rt.require_engine().end(job_id):
                    raise NotReady(f"video {job_id} has finished", code="video_finished")
            else:
                _change_prompt(rt, sender, job_id, message.prompt, pending)
        except ServerError as e:
            sender.note(_rejected(job_id, message.type, e))


def _parse_control(
    received: Mapping[str, Any], job_id: str, limit: int
) -> ControlMessage | RejectedMessage:
    """A control message, or the `rejected` that answers one the server cannot take."""
    text = received.get("text")
    if text is None:
        bad = InvalidRequest("expected a JSON text message, got a binary one")
        return _rejected(job_id, None, bad, "invalid_message")
    if len(text) > limit:
        too_big = PayloadTooLarge(
            f"message has {len(text)} characters; the limit after the request is {limit}"
        )
        return _rejected(job_id, None, too_big, "message_too_large")
    try:
        return CONTROL.validate_json(text)
    except ValidationError as e:
        kind = _control_type(text)
        if kind is None:
            return _rejected(job_id, None, InvalidRequest(ONLY), "invalid_message")
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or None  # [0] is the type's tag
        bad = InvalidRequest(f"invalid {kind} message: {field}: {first['msg']}", param=field)
        return _rejected(
            job_id, kind, bad, "invalid_prompt" if field == "prompt" else "invalid_message"
        )


def _change_prompt(
    rt: Runtime, sender: StreamSender, job_id: str, prompt: str, pending: set[asyncio.Future[int]]
) -> None:
    """Queue a prompt change; its answer (`prompt_changed` from the engine, or `rejected`)
    comes when it takes effect, without holding up the next message."""
    try:
        check_prompt(prompt, rt.settings.limits)
    except RequestError as e:  # longer than max_prompt_chars
        raise InvalidRequest(str(e), param=e.param, code="prompt_too_long") from e
    if len(pending) >= MAX_PENDING_PROMPTS:
        raise Overloaded(
            f"{len(pending)} prompt changes are waiting to take effect; send the next one "
            "after a `prompt_changed` or `rejected`",
            code="too_many_prompts",
        )
    future = rt.require_engine().request_prompt(job_id, prompt)
    pending.add(future)

    def answered(done: asyncio.Future[int]) -> None:
        pending.discard(done)
        error = None if done.cancelled() else done.exception()
        if isinstance(error, ServerError) and error.code == "prompt_too_long":
            sender.note(_rejected(job_id, "prompt", _over_the_slots(error, prompt, rt)))
        elif isinstance(error, ServerError):
            sender.note(_rejected(job_id, "prompt", error))
        elif error is not None:
            log.error("prompt change of %s failed", job_id, exc_info=error)

    future.add_done_callback(answered)


def _over_the_slots(error: ServerError, prompt: str, rt: Runtime) -> InvalidRequest:
    """The engine's refusal (tokens against the slots held), with the limit in characters
    put right: the slots, not `max_prompt_chars`, bound a prompt sent mid-stream."""
    return InvalidRequest(
        f"{error.message}. It has {len(prompt)} characters: a prompt sent mid-stream is "
        f"limited by the text slots the stream holds (stream_prompt_tokens = "
        f"{rt.settings.stream_prompt_tokens}, or the first prompt's length if longer, header "
        f"included), not only by max_prompt_chars ({rt.settings.max_prompt_chars})",
        param="prompt",
        code="prompt_too_long",
    )


def _control_type(text: str) -> Request | None:
    """The type a malformed control message names, if it is one of the control types."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if kind in get_args(Request) else None


def _rejected(
    job_id: str, request: Request | None, e: ServerError, code: str | None = None
) -> RejectedMessage:
    _, kind, _ = wire(e)
    detail = ErrorDetail(message=e.message, type=kind, param=e.param, code=code or e.code)
    return RejectedMessage(id=job_id, request=request, error=detail)


async def _run(
    ws: WebSocket, rt: Runtime, request: StreamRequest, job_id: str, caller: Caller
) -> int:
    """Generate and stream; returns the close code. Raises `WebSocketDisconnect` when the
    client leaves (the caller decides whether that cancels)."""
    s = rt.settings
    sender = StreamSender(
        ws.send_text,
        ws.send_bytes,
        job_id,
        s.ws_max_pending_frames,
        request.frame_format,
        window=request.frame_window,
        final_wait_s=s.ws_ping_timeout_s,
    )
    image = None  # text-to-video
    if request.image is not None:
        image = _decode_image(request.image, rt.settings.max_upload_bytes)
    sending = asyncio.create_task(sender.run())
    watching: asyncio.Task[Literal["cancel", "disconnect"]] | None = None
    try:
        loop = asyncio.get_running_loop()
        listener = sender.listener(loop)
        slots = rt.settings.stream_prompt_tokens
        if request.extend is not None:
            start = service.Start(job_id, listener, request.realtime)
            body = _extension(request)
            await service.extend(rt, body, caller.scope, caller.owner, start=start)
        else:
            await service.create(
                rt,
                job_id,
                request,
                image,
                listener,
                "image",
                owner=caller.owner,
                open_ended=request.open_ended,
                text_slots=slots,
                realtime=request.realtime,
            )
        watching = asyncio.create_task(_watch_client(ws, rt, sender, job_id))
        await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done() and watching.result() == "disconnect":
            raise WebSocketDisconnect(1001)
        if watching.done():  # cancel: the final `error` (code "cancelled") still goes out
            _cancel(rt, job_id, CLIENT_CANCEL)
        try:
            finished = await sending
        except (RuntimeError, OSError) as e:  # sending to a socket the client closed
            raise WebSocketDisconnect(1006) from e
        if finished.status == "interrupted":  # kept: it resumes when the server starts again
            return WS_RESTART
        return WS_NORMAL if finished.status in ("completed", "cancelled") else WS_INTERNAL
    finally:
        sender.close()  # the job may run on; its events no longer queue here
        for task in (sending, watching):
            if task is not None:
                task.cancel()


@router.websocket("/v1/videos/stream")
async def stream(ws: WebSocket, rt: RuntimeDep) -> None:
    try:
        caller = rt.keys.check(ws)  # at the handshake: nothing is read from one without a key
    except Unauthorized as e:
        await _deny(ws, e)
        return
    await ws.accept()
    rt.open_streams += 1
    request: StreamRequest | None = None
    job_id: str | None = None
    try:
        text = await _receive_text(ws, 2 * rt.settings.max_upload_bytes + 65536)
        request = _parse_request(text)
        job_id = service.new_video_id()
        code = await _run(ws, rt, request, job_id, caller)
        await _close(ws, code)
    except WebSocketDisconnect:
        if job_id is not None and request is not None and request.cancel_on_disconnect:
            _cancel(rt, job_id, "cancelled: its client left (cancel_on_disconnect)")
        elif job_id is not None and request is not None and request.open_ended:
            _end(rt, job_id)  # its reader is gone: it ends, completed with what it made
        elif job_id is not None:
            log.info("client of %s left; the job runs on, its video is stored", job_id)
    except ServerError as e:
        if job_id is not None:
            _cancel(rt, job_id, f"the server refused the stream: {e.message}")
            # a refused request leaves no video behind: name none the client would look up
            job_id = await _if_known(rt, job_id)
        await _refuse(ws, e, job_id)
    finally:
        rt.open_streams -= 1


async def _if_known(rt: Runtime, job_id: str) -> str | None:
    """`job_id` if the store has its video (kept when the store cannot say)."""
    try:
        known = await run_in_threadpool(rt.store.known, [job_id])
    except Exception:
        log.warning("could not look %s up in the job store", job_id, exc_info=True)
        return job_id
    return job_id if known else None


def _cancel(rt: Runtime, job_id: str, reason: str) -> None:
    if rt.engine is not None:
        rt.engine.cancel(job_id, reason=reason)


def _end(rt: Runtime, job_id: str) -> None:
    if rt.engine is not None:
        rt.engine.end(job_id)


async def _deny(ws: WebSocket, error: Unauthorized) -> None:
    """Refuse the handshake: HTTP 401 with the error body where the server can send one
    (uvicorn can), else a close before accepting (the client sees 403)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(error_response(error))
    else:
        await ws.close(WS_POLICY, error.code)


async def _refuse(ws: WebSocket, error: ServerError, job_id: str | None) -> None:
    _, kind, close_code = wire(error)
    detail = ErrorDetail(message=error.message, type=kind, param=error.param, code=error.code)
    try:
        await ws.send_text(ErrorMessage(id=job_id, error=detail).model_dump_json())
    except (WebSocketDisconnect, RuntimeError, OSError):
        log.debug("client of %s left before its error was sent", job_id)
    await _close(ws, close_code, error.code)


async def _close(ws: WebSocket, code: int, reason: str | None = None) -> None:
    try:
        await ws.close(code, reason)
    except (WebSocketDisconnect, RuntimeError, OSError):
        log.debug("websocket already closed")
