"""Remix and the served model through the official `openai` SDK on a live server."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import openai
import pytest
from PIL import Image

from tests.server.conftest import LiveServer, png_bytes

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
SMALL = {"latent_frames": 3, "steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _wait(client: openai.OpenAI, video_id: str) -> openai.types.Video:
    video = client.videos.retrieve(video_id)
    end = time.monotonic() + 60
    while video.status in ("queued", "in_progress") and time.monotonic() < end:
        time.sleep(0.05)
        video = client.videos.retrieve(video_id)
    return video


def _frames(client: openai.OpenAI, video_id: str) -> list[np.ndarray]:
    mp4 = client.videos.download_content(video_id).read()
    with av.open(io.BytesIO(mp4)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_models_name_the_served_model(client: openai.OpenAI, server: LiveServer) -> None:
    name = server.settings.model_name
    assert [m.id for m in client.models.list()] == [name]
    model = client.models.retrieve(name)
    assert (model.id, model.object, model.owned_by) == (name, "model", "packcache")
    with pytest.raises(openai.NotFoundError, match="this server serves"):
        client.models.retrieve("sora-2")


def test_remix_reuses_the_image_and_settings_with_a_new_prompt(
    client: openai.OpenAI, server: LiveServer
) -> None:
    source = client.videos.create(
        model=server.settings.model_name,
        prompt="a red square drifting right",
        input_reference=("in.png", png_bytes(96, 64), "image/png"),
        size="64x64",
        extra_body=SMALL,
    )
    with pytest.raises(openai.ConflictError, match="only a completed video"):
        client.videos.remix(source.id, prompt="too early")  # still queued or running
    assert _wait(client, source.id).status == "completed"

    remixed = client.videos.remix(source.id, prompt="a red square drifting left")
    assert remixed.remixed_from_video_id == source.id and remixed.id != source.id
    done = _wait(client, remixed.id)
    assert done.status == "completed", done.error
    assert (done.prompt, done.size, done.seconds) == (
        "a red square drifting left",
        "64x64",
        client.videos.retrieve(source.id).seconds,
    )
    # The remix is the source's request with the new prompt: the same stored image, the same
    # resolved settings (seed included).
    videos = server.settings.data_dir / "videos"
    saved = {i: json.loads((videos / i / "request.json").read_text()) for i in (source.id, done.id)}
    assert saved[done.id] == saved[source.id] | {"prompt": "a red square drifting left"}
    assert (videos / done.id / "input").read_bytes() == (videos / source.id / "input").read_bytes()
    assert len(_frames(client, done.id)) == 1 + 4 * (SMALL["latent_frames"] - 1)
    with pytest.raises(openai.NotFoundError):
        client.videos.remix("video_" + "0" * 32, prompt="x")
    with pytest.raises(openai.BadRequestError):
        client.videos.remix(source.id, prompt="")


def test_spritesheet_tiles_the_video(client: openai.OpenAI, server: LiveServer) -> None:
    video = client.videos.create(
        model=server.settings.model_name,
        prompt="a red square drifting right",
        input_reference=("in.png", png_bytes(96, 64), "image/png"),
        size="64x64",
        extra_body=SMALL,  # 9 frames: a 4 x 3 grid of 160 x 160 tiles, first to last
    )
    with pytest.raises(openai.ConflictError):
        client.videos.download_content(video.id, variant="spritesheet")
    assert _wait(client, video.id).status == "completed"
    sheet = client.videos.download_content(video.id, variant="spritesheet").read()
    image = Image.open(io.BytesIO(sheet))
    assert (image.format, image.size) == ("JPEG", (4 * 160, 3 * 160))
    frames = _frames(client, video.id)
    first = np.asarray(image.crop((0, 0, 160, 160)).resize((64, 64)), dtype=np.float32)
    last = np.asarray(image.crop((0, 320, 160, 480)).resize((64, 64)), dtype=np.float32)

    # Each tile is its frame, scaled (JPEG on top): closer to it than to the other end.
    def err(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b.astype(np.float32)).mean())

    assert err(first, frames[0]) < 12 and err(last, frames[-1]) < 12
    assert client.videos.download_content(video.id, variant="spritesheet").read() == sheet


def test_concurrent_first_requests_for_a_spritesheet_all_get_it(server: LiveServer) -> None:
    """8 clients at once ask for each new video's spritesheet, which none has made yet: each
    gets the whole file (it was a shared part file, and some got HTTP 500)."""
    ids = [server.create(latent_frames=2, steps=1).json()["id"] for _ in range(3)]
    for video_id in ids:
        assert server.wait_done(video_id)["status"] == "completed"
    for video_id in ids:
        start = threading.Barrier(8)
        url = f"/v1/videos/{video_id}/content?variant=spritesheet"

        def fetch(_: int, url: str = url, start: threading.Barrier = start) -> tuple[int, bytes]:
            start.wait(timeout=30)
            response = server.client.get(url)
            return response.status_code, response.content

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(fetch, range(8)))
        assert [status for status, _ in answers] == [200] * 8
        assert len({body for _, body in answers}) == 1
        assert not list(server.runtime.files.folder(video_id).glob("*.part"))
