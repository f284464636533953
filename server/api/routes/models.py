"""`/v1/models`: the one model this server serves, as OpenAI's Models API lists models.

What it is: list and retrieve, so an SDK user can discover the `model` name a request may give.
What it is not: a model registry; a server runs one model (`settings.model`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from server.api.deps import RuntimeDep, require_key
from server.api.errors import errors
from server.api.schemas import ModelList, ModelObject
from server.entry.runtime import Runtime
from server.errors import NotFound

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    dependencies=[Depends(require_key)],
    responses=errors(400, 401, 500),
)


def _served(rt: Runtime) -> ModelObject:
    return ModelObject(id=rt.settings.model_name, created=int(rt.started_at))


@router.get("")
def list_models(rt: RuntimeDep) -> ModelList:
    return ModelList(data=[_served(rt)])


@router.get("/{model_id:path}", responses=errors(404))
def retrieve_model(model_id: Annotated[str, Path(max_length=512)], rt: RuntimeDep) -> ModelObject:
    served = _served(rt)
    if model_id != served.id:
        raise NotFound(f"no model {model_id!r}; this server serves {served.id!r}", param="model")
    return served
