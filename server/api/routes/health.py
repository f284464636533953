"""Probes and metrics: `/health` (the process), `/ready` (the engine), `/metrics` (Prometheus).

What it is: three unauthenticated GET routes (`/metrics` asks for a key when
`metrics_public` is off). What it is not: a place that changes state.

Invariant: `/health` is 200 while the process can serve at all (503 when start-up failed or
the engine thread died); `/ready` is 200 only when the model is loaded, warm-up passed and the
engine loop is alive and not stalled.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request

from server.api.deps import RuntimeDep
from server.api.errors import errors
from server.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"model": Health}})
def health(rt: RuntimeDep) -> Response:
    """Liveness: 200 unless start-up failed or the engine died (then a restart may help)."""
    status = 503 if rt.phase == "failed" else 200
    return JSONResponse(Health().model_dump(), status_code=status)


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(rt: RuntimeDep) -> Response:
    """Readiness: 200 once warm and stepping; 503 with the reason otherwise."""
    ok, reason = rt.readiness()
    body = Readiness(ready=ok, reason=reason).model_dump()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors(401)},
)
def metrics(request: Request, rt: RuntimeDep) -> Response:
    """Prometheus text exposition; names in server/METRICS.md."""
    if not rt.settings.metrics_public:
        rt.keys.check(request)
    return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)
