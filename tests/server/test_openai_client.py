"""The official `openai` client against a live server: create, poll, download, list, delete."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import openai
import pytest
from PIL import Image

from tests.server.conftest import LiveServer, png_bytes

# The SDK warns that OpenAI's own Sora endpoint is deprecated; the API shape is what we serve.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_create_poll_download(client: openai.OpenAI, server: LiveServer, tmp_path: Path) -> None:
    image = tmp_path / "input.png"
    image.write_bytes(png_bytes(96, 64))
    with image.open("rb") as f:
        video = client.videos.create(
            model=server.settings.model_name,
            prompt="a red square drifting right",
            input_reference=f,
            size="64x64",
            extra_body={"latent_frames": 3, "steps": 2, "seed": 7, "cache_policy": "packcache"},
        )
    assert video.status in ("queued", "in_progress")
    assert (video.size, video.model) == ("64x64", server.settings.model_name)
    seen = [video.progress]
    while video.status in ("queued", "in_progress"):
        time.sleep(0.05)
        video = client.videos.retrieve(video.id)
        seen.append(video.progress)
    assert video.status == "completed", video.error
    assert seen == sorted(seen) and seen[-1] == 100 and all(0 <= p <= 100 for p in seen)
    assert video.completed_at is not None and video.completed_at >= video.created_at

    mp4 = client.videos.download_content(video.id).read()
    with av.open(io.BytesIO(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 1 + 4 * (3 - 1)
    assert frames[0].shape == (64, 64, 3)

    thumb = client.videos.download_content(video.id, variant="thumbnail").read()
    assert Image.open(io.BytesIO(thumb)).format == "JPEG"


def test_seconds_maps_to_frames(client: openai.OpenAI, server: LiveServer) -> None:
    """OpenAI's `seconds` at 12 fps: ceil((12 * 1 - 1) / 4) + 1 = 4 latent frames, 13 frames."""
    video = client.videos.create(
        model=server.settings.model_name,
        prompt="one second",
        input_reference=("in.png", png_bytes(), "image/png"),
        seconds="1",  # type: ignore[arg-type]  (the SDK's Literal lists Sora's durations only)
        size="64x64",
        extra_body={"steps": 1},
    )
    assert video.seconds == "1"
    assert video.model_extra is not None and video.model_extra["frames"] == 13
    assert server.wait_done(video.id)["status"] == "completed"


def test_list_and_delete(client: openai.OpenAI, server: LiveServer) -> None:
    ids = [server.create(seed=i).json()["id"] for i in range(3)]
    for video_id in ids:
        server.wait_done(video_id)
    page = client.videos.list(limit=2, order="desc")
    assert [v.id for v in page.data] == ids[::-1][:2]
    assert page.has_more
    rest = client.videos.list(limit=100, order="desc", after=ids[1])
    assert ids[0] in [v.id for v in rest.data] and ids[2] not in [v.id for v in rest.data]

    deleted = client.videos.delete(ids[0])
    assert deleted.deleted and deleted.id == ids[0]
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(ids[0])
    assert not server.runtime.files.folder(ids[0]).exists()
