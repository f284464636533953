"""Every bad input gets a 4xx with a clear OpenAI-style error, and the server keeps serving."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.server.conftest import LiveServer, png_bytes, wait_until
from tests.server.test_stream import request

KEY = "sk-test-0123456789"


def assert_error(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"].lower(), error
    return error


@pytest.fixture(autouse=True)
def still_serving(server: LiveServer) -> Iterator[None]:
    yield
    assert server.client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (b"this is not an image at all", ["not a recognised image"]),
        (png_bytes()[:60], ["corrupt or truncated"]),
        (b"", ["empty"]),
    ],
    ids=["not-an-image", "corrupt", "empty"],
)
def test_bad_images(server: LiveServer, image: bytes, words: list[str]) -> None:
    error = assert_error(server.create(image=image), 400, *words)
    assert error["param"] == "input_reference"


def test_image_over_the_pixel_limit(server: LiveServer) -> None:
    """A small file that decodes to many pixels (a decompression bomb) is refused unread."""
    big = png_bytes(8000, 6000)  # 48 MP, a few hundred kB as PNG
    assert len(big) < server.settings.max_upload_bytes
    assert_error(server.create(image=big), 400, "more than the limit", "pixels")


def test_upload_over_the_byte_limit(server: LiveServer) -> None:
    huge = b"\x89PNG" + b"\0" * (server.settings.max_upload_bytes + 100_000)
    assert_error(server.create(image=huge), 413, "larger than the limit")


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"cache_policy": "lru"}, "cache_policy", ["full", "sliding", "packcache"]),
        ({"cache_policy": "sliding", "rho": 0.5}, "cache_policy", ["rho"]),
        ({"cache_policy": "packcache", "window": 0}, "window", ["greater than"]),
        ({"latent_frames": 500}, "latent_frames", ["allows 2 to 21"]),
        ({"latent_frames": 1}, "latent_frames", ["greater than or equal to 2"]),
        ({"latent_frames": None, "frames": 200}, "frames", ["allows 2 to 21"]),
        ({"latent_frames": None, "seconds": "100"}, "seconds", ["allows 2 to 21"]),
        ({"seconds": "2"}, None, ["at most one of"]),
        ({"prompt": "x" * 2001}, "prompt", ["2001 characters", "limit is 2000"]),
        ({"prompt": ""}, "prompt", ["required"]),  # an empty form field is a missing one
        ({"size": "100x100"}, "size", ["multiples of 32"]),
        ({"size": "4096x4096"}, "size", ["at most"]),
        ({"size": "big"}, "size", ["pattern"]),
        ({"steps": 101}, "steps", ["limit of 100"]),
        ({"model": "sora-2"}, "model", ["unknown model"]),
        ({"colour": "blue"}, "colour", ["extra inputs"]),
        ({"seed": -1}, "seed", ["greater than or equal to 0"]),
    ],
)
def test_bad_options(
    server: LiveServer, fields: dict[str, Any], param: str | None, words: list[str]
) -> None:
    data = {"prompt": "a cat", "size": "64x64", "latent_frames": 3, "steps": 2, **fields}
    files = {"input_reference": ("in.png", png_bytes(), "image/png")}
    form = {k: str(v) for k, v in data.items() if v is not None}
    error = assert_error(server.client.post("/v1/videos", data=form, files=files), 400, *words)
    assert error["param"] == param


def test_missing_image_and_json_body(server: LiveServer) -> None:
    assert_error(server.client.post("/v1/videos", data={"prompt": "a cat"}), 400, "input_reference")
    assert_error(server.client.post("/v1/videos", json={"prompt": "a cat"}), 400)


def test_unknown_and_malformed_ids(server: LiveServer) -> None:
    unknown = "video_" + "0" * 32
    assert_error(server.client.get(f"/v1/videos/{unknown}"), 404, "no video")
    assert_error(server.client.get(f"/v1/videos/{unknown}/content"), 404, "no video")
    assert_error(server.client.delete(f"/v1/videos/{unknown}"), 404, "no video")
    assert_error(server.client.get("/v1/videos/../../etc/passwd"), 404)
    assert_error(server.client.get("/v1/videos/video_XYZ"), 400, "pattern")
    assert_error(server.client.get("/v1/videos", params={"after": unknown}), 400, "no video")
    assert_error(server.client.get("/v1/videos", params={"limit": 0}), 400, "limit")
    assert_error(server.client.get("/v1/nothing-here"), 404)


def test_content_before_completion(server: LiveServer) -> None:
    video = server.create(latent_frames=6, steps=4).json()
    assert_error(server.client.get(f"/v1/videos/{video['id']}/content"), 409, "content exists")
    server.client.delete(f"/v1/videos/{video['id']}")


def ws_refusal(server: LiveServer, *messages: str | bytes) -> tuple[dict[str, Any], int | None]:
    with connect(server.ws_url) as ws:
        for m in messages:
            ws.send(m)
        reply = ws.recv(timeout=30)
        while json.loads(reply)["type"] != "error":
            reply = ws.recv(timeout=30)
    return json.loads(reply), ws.close_code


@pytest.mark.parametrize(
    ("messages", "code", "words"),
    [
        (["{not json"], 1007, ["invalid json"]),
        ([b"\x00\x01binary"], 1007, ["binary"]),
        ([json.dumps({"prompt": "a cat"})], 1007, ["image"]),
        ([json.dumps({"type": "cancel"})], 1007, ["prompt"]),
        ([request(image="@@@not base64@@@")], 1007, ["base64"]),
        ([request(image=base64.b64encode(b"GIF89a-nope").decode())], 1007, ["image: not a"]),
        ([request(cache_policy="lru")], 1007, ["cache_policy"]),
        ([request(latent_frames=5, steps=4), "garbage"], 1007, ["only", "cancel"]),
    ],
    ids=[
        "not-json",
        "binary",
        "no-image",
        "cancel-first",
        "bad-b64",
        "bad-image",
        "policy",
        "late",
    ],
)
def test_bad_websocket_messages(
    server: LiveServer, messages: list[str | bytes], code: int, words: list[str]
) -> None:
    error, close_code = ws_refusal(server, *messages)
    assert close_code == code
    for word in words:
        assert word in error["error"]["message"].lower(), error
    wait_until(lambda: server.metrics()["packcache_kv_cache_bytes"] == 0, timeout=5)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("locked"), api_keys=["other-key", KEY]).start()
    yield live
    live.stop()


def test_api_keys(locked: LiveServer) -> None:
    c = locked.client
    assert_error(c.get("/v1/videos"), 401, "missing api key")
    assert_error(c.get("/v1/videos", headers={"Authorization": "Bearer wrong"}), 401, "invalid")
    assert_error(c.get("/v1/videos", headers={"Authorization": KEY}), 401, "missing")
    assert c.get("/v1/videos", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert c.get("/health").status_code == c.get("/ready").status_code == 200
    assert c.get("/metrics").status_code == 200  # metrics_public defaults to on
    error, close_code = ws_refusal(locked, request(api_key="wrong"))
    assert close_code == 1008 and error["error"]["code"] == "invalid_api_key"
    error, close_code = ws_refusal(locked, request())
    assert close_code == 1008 and error["error"]["code"] == "missing_api_key"
    with connect(locked.ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.send(request(latent_frames=2, steps=1))
        assert json.loads(ws.recv(timeout=30))["type"] == "queued"


def test_chunked_upload_over_the_limit(server: LiveServer) -> None:
    """Without a Content-Length the body is counted as it streams in and cut at the limit."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="input_reference"; '
        'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    chunks = (server.settings.max_upload_bytes >> 20) + 2

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(chunks):
            yield b"\0" * (1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = server.client.post("/v1/videos", content=body(), headers=headers)
    assert_error(response, 413, "larger than the limit")
