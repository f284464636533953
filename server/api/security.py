"""Who may call, and how much they may send: API keys and the request-body limit.

What it is: `ApiKeys` (Bearer tokens compared in constant time against every configured key;
`check` names the caller: the owner its jobs are stored under and whether it is an admin key)
and `BodyLimitMiddleware` (refuses a body over the limit from its Content-Length, and stops
reading a chunked body at the limit, before any multipart parsing spools it to disk). Image
pixel limits live with the decoder (`params.decode_image`). What it is not: per-key quotas or
rate limits (a gateway's job).

Invariants: with keys configured, every `/v1` route and the websocket need one; `/health` and
`/ready` never do, `/metrics` only when `metrics_public` is off. A key's jobs are its own: an
owner is a hash of the key (`owner_of`), never the key; only admin keys reach every owner's
jobs. With no keys at all every caller is the anonymous owner and reaches every job.
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

    def check(self, conn: HTTPConnection, fallback: str | None = None) -> Caller:
        """The caller, from the Bearer header (or `fallback`); raises `Unauthorized` unless that
        holds a valid key. Without keys: the anonymous owner, reaching every job."""
        if not self.enabled:
            return Caller(ANONYMOUS, admin=True)
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ws = conn.scope.get("type") == "websocket"
        field = " or the request message's `api_key` field" if ws else ""
        if scheme.lower() != "bearer" or not token.strip():
            if not fallback:
                raise Unauthorized(
                    f"missing API key: send 'Authorization: Bearer <key>'{field}",
                    code="missing_api_key",
                )
            token = fallback
        caller = self.identify(token.strip())
        if caller is None:
            where = " (from the Authorization header, else the `api_key` field)" if ws else ""
            raise Unauthorized(f"invalid API key{where}", code="invalid_api_key")
        return caller


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
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
