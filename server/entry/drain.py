"""Graceful drain: `DrainingServer`, uvicorn's server with SIGTERM handled the way an
orchestrator (Kubernetes, `docker stop`) expects.

What it is: on the first SIGTERM, the runtime starts draining (`Runtime.drain`): `/ready` turns
false and new requests get 503 at once, while the listener stays open, so running websocket
streams keep sending and clients polling `GET /v1/videos/{id}` see their job finish. Accepted
requests may finish for `drain_timeout_s`; then the rest stop, kept unfinished with their
records so that the next start resumes them (code `shutdown` to a stream), every outcome is
recorded, and uvicorn shuts down as usual. A second SIGTERM ends the grace period
at once; SIGINT (Ctrl-C) keeps uvicorn's own quick shutdown. When the runtime asks for a
restart (its engine thread died), the server shuts down the same way and exits with the
runtime's `exit_code` (1), so an orchestrator starts a fresh process. What it is not: the drain
itself (`runtime.py`) or the engine's stop (`engine.py`).

Invariant: a drained server exits with status 0 (uvicorn would re-raise the SIGTERM it caught,
and the process would end by the signal instead); one whose engine died, never with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType

import uvicorn
from uvicorn.server import STARTUP_FAILURE

from server.entry.runtime import Runtime

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime, grace_s: float) -> None:
        super().__init__(config)
        self.runtime, self.grace_s = runtime, grace_s
        self._loop: asyncio.AbstractEventLoop | None = None  # set once serving
        self._draining: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        await super().main_loop()

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: also stop when the runtime asks for a restart (its engine died)."""
        if self.runtime.exit_code is not None and not self.should_exit:
            log.critical("exiting with status %d: %s", self.runtime.exit_code, self.runtime.failure)
            self.should_exit = True
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler (main thread, between bytecodes): hands SIGTERM to the loop."""
        if sig != signal.SIGTERM or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)  # SIGINT, or still starting: uvicorn's way
        elif self._draining is None:
            self._loop.call_soon_threadsafe(self._start_drain)
        else:
            self._loop.call_soon_threadsafe(self._hurry.set)

    def _start_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.runtime.drain(self.grace_s, self._hurry)
        except Exception:
            log.exception("drain failed; shutting down")
        finally:
            self.should_exit = True  # uvicorn closes the listener, then the lifespan


def serve(config: uvicorn.Config, runtime: Runtime, grace_s: float) -> int:
    """Serve until stopped, as `uvicorn.run` does (Ctrl-C is no error); the exit status."""
    server = DrainingServer(config, runtime, grace_s)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, re-raised by uvicorn once stopped
        server.run()
    if runtime.exit_code is not None:
        return runtime.exit_code
    return 0 if server.started else STARTUP_FAILURE
