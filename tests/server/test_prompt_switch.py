"""A prompt changed mid-stream is followed from the frame the server acknowledges.

`builtin:demo` served for real, websocket clients: 8 held-out scenes, fixed seeds, "the camera
pans left" until the first generated latent frame arrives, then "the camera pans right". The
frames before the acknowledged one are those of the same request never changed (codes, from
the videos' records); the motion measured from the acknowledged frame on is the new prompt's.
`benchmarks/prompt_switch.py` measures the same on `builtin:demo-long` (the longest trained
horizon), where it is weaker, and what keeping the old history's keys would do instead
(benchmarks/README.md, "Prompt changes").
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from websockets.sync.client import connect

from packcache_core.demo.data import make_clip
from packcache_core.demo.motion import content_shift, direction_of
from packcache_core.record import FrameRecord
from tests.server.conftest import LiveServer

LEFT, RIGHT = "the camera pans left", "the camera pans right"
CLIPS = 8
# The default request (the card's policy, the paper's `packcache`, the one builtin:demo is
# trained for). It ran `full` until the demo-clean weights, under which 6 of 8 clips turn
# (it passed on the weights before); the card's policy turns 16 of 16 in prompt_switch.py on
# the shipped weights (15 on demo-clean's).
SETTINGS = {"frame_format": "png"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("data"), model="builtin:demo").start()
    yield live
    live.stop()


def scene(index: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(make_clip("heldout", index).rgb_frames(1)[0].numpy()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def stream(server: LiveServer, index: int, switch: bool) -> tuple[str, int, torch.Tensor]:
    """(video id, acknowledged latent frame (0 without a switch), each latent frame's picture)."""
    pictures: dict[int, torch.Tensor] = {}
    ack, header = None, None
    request = {"prompt": LEFT, "image": scene(index), "seed": index, **SETTINGS}
    with connect(server.ws_url, max_size=None) as ws:
        ws.send(json.dumps(request))
        while True:
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                assert header is not None
                if header["index"] % 4 == 0:  # the last RGB frame of each latent frame
                    image = np.array(Image.open(io.BytesIO(message)).convert("RGB"))
                    pictures[header["index"] // 4] = torch.from_numpy(image)
                continue
            body: dict[str, Any] = json.loads(message)
            if body["type"] == "frame":
                header = body
            elif body["type"] == "latent_frame" and body["latent_index"] == 1 and switch:
                ws.send(json.dumps({"type": "prompt", "prompt": RIGHT}))
            elif body["type"] == "prompt_changed":
                ack = body["latent_index"]
            elif body["type"] in ("completed", "error"):
                assert body["type"] == "completed", body
                break
    assert (ack is not None) == switch
    return body["id"], ack or 0, torch.stack([pictures[i] for i in sorted(pictures)])


def codes(server: LiveServer, video_id: str) -> list[torch.Tensor]:
    return FrameRecord(server.runtime.files.folder(video_id) / "frames").read().codes


def test_the_new_prompt_is_followed_from_the_acknowledged_frame(server: LiveServer) -> None:
    right = 0
    for index in range(CLIPS):
        video_id, ack, pictures = stream(server, index, switch=True)
        assert 2 <= ack <= 3, ack  # the frame after the one in progress when it arrived
        print(f"clip {index}: acknowledged at latent frame {ack}")
        # content moving left = the camera panning right, from the last frame before the switch
        right += direction_of(content_shift(pictures[ack - 1 :])) == "left"
        if index < 2:  # before the acknowledged frame, nothing changed
            plain, _, _ = stream(server, index, switch=False)
            switched, unchanged = codes(server, video_id), codes(server, plain)
            before = zip(switched[: ack - 1], unchanged[: ack - 1], strict=True)
            assert all(torch.equal(a, b) for a, b in before)
            assert not torch.equal(switched[ack - 1], unchanged[ack - 1])
    print(f"{right} of {CLIPS} clips pan right after the change")
    assert right >= 0.8 * CLIPS, f"{right} of {CLIPS} clips pan right after the change"
