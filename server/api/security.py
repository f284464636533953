"""Who may call, and how much they may send: API keys, header and request-body limits.

What it is: `ApiKeys` (Bearer tokens compared in constant time against every configured key;
`check` names the caller: the owner its jobs are stored under and whether it is an admin key),
`HeaderLimitMiddleware` (refuses too many headers; their bytes are bounded by uvicorn's h11
parser, see `entry/cli.py`) and `BodyLimitMiddleware` (refuses a body over the limit from its
Content-Length, and stops reading a chunked body at the limit, before any multipart parsing
spools it to disk). Image pixel limits live with the decoder (`params.decode_image`). What it
is not: per-key quotas or rate limits (a gateway's job).

Invariants: with keys configured, every `/v1` route and the websocket need one; `/health` and
`/ready` never do, `/metrics` only when `metrics_public` is off. The websocket checks its key
before it accepts the connection, so a caller without one never gets a message read. A key's
jobs are its own: an owner is a hash of the key (`owner_of`), never the key; only admin keys
reach every owner's jobs. With no keys at all every caller is the anonymous owner and reaches
every job.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_body
from server.errors import Unauthorized
from server.storage.store import ANONYMOUS

OWNER_LABEL = b"packcache job owner"  # the HMAC key: an owner hash means nothing elsewhere


def owner_of(key: str) -> str:
    """The owner a key's jobs are stored under: 32 hex digits of HMAC-SHA256, never the key."""
    return hmac.new(OWNER_LABEL, key.encode(), "sha256").hexdigest()[:32]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the owner of the jobs it makes, and whether it reaches every job."""

    owner: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this caller may see and delete; None: every owner's."""
        return None if self.admin else self.owner


class ApiKeys:
    def __init__(self, keys: list[str], admin_keys: list[str] | None = None) -> None:
        self._keys = [k.encode() for k in keys]
        self._admin = [k.encode() for k in admin_keys or []]

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._admin)

    def identify(self, presented: str) -> Caller | None:
        """The caller a key names, or None if it is no key. Compares with every key, whatever
        matches, so timing tells nothing."""
        token = presented.encode()
        user = admin = False
        for key in self._keys:
            user |= hmac.compare_digest(key, token)
        for key in self._admin:
            admin |= hmac.compare_digest(key, token)
        return Caller(owner_of(presented), admin) if user or admin else None

    def check(self, conn: HTTPConnection) -> Caller:
        """The caller; raises `Unauthorized` unless the request holds a valid key: the Bearer
        header, or on the websocket (a browser cannot set its headers) the `api_key` query
        parameter. The websocket checks at the handshake, so no message is read from a caller
        without one. Without keys: the anonymous owner, reaching every job."""
        if not self.enabled:
            return Caller(ANONYMOUS, admin=True)
        ws = conn.scope.get("type") == "websocket"
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = conn.query_params.get("api_key", "") if ws else ""
            if not token:
                also = " or the `api_key` query parameter" if ws else ""
                raise Unauthorized(
                    f"missing API key: send 'Authorization: Bearer <key>'{also}",
                    code="missing_api_key",
                )
        caller = self.identify(token.strip())
        if caller is None:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        return caller


class HeaderLimitMiddleware:
    """431 for a request with more than `max_count` headers. Their bytes are bounded before
    this, while they are read (`max_header_bytes`, uvicorn's h11 `max_incomplete_event_size`)."""

    def __init__(self, app: ASGIApp, max_count: int) -> None:
        self.app = app
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or len(scope["headers"]) <= self.max_count:
            await self.app(scope, receive, send)
            return
        message = f"more than {self.max_count} request headers"
        body = json.dumps(error_body(message, "invalid_request_error", "headers_too_large"))
        await _send_json(send, 431, body.encode())


class BodyLimitMiddleware:
    """413 for HTTP bodies over `max_bytes` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return (
            f"request body is larger than the limit of {self.max_bytes} bytes "
            "(the upload limit plus room for the form fields)"
        )

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(self._message(), "invalid_request_error", "payload_too_large")
        ).encode()
        await _send_json(send, 413, body)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    """An error answer that also closes the connection (the rest of the request is unread)."""
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
