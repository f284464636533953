"""Text-to-video and text-to-image on a live server with the default model (`builtin:demo`):
the official `openai` SDK unmodified (`videos.create` without an image, `images.generate` as
`b64_json` and `url`), the websocket without an image (open-ended too), extension, remix and
resume after a restart of a text-to-video video, tenants on image URLs, and bad input naming
the field.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import openai
import pytest
from PIL import Image
from websockets.sync.client import connect

from tests.server.conftest import LiveServer, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
KEY, OTHER = "key-a", "key-b"
SMALL = {"latent_frames": 2, "steps": 2, "seed": 5}  # 5 RGB frames at 128x64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("data"), model="builtin:demo", api_keys=[KEY, OTHER]
    ).start()
    live.client.headers["Authorization"] = f"Bearer {KEY}"
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def finished(client: openai.OpenAI, video_id: str, timeout: float = 120) -> Any:
    end = time.monotonic() + timeout
    video = client.videos.retrieve(video_id)
    while video.status in ("queued", "in_progress") and time.monotonic() < end:
        time.sleep(0.05)
        video = client.videos.retrieve(video_id)
    assert video.status == "completed", video.error
    return video


def decoded(mp4: bytes) -> list[Any]:
    with av.open(io.BytesIO(mp4)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_videos_create_without_an_image(client: openai.OpenAI, server: LiveServer) -> None:
    video = client.videos.create(
        model=server.settings.model_name, prompt="the camera pans left", extra_body=SMALL
    )
    video = finished(client, video.id)
    assert video.size == "128x64"
    frames = decoded(client.videos.download_content(video.id).read())
    assert len(frames) == 1 + 4 * (2 - 1) and frames[0].shape == (64, 128, 3)
    record = json.loads((server.runtime.files.request(video.id)).read_text())
    assert record["text_only"] is True
    assert not server.runtime.files.input(video.id).exists()
    assert server.runtime.files.frames(video.id).count() == 2  # frame 0 is generated


def test_extension_and_remix_of_a_text_to_video_video(
    client: openai.OpenAI, server: LiveServer
) -> None:
    """An extension replays the source's recorded frames (frame 0 included) and adds the new
    ones; a remix is a text-to-video video of the source's length."""
    source = finished(
        client,
        client.videos.create(
            model=server.settings.model_name, prompt="a still scene", extra_body=SMALL
        ).id,
    )
    body = {"video": {"id": source.id}, "prompt": "the camera pans right", "latent_frames": 1}
    reply = server.client.post("/v1/videos/extensions", json=body)
    assert reply.status_code == 200, reply.text
    extended = finished(client, reply.json()["id"])
    assert extended.latent_frames == 3
    assert len(decoded(client.videos.download_content(extended.id).read())) == 1 + 4 * 2
    files = server.runtime.files
    src, ext = files.frames(source.id).read(), files.frames(extended.id).read()
    assert len(ext.codes) == 3
    assert all(a.equal(b) for a, b in zip(src.codes, ext.codes[:2], strict=True))

    remix = finished(client, client.videos.remix(source.id, prompt="a red square").id)
    assert len(decoded(client.videos.download_content(remix.id).read())) == 5


def test_images_generate_b64_json(client: openai.OpenAI, server: LiveServer) -> None:
    result = client.images.generate(
        model=server.settings.model_name,
        prompt="a red square on a blue field",
        n=2,
        response_format="b64_json",
        output_format="webp",
    )
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None and item.url is None
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "WEBP" and image.size == (128, 64)
    assert result.size == "128x64"


def test_images_generate_url_is_the_callers_own(client: openai.OpenAI, server: LiveServer) -> None:
    result = client.images.generate(
        model=server.settings.model_name,
        prompt="green stripes",
        size="128x64",
        response_format="url",
        output_format="jpeg",
    )
    assert result.data is not None and len(result.data) == 1
    url = result.data[0].url
    assert url is not None and url.startswith(f"{server.url}/v1/images/img_")
    got = server.client.get(url)  # the same key
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(got.content)).size == (128, 64)
    other = server.client.get(url, headers={"Authorization": f"Bearer {OTHER}"})
    assert other.status_code == 404  # another tenant's image is a missing one
    assert server.client.get(url, headers={"Authorization": ""}).status_code == 401


