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
its cache is freed before its next step). A fixed-length job is otherwise the server's
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
from typing import Literal

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
    error_response,
    validation_message,
    wire,
)
from server.api.schemas import (
    CancelMessage,
    ControlMessage,
    ErrorDetail,
    ErrorMessage,
    RejectedMessage,
    StopMessage,
    StreamRequest,
)
from server.api.streaming import StreamSender
from server.entry.runtime import Runtime
from server.errors import InvalidRequest, NotReady, PayloadTooLarge, ServerError, Unauthorized

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


def _decode_image(data: str, limit: int) -> bytes:
    _, _, payload = data.rpartition("base64,")  # a data: URL or bare base64
    if len(payload) > 4 * (limit // 3 + 1):
        raise PayloadTooLarge(f"image is larger than the limit of {limit} bytes", param="image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest("image: not valid base64", param="image") from e


CONTROL = TypeAdapter[ControlMessage](ControlMessage)


def control_limit(max_prompt_chars: int) -> int:
    """Largest message after the request: a `prompt` of the longest allowed prompt, escaped."""
    return 4 * max_prompt_chars + 1024


async def _watch_client(
    ws: WebSocket, rt: Runtime, sender: StreamSender, job_id: str
) -> Literal["cancel", "disconnect"]:
    """Serves the client's `stop` and `prompt` messages until a cancel or a disconnect;
    raises `InvalidRequest` on any other message. A stop or prompt change the video cannot
    take is answered with `rejected`, and the video goes on."""
    limit = control_limit(rt.settings.max_prompt_chars)
    while True:
        try:
            text = await _receive_text(ws, limit)
        except WebSocketDisconnect:
            return "disconnect"
        try:
            message = CONTROL.validate_json(text)
        except ValidationError as e:
            kind = _control_type(text)
            if kind is None:
                raise InvalidRequest(
                    'after the request, only {"type": "cancel"}, {"type": "stop"} or '
                    '{"type": "prompt", "prompt": "..."} are accepted'
                ) from e
            message_text, param = validation_message(e)
            bad = InvalidRequest(
                f"invalid {kind} message: {message_text}", param=param, code="invalid_prompt"
            )
            sender.note(_rejected(job_id, kind, bad))
            continue
        if isinstance(message, CancelMessage):
            return "cancel"
        try:
            if isinstance(message, StopMessage):
                if not rt.require_engine().end(job_id):
                    raise NotReady(f"video {job_id} has finished", code="video_finished")
            else:
                check_prompt(message.prompt, rt.settings.limits)
                await rt.require_engine().change_prompt(job_id, message.prompt)
        except RequestError as e:  # longer than max_prompt_chars
            too_long = InvalidRequest(str(e), param=e.param, code="prompt_too_long")
            sender.note(_rejected(job_id, message.type, too_long))
        except ServerError as e:
            sender.note(_rejected(job_id, message.type, e))


def _control_type(text: str) -> Literal["stop", "prompt"] | None:
    """The type a malformed control message names, if it is `stop` or `prompt` (those are
    answered with `rejected` and the video goes on; anything else closes the stream)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if kind in ("stop", "prompt") else None


def _rejected(job_id: str, request: Literal["stop", "prompt"], e: ServerError) -> RejectedMessage:
    _, kind, _ = wire(e)
    detail = ErrorDetail(message=e.message, type=kind, param=e.param, code=e.code)
    return RejectedMessage(id=job_id, request=request, error=detail)


async def _run(ws: WebSocket, rt: Runtime, request: StreamRequest, job_id: str, owner: str) -> int:
    """Generate and stream; returns the close code. Raises `WebSocketDisconnect` when the
    client leaves (the caller decides whether that cancels)."""
    sender = StreamSender(
        ws.send_text, ws.send_bytes, job_id, rt.settings.ws_max_pending_frames, request.frame_format
    )
    image = _decode_image(request.image, rt.settings.max_upload_bytes)
    sending = asyncio.create_task(sender.run())
    watching: asyncio.Task[Literal["cancel", "disconnect"]] | None = None
    try:
        loop = asyncio.get_running_loop()
        listener = sender.listener(loop)
        slots = rt.settings.stream_prompt_tokens
        await service.create(
            rt,
            job_id,
            request,
            image,
            listener,
            "image",
            owner=owner,
            open_ended=request.open_ended,
            text_slots=slots,
            realtime=request.realtime,
        )
        watching = asyncio.create_task(_watch_client(ws, rt, sender, job_id))
        await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done() and watching.result() == "disconnect":
            raise WebSocketDisconnect(1001)
        if watching.done():  # cancel: the final `error` (code "cancelled") still goes out
            rt.require_engine().cancel(job_id)
        try:
            finished = await sending
        except (RuntimeError, OSError) as e:  # sending to a socket the client closed
            raise WebSocketDisconnect(1006) from e
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
        code = await _run(ws, rt, request, job_id, caller.owner)
        await _close(ws, code)
    except WebSocketDisconnect:
        if job_id is not None and request is not None and request.cancel_on_disconnect:
            _cancel(rt, job_id)
        elif job_id is not None and request is not None and request.open_ended:
            _end(rt, job_id)  # its reader is gone: it ends, completed with what it made
        elif job_id is not None:
            log.info("client of %s left; the job runs on, its video is stored", job_id)
    except ServerError as e:
        if job_id is not None:
            _cancel(rt, job_id)
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


def _cancel(rt: Runtime, job_id: str) -> None:
    if rt.engine is not None:
        rt.engine.cancel(job_id)


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
