"""The README's main job end to end: `builtin:demo` served with default settings, a picture and
a prompt through the official `openai` client, an MP4 back that moves the way the prompt says."""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import openai
import pytest
import torch
from PIL import Image

from packcache_core.demo.card import read_card
from packcache_core.demo.data import Motion, make_clip
from packcache_core.demo.motion import follows
from server.settings import Settings
from tests.server.conftest import LiveServer


def still_scene_png() -> bytes:
    """A held-out still scene: nothing in the picture itself says which way to move."""
    clip = next(c for i in range(100) if (c := make_clip("heldout", i, 2)).motion.kind == "still")
    buf = io.BytesIO()
    Image.fromarray(clip.latent_frames(1)[0].numpy()).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The README's `packcache serve`: every setting at its default (the model too)."""
    default_model = Settings.model_fields["model"].default
    live = LiveServer(tmp_path_factory.mktemp("data"), model=default_model).start()
    yield live
    live.stop()


@pytest.mark.parametrize("direction", ["left", "down"])
def test_default_server_makes_a_video_that_pans_as_asked(
    server: LiveServer, direction: str
) -> None:
    assert server.settings.model == "builtin:demo"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    video = client.videos.create(
        model="builtin:demo",
        prompt=f"the camera pans {direction}",
        input_reference=("scene.png", still_scene_png(), "image/png"),
        extra_body={"seed": 0},  # size, length, steps and guidance: the model card's
    )
    done = server.wait_done(video.id, timeout=120)
    assert done["status"] == "completed", done
    card = read_card().defaults
    assert done["size"] == f"{card.size[0]}x{card.size[1]}"  # type: ignore[index]

    mp4 = client.videos.download_content(video.id).read()
    with av.open(io.BytesIO(mp4)) as container:
        rgb = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(rgb) == 1 + 4 * (card.latent_frames - 1)
    latent = torch.stack([torch.from_numpy(f) for f in rgb[::4]])  # one picture per latent frame
    assert follows(Motion("pan", direction), latent)
