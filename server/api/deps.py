"""FastAPI dependencies: the runtime of the app serving a request, and who calls.

What it is: `runtime` (the `Runtime` the app factory stored on `app.state`), `caller` (the
checked API key's `Caller`: routes that name jobs pass its `scope` on) and `require_key`,
which routers list as a dependency. What it is not: the key logic itself (`security.py`).

Invariant: routes never build their own runtime parts; tests override `runtime` to inject one.
Both are `async` although they never wait: FastAPI runs a plain function in a worker thread,
which would hand the event loop back before the websocket checks its key at the handshake (and
a client's early frames could be read meanwhile).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from server.api.security import Caller
from server.entry.runtime import Runtime


async def runtime(conn: HTTPConnection) -> Runtime:
    rt: Runtime = conn.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def caller(conn: HTTPConnection, rt: RuntimeDep) -> Caller:
    """Who calls; raises `Unauthorized` unless the request carries a configured API key (if
    any). Async, so the check runs before the event loop reads anything else of the request."""
    return rt.keys.check(conn)


CallerDep = Annotated[Caller, Depends(caller)]


async def require_key(_: CallerDep) -> None:
    """The key check for a whole router (FastAPI runs `caller` once per request)."""
