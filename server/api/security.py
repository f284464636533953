"""Who may call, and how much they may send: API keys and the request-body limit.

What it is: `ApiKeys` (Bearer tokens compared in constant time against every configured key)
and `BodyLimitMiddleware` (refuses a body over the limit from its Content-Length, and stops
reading a chunked body at the limit, before any multipart parsing spools it to disk). Image
pixel limits live with the decoder (`params.decode_image`). What it is not: per-key quotas or
rate limits (a gateway's job).

Invariant: with keys configured, every `/v1` route and the websocket need one; `/health` and
`/ready` never do, `/metrics` only when `metrics_public` is off.
"""

from __future__ import annotations

import hmac
import json

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_body
from server.errors import Unauthorized


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def matches(self, presented: str) -> bool:
        """Compares with every key, whatever matches, so timing tells nothing."""
        token = presented.encode()
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(key, token)
        return found

    def check(self, conn: HTTPConnection, fallback: str | None = None) -> None:
        """Raises `Unauthorized` unless the Bearer header (or `fallback`) holds a valid key."""
        if not self.enabled:
            return
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
        if not self.matches(token.strip()):
            where = " (from the Authorization header, else the `api_key` field)" if ws else ""
            raise Unauthorized(f"invalid API key{where}", code="invalid_api_key")


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
