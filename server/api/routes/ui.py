"""The demo page: `GET /` and its static files, plus the few settings the page needs.

What it is: `GET /` (the page), `GET /static/<name>` (its scripts, stylesheet and the sample
image, straight from `server/api/static/`, no build step, nothing fetched from elsewhere, so the
page works offline) and `GET /ui/config` (whether an API key is needed, the upload limit and
the generation defaults). The page itself talks to the public API only: the websocket
`/v1/videos/stream` and `GET /v1/videos/{id}/content`. What it is not: an API; none of these
routes is in the OpenAPI document.

Invariant: all three are public and reveal no secret: `/ui/config` says whether keys are
configured, never a key. Only plain files directly inside `server/api/static/` are served.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel

from packcache_core.image import IMAGE_FORMATS
from packcache_core.policy import POLICIES, knob_values, make_policy, open_ended_refusal
from packcache_core.text import build_prompt_ids
from packcache_core.video.input import VIDEO_KINDS
from server.api.deps import RuntimeDep
from server.entry.runtime import Runtime
from server.errors import NotFound

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
# A bare file name with a known suffix: no folders, so no way out of STATIC.
STATIC_NAME = r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|png)$"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: a new release shows at once


class UiConfig(BaseModel):
    """What the page needs to build its form and to know whether to ask for a key."""

    api_key_required: bool
    max_upload_bytes: int
    fps: int
    default_latent_frames: int
    max_latent_frames: int
    default_steps: int
    max_steps: int
    default_policy: str
    default_policy_params: dict[str, object]  # every knob of the default, as it is set
    policies: list[str]  # every registered cache policy
    policy_params: dict[str, dict[str, object]]  # every policy's knobs, at their defaults
    open_ended_policies: list[str]  # those that may run without an end, at their defaults
    image_formats: list[str]  # what an image upload may be
    video_formats: list[str]  # what a video upload (to continue) may be
    max_input_video_seconds: float
    max_prompt_chars: int
    # text tokens a stream's cache holds (BOS, the instruction, the caption, SEP): a prompt
    # change must fit them; the instruction's share at the model's default size (None until
    # the model is loaded)
    stream_prompt_tokens: int
    prompt_template_tokens: int | None


def _static(name: str) -> FileResponse:
    path = STATIC / name
    if not re.fullmatch(STATIC_NAME, name) or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=NO_CACHE)


@router.get("/")
def page() -> FileResponse:
    return _static("index.html")


@router.get("/static/{name}")
def static_file(name: Annotated[str, PathParam(max_length=64)]) -> FileResponse:
    return _static(name)


@router.get("/ui/config")
def config(rt: RuntimeDep) -> UiConfig:
    s = rt.settings
    d = s.generation_defaults
    return UiConfig(
        api_key_required=rt.keys.enabled,
        max_upload_bytes=s.max_upload_bytes,
        fps=s.fps,
        default_latent_frames=min(d.latent_frames, s.max_latent_frames),
        max_latent_frames=s.max_latent_frames,
        default_steps=min(d.sampling.steps, s.max_steps),
        max_steps=s.max_steps,
        default_policy=d.cache_policy,
        default_policy_params=knob_values(make_policy(d.cache_policy, **d.policy_params)),
        policies=list(POLICIES),
        policy_params={name: knob_values(make_policy(name)) for name in POLICIES},
        open_ended_policies=[n for n in POLICIES if open_ended_refusal(make_policy(n)) is None],
        image_formats=list(IMAGE_FORMATS),
        video_formats=list(VIDEO_KINDS),
        max_input_video_seconds=s.max_input_video_seconds,
        max_prompt_chars=s.max_prompt_chars,
        stream_prompt_tokens=s.stream_prompt_tokens,
        prompt_template_tokens=_template_tokens(rt),
    )


def _template_tokens(rt: Runtime) -> int | None:
    """Tokens of the prompt around an empty caption, at the model's default video size."""
    if rt.engine is None:
        return None
    pipeline = rt.engine.pipeline
    width, height = pipeline.text_size()
    ids = build_prompt_ids(pipeline.text_tokenizer, "", width, height, rt.settings.fps, 2)
    return len(ids)
