"""REST routes in the shape of OpenAI's Videos API: `/v1/videos`.

What it is: create (multipart, with an `input_reference` image or, for text-to-video,
without), retrieve, list, content and delete, each declaring its error responses. What it
is not: the job logic (`service.py`).

Invariants: every route answers errors with the OpenAI envelope (mapped in `api/errors.py`);
a job another key made answers as a missing one (404), and lists hold only the caller's jobs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from server.api import service
from server.api.deps import CallerDep, RuntimeDep, require_key
from server.api.errors import errors, validation_message
from server.api.forms import StrictFormRoute
from server.api.schemas import (
    VIDEO_ID_PATTERN,
    CreateVideoForm,
    ExtendRequest,
    Int,
    RemixRequest,
    VideoDeleted,
    VideoList,
    VideoObject,
)
from server.errors import InvalidRequest, PayloadTooLarge

router = APIRouter(
    prefix="/v1/videos",
    tags=["videos"],
    dependencies=[Depends(require_key)],
    responses=errors(400, 401, 500),
    route_class=StrictFormRoute,  # a form field sent twice or not valid text is a 400
)
VideoIdPath = Annotated[str, Path(pattern=VIDEO_ID_PATTERN, description="a video id")]
MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/CreateVideoForm"}}
        },
    }
}


@router.post("", responses=errors(413, 429, 503), openapi_extra=MULTIPART)
async def create_video(
    form: Annotated[CreateVideoForm, Form()], rt: RuntimeDep, caller: CallerDep
) -> VideoObject:
    """Start a video job, image-to-video with `input_reference`, else text-to-video; poll it
    with `GET /v1/videos/{id}`."""
    limit, data = rt.settings.max_upload_bytes, None
    if form.input_reference is not None:
        data = await form.input_reference.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(
                f"input_reference is larger than the limit of {limit} bytes (max_upload_bytes)",
                param="input_reference",
            )
    return await service.create(rt, service.new_video_id(), form, data, owner=caller.owner)


EXTEND_REF = {"$ref": "#/components/schemas/ExtendRequest"}
_EXTEND = ExtendRequest.model_json_schema()
# The same request as a form: the video named by `video[id]` (a form field can't be an
# object) or sent as a file; the other fields as `ExtendRequest` declares them.
EXTEND_FORM = {
    "type": "object",
    "required": [f for f in _EXTEND["required"] if f != "video"],
    "properties": {
        "video": {"type": "string", "format": "binary", "description": "a video to continue"},
        "video[id]": {"type": "string", "pattern": VIDEO_ID_PATTERN},
        **{k: v for k, v in _EXTEND["properties"].items() if k != "video"},
    },
    "description": "ExtendRequest as a form: `video` (a file) or `video[id]`, not both",
}
EXTEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": EXTEND_REF},
            "multipart/form-data": {"schema": EXTEND_FORM},
        },
    }
}


@router.post("/extensions", responses=errors(404, 409, 413, 429, 503), openapi_extra=EXTEND_BODY)
async def extend_video(request: Request, rt: RuntimeDep, caller: CallerDep) -> VideoObject:
    """Continue a video by `seconds` (or `latent_frames`) with `prompt`: a new video, the
    source's frames and then the new ones. The source is a completed video of this server
    (JSON `{"video": {"id": ...}, ...}` or a form field `video[id]`, what OpenAI's clients
    send for a video referenced by id), whose cache is rebuilt from its record; or an uploaded
    file in the form field `video` (MP4, WebM, AVI; what `videos.extend(video=open(...))`
    sends), decoded, encoded by the video tokenizer and cached as given frames."""
    body, data = await _extend_request(request, rt.settings.max_upload_bytes)
    return await service.extend(rt, body, caller.scope, caller.owner, data)


async def _extend_request(request: Request, limit: int) -> tuple[ExtendRequest, bytes | None]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data = None
    try:
        if kind == "application/json":
            body = ExtendRequest.model_validate_json(await request.body())
        elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields, upload = _form_fields(await request.form())
            body = ExtendRequest.model_validate(fields)
            if upload is not None:
                data = await upload.read(limit + 1)
                if len(data) > limit:
                    raise PayloadTooLarge(
                        f"video is larger than the limit of {limit} bytes (max_upload_bytes)",
                        param="video",
                    )
        else:
            raise InvalidRequest(
                "send the extension as application/json or multipart/form-data, not "
                f"{kind or 'nothing'}"
            )
    except ValidationError as e:
        message, param = validation_message(e)
        raise InvalidRequest(f"invalid extension: {message}", param=param) from e
    if (body.video is None) == (data is None):
        raise InvalidRequest(
            "give the video to continue: a file in the field video, or video[id] naming a "
            "completed video of this server (not both)",
            param="video",
        )
    return body, data


def _form_fields(form: FormData) -> tuple[dict[str, object], UploadFile | None]:
    """The form as `ExtendRequest` reads it (`video[id]` becomes `video.id`), and the file
    sent as `video`, if any."""
    fields: dict[str, object] = {"video": None}
    upload = None
    for key, value in form.multi_items():
        if not isinstance(value, str):
            if key != "video":
                raise InvalidRequest(f"{key}: only the field video may be a file", param=key)
            upload = value
        elif key == "video[id]":
            fields["video"] = {"id": value}
        else:
            fields[key] = value
    return fields, upload


@router.get("", responses=errors(404))
def list_videos(
    rt: RuntimeDep,
    caller: CallerDep,
    limit: Annotated[Int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(pattern=VIDEO_ID_PATTERN)] = None,
    order: Literal["asc", "desc"] = "desc",
) -> VideoList:
    """The caller's videos (an admin key's: all) by creation time, `limit` at a time; page with
    `after` = the last id seen."""
    return service.page(rt, caller.scope, limit, after, order)


@router.get("/{video_id}", responses=errors(404))
def retrieve_video(video_id: VideoIdPath, rt: RuntimeDep, caller: CallerDep) -> VideoObject:
    """Status and real progress (denoising steps done / total) of a job."""
    return service.video_object(rt, service.lookup(rt, video_id, caller.scope))


@router.get(
    "/{video_id}/content",
    response_class=FileResponse,
    responses={
        **errors(404, 409),
        200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "the file"},
    },
)
def video_content(
    video_id: VideoIdPath,
    rt: RuntimeDep,
    caller: CallerDep,
    variant: service.Variant = "video",
) -> FileResponse:
    """The MP4 (default), a JPEG thumbnail of the first frame, or a JPEG spritesheet (up to 16
    frames, first to last, 4 per row), once the job completed."""
    path = service.content(rt, video_id, caller.scope, variant)
    media = "video/mp4" if variant == "video" else "image/jpeg"
    return FileResponse(path, media_type=media, filename=f"{video_id}{path.suffix}")


@router.delete("/{video_id}", responses=errors(404))
def delete_video(video_id: VideoIdPath, rt: RuntimeDep, caller: CallerDep) -> VideoDeleted:
    """Delete a video; a queued or running job is cancelled and its cache freed first."""
    return service.delete(rt, video_id, caller.scope)


@router.post("/{video_id}/remix", responses=errors(404, 409, 429, 503))
async def remix_video(
    video_id: VideoIdPath, body: RemixRequest, rt: RuntimeDep, caller: CallerDep
) -> VideoObject:
    """A new video from a completed one's conditioning image and settings, with a new prompt;
    its `remixed_from_video_id` names the source."""
    return await service.remix(rt, video_id, body.prompt, caller.scope, caller.owner)
