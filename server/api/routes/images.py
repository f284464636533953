"""REST routes in the shape of OpenAI's Images API: `POST /v1/images/generations`.

What it is: generate (JSON; text-to-image, the answer waits for the images) and the content
route the `url` response format links to (tenant-scoped: the same key, else 404). What it is
not: the logic (`api/images.py`).

Invariant: errors answer with the OpenAI envelope, naming the field at fault (`api/errors.py`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse

from server.api import images
from server.api.deps import CallerDep, RuntimeDep, require_key
from server.api.errors import errors
from server.api.schemas import ImageGenerationRequest, ImagesResponse
from server.storage.images import IMAGE_ID

router = APIRouter(
    prefix="/v1/images",
    tags=["images"],
    dependencies=[Depends(require_key)],
    responses=errors(400, 401, 500),
)
ImageIdPath = Annotated[str, Path(pattern=IMAGE_ID.pattern, description="an image id")]


@router.post("/generations", responses=errors(429, 503))
async def generate_images(
    body: ImageGenerationRequest, request: Request, rt: RuntimeDep, caller: CallerDep
) -> ImagesResponse:
    """Make `n` images from the prompt (each one latent frame of text-to-video)."""
    return await images.generate(rt, body, caller.owner, str(request.base_url))


@router.get("/{image_id}/content", responses=errors(404), response_class=FileResponse)
async def image_content(image_id: ImageIdPath, rt: RuntimeDep, caller: CallerDep) -> FileResponse:
    """An image made with `response_format=url`, kept for `retention_s`."""
    path, media_type = images.content(rt, image_id, caller.scope)
    return FileResponse(path, media_type=media_type)
