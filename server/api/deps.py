"""FastAPI dependencies: the runtime of the app serving a request, and the API-key check.

What it is: `runtime` (the `Runtime` the app factory stored on `app.state`) and `require_key`,
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

from server.entry.runtime import Runtime


async def runtime(conn: HTTPConnection) -> Runtime:
    rt: Runtime = conn.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def require_key(conn: HTTPConnection, rt: RuntimeDep) -> None:
    """Raises `Unauthorized` unless the request carries a configured API key (if any)."""
    rt.keys.check(conn)