def test_image_jobs_are_not_videos_but_go_through_the_engine(server: LiveServer) -> None:
    listed = server.client.get("/v1/videos", params={"limit": 100}).json()["data"]
    assert all(v["id"].startswith("video_") for v in listed)
    metrics = server.metrics()
    started = sum(v for k, v in metrics.items() if k.startswith("packcache_requests_total"))
    assert started >= 3  # the images of the tests above, counted like videos


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 5}, "n"),  # above max_images (4)
        ({"n": 11}, "n"),  # above the API's 10
        ({"size": "1024x1024"}, "size"),
        ({"size": "big"}, "size"),
        ({"response_format": "gif"}, "response_format"),
        ({"output_format": "bmp"}, "output_format"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"image": "aGVsbG8="}, "image"),
        ({"mask": "aGVsbG8="}, "mask"),
        ({"input_reference": "x"}, "input_reference"),
        ({"model": "dall-e-3"}, "model"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_image_requests_name_the_field(
    server: LiveServer, fields: dict[str, Any], param: str
) -> None:
    body = {"prompt": "a red square", **fields}
    reply = server.client.post("/v1/images/generations", json=body)
    assert 400 <= reply.status_code < 500, reply.text
    error = reply.json()["error"]
    assert error["param"] == param, error
    assert param in error["message"]


def test_size_error_names_the_sizes_the_model_makes(server: LiveServer) -> None:
    reply = server.client.post("/v1/images/generations", json={"prompt": "x", "size": "1024x1024"})
    assert reply.status_code == 400 and "128x64" in reply.json()["error"]["message"]


def ws_messages(server: LiveServer, request: dict[str, Any], stop_after: int | None) -> list:  # type: ignore[type-arg]
    """Run one websocket request; with `stop_after`, send `stop` once that many latent frames
    came. Returns the JSON messages."""
    out = []
    with connect(f"{server.ws_url}?api_key={KEY}") as ws:
        ws.send(json.dumps(request))
        while True:
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                continue
            body = json.loads(message)
            out.append(body)
            if body["type"] == "latent_frame" and body["latent_index"] == stop_after:
                ws.send(json.dumps({"type": "stop"}))
            if body["type"] in ("completed", "error"):
                return out


def test_websocket_without_an_image(server: LiveServer) -> None:
    messages = ws_messages(server, {"prompt": "the camera pans up", **SMALL}, None)
    assert messages[-1]["type"] == "completed", messages[-1]
    headers = [m for m in messages if m["type"] == "frame"]
    assert [h["index"] for h in headers] == list(range(5))
    # the n-th generated latent frame is latent_index n: frame 0 is generated, latent_index 1
    assert [h["latent_index"] for h in headers] == [1, 2, 2, 2, 2]


def test_open_ended_websocket_without_an_image(server: LiveServer) -> None:
    request = {"prompt": "a scene", "open_ended": True, "cache_policy": "sliding", "steps": 1}
    messages = ws_messages(server, request, stop_after=3)
    assert messages[-1]["type"] == "completed", messages[-1]
    latents = [m["latent_index"] for m in messages if m["type"] == "latent_frame"]
    assert latents[:3] == [1, 2, 3]


def test_a_text_to_video_job_resumes_after_a_restart(tmp_path: Path) -> None:
    """Stopped after its first frames (paced to playback, so it is still running), a
    text-to-video job (no image saved) is resumed by the next server on its data and equals an
    uninterrupted run of the same request."""
    ask = {"prompt": "the camera pans down", "latent_frames": 12, "steps": 1, "seed": 9}
    first = LiveServer(tmp_path, model="builtin:demo").start()
    try:
        with connect(first.ws_url) as ws:
            ws.send(json.dumps({**ask, "realtime": True}))
            video_id = json.loads(ws.recv(timeout=60))["id"]
            wait_until(lambda: first.runtime.files.frames(video_id).count() >= 1, timeout=60)
            assert first.runtime.require_engine().job_ids() == [video_id]  # still running
            first.stop()
    finally:
        first.stop()
    second = LiveServer(tmp_path, model="builtin:demo").start()
    try:
        assert second.wait_done(video_id, timeout=120)["status"] == "completed"
        form = {k: str(v) for k, v in ask.items()}
        again = second.client.post("/v1/videos", data=form).json()["id"]
        assert second.wait_done(again, timeout=120)["status"] == "completed"
        resumed = second.runtime.files.frames(video_id).read().codes
        whole = second.runtime.files.frames(again).read().codes
        assert len(resumed) == len(whole) == 12
        assert all(a.equal(b) for a, b in zip(resumed, whole, strict=True))
        mp4 = second.client.get(f"/v1/videos/{video_id}/content").content
        assert len(decoded(mp4)) == 1 + 4 * 11
    finally:
        second.stop()
