"""The app factory: `create_app(settings, registry)` wires settings, runtime, routes and errors.

What it is: the one place where the FastAPI app is assembled: lifespan (open the store, boot
the model in the background so `/health` answers while it loads, sweep expired videos, shut
down cleanly), middleware (header and body limits, HEAD on GET routes, optional CORS), error
mapping, routers, and an OpenAPI document that also carries the websocket message models. What
it is not: configuration parsing (`settings.py`, `cli.py`).

Invariant: nothing happens at import; every app owns its runtime and its metrics registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from server.api.errors import install_error_handlers
from server.api.head import HeadAsGetMiddleware
from server.api.routes import health, images, models, stream, ui, videos
from server.api.schemas import ClientMessage, ExtendRequest, ServerMessage
from server.api.security import BodyLimitMiddleware, HeaderLimitMiddleware
from server.entry.runtime import Runtime
from server.settings import Settings

log = logging.getLogger(__name__)
VERSION = "0.1.0"
FORM_OVERHEAD = 64 << 10  # multipart boundaries and the text fields around the image


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> FastAPI:
    """A ready-to-serve app; the model loads when the app starts (lifespan)."""
    rt = Runtime(settings, registry if registry is not None else CollectorRegistry())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(rt.open)
        booting = asyncio.create_task(rt.boot())
        sweeping = asyncio.create_task(rt.sweep())
        try:
            yield
        finally:
            booting.cancel()
            sweeping.cancel()
            await asyncio.to_thread(rt.shutdown)

    app = FastAPI(
        title="PackCache Server",
        version=VERSION,
        description="Lumos-1 image-to-video, text-to-video and text-to-image with fixed-size "
        "per-request KV caches. The "
        "websocket /v1/videos/stream is described in server/README.md; its messages are "
        "under components.schemas (StreamRequest, CancelMessage, *Message).",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(videos.router)
    app.include_router(images.router)
    app.include_router(models.router)
    app.include_router(stream.router)
    app.include_router(ui.router)  # the demo page at /
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes + FORM_OVERHEAD)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(HeaderLimitMiddleware, max_count=settings.max_header_count)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the websocket messages (FastAPI leaves websockets out)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    adapters: list[TypeAdapter[Any]] = [TypeAdapter(ClientMessage), TypeAdapter(ServerMessage)]
    for adapter in adapters:
        defs = adapter.json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(defs.get("$defs", {}))
    # The extension route reads its body itself (JSON or a form); its schema is declared here.
    extend = TypeAdapter(ExtendRequest).json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(extend.pop("$defs", {}))
    schemas["ExtendRequest"] = extend
    # FastAPI advertises form models as urlencoded too; the upload needs multipart.
    create = doc["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    create.pop("application/x-www-form-urlencoded", None)
    app.openapi_schema = doc
    return doc
