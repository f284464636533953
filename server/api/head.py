"""HEAD on every GET route: answered as GET would be, status and headers, without the body.

What it is: `HeadAsGetMiddleware`, which hands a HEAD request to the app as a GET and drops the
body of the answer (RFC 9110 §9.3.2), so every GET route, present and future, answers HEAD.
What it is not: a route: the OpenAPI document keeps listing GET alone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app(dict(scope, method="GET"), receive, headers_only)
