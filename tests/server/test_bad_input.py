"""Every bad input gets a 4xx with a clear OpenAI-style error, and the server keeps serving."""

from __future__ import annotations

import base64
import json
import logging
import select
import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
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


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels (signature, IHDR, an empty IDAT, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_an_image_over_pillows_own_limit_gets_the_servers_message(server: LiveServer) -> None:
    """400 M pixels is past Pillow's decompression-bomb check: the server's limit is named,
    not Pillow's text."""
    error = assert_error(server.create(image=png_header(20_000, 20_000)), 400, "pixels")
    assert str(server.settings.max_image_pixels) in error["message"]
    assert "decompression" not in error["message"].lower()


def test_upload_over_the_byte_limit(server: LiveServer) -> None:
    huge = b"\x89PNG" + b"\0" * (server.settings.max_upload_bytes + 100_000)
    assert_error(server.create(image=huge), 413, "larger than the limit")


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"cache_policy": "lru"}, "cache_policy", ["full", "sliding", "packcache"]),
        ({"cache_policy": "sliding", "rho": 0.5}, "cache_policy", ["rho"]),
        ({"cache_policy": "packcache", "window": 0}, "window", ["greater than"]),
        ({"latent_frames": 500}, "latent_frames", ["allows 2 to 121"]),
        ({"latent_frames": 1}, "latent_frames", ["greater than or equal to 2"]),
        (
            {"latent_frames": None, "frames": 200, "cache_policy": "full"},
            "frames",
            ["allows 2 to 21", "grows"],
        ),
        ({"latent_frames": None, "seconds": "100"}, "seconds", ["allows 2 to 121"]),
        ({"seconds": "2"}, None, ["at most one of"]),
        ({"prompt": "x" * 2001}, "prompt", ["2001 characters", "limit is 2000"]),
        ({"prompt": ""}, "prompt", ["sent empty"]),  # an empty form field is refused
        ({"window": ""}, "window", ["sent empty", "default"]),  # not taken for a missing one
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


def test_missing_image_is_text_to_video_and_json_body(server: LiveServer) -> None:
    form = {"prompt": "a cat", "size": "64x64", "latent_frames": "2", "steps": "1"}
    reply = server.client.post("/v1/videos", data=form)  # no image: text-to-video (issue 29)
    assert reply.status_code == 200 and reply.json()["size"] == "64x64", reply.text
    server.client.delete(f"/v1/videos/{reply.json()['id']}")
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


def ws_refusal(
    server: LiveServer, *messages: str | bytes, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], int | None]:
    with connect(server.ws_url, additional_headers=headers) as ws:
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
        ([json.dumps({"prompt": "a cat", "image": ""})], 1007, ["image"]),  # none: t2v
        ([json.dumps({"type": "cancel"})], 1007, ["prompt"]),
        ([request(image="@@@not base64@@@")], 1007, ["base64"]),
        ([request(image=base64.b64encode(b"GIF89a-nope").decode())], 1007, ["image: not a"]),
        ([request(cache_policy="lru")], 1007, ["cache_policy"]),
    ],
    ids=[
        "not-json",
        "binary",
        "empty-image",
        "cancel-first",
        "bad-b64",
        "bad-image",
        "policy",
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


def test_invalid_utf8_on_the_websocket_is_a_warning_not_a_traceback(server: LiveServer) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's loggers do not reach the root
    uvicorn_log.addHandler(handler)
    try:
        for before in ([], [request(latent_frames=2, steps=1)]):  # first message, or later
            with connect(server.ws_url) as ws:
                for message in before:
                    ws.send(message)
                ws.send(b"\xff\xfe{}", text=True)  # a text frame that is not UTF-8
                with pytest.raises(ConnectionClosed):
                    while True:
                        ws.recv(timeout=60)
            assert ws.close_code == 1007
    finally:
        uvicorn_log.removeHandler(handler)
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert [r for r in records if r.levelno == logging.WARNING and "UTF-8" in r.getMessage()]


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
    # The websocket checks the key at the handshake: header, else the `api_key` query parameter.
    for url, headers, code in [
        (locked.ws_url, {}, "missing_api_key"),
        (locked.ws_url, {"Authorization": "Bearer wrong"}, "invalid_api_key"),
        (locked.ws_url + "?api_key=wrong", {}, "invalid_api_key"),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers)
        response = refused.value.response
        assert response.status_code == 401, response
        assert json.loads(response.body or b"{}")["error"]["code"] == code
    for url, headers in [
        (locked.ws_url, {"Authorization": f"Bearer {KEY}"}),
        (f"{locked.ws_url}?api_key={KEY}", {}),
    ]:
        with connect(url, additional_headers=headers) as ws:
            ws.send(request(latent_frames=2, steps=1))
            assert json.loads(ws.recv(timeout=30))["type"] == "queued"
    error, close_code = ws_refusal(  # the key goes in the handshake, never in the message
        locked, request(api_key=KEY), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert close_code == 1007 and error["error"]["param"] == "api_key"


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


# -- request heads: bounded in bytes and in count ---------------------------------------------


def raw_request(port: int, head: bytes) -> tuple[int, bool]:
    """Sends `head` (stopping early if the server answers or hangs up); returns the answer's
    status and whether the server then closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for i in range(0, len(head), 1 << 16):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already
            try:
                sock.sendall(head[i : i + (1 << 16)])
            except (BrokenPipeError, ConnectionResetError):
                break
        data, closed = b"", False
        try:
            while chunk := sock.recv(65536):
                data += chunk
            closed = True
        except ConnectionResetError:
            closed = True  # it hung up on what we had sent beyond the limit
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1]), closed


def test_a_huge_header_is_refused(server: LiveServer) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n"
    status, closed = raw_request(server.port, head)
    assert status in (400, 431) and closed


def test_many_headers_are_refused(server: LiveServer) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    status, closed = raw_request(
        server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    )
    assert status in (400, 431) and closed
    # Under the byte limit but over the count: 431 with the error body.
    limit = server.settings.max_header_count
    headers = {f"X-H{i}": "v" for i in range(limit + 1)}
    assert_error(server.client.get("/health", headers=headers), 431, "headers")
    assert server.client.get("/health", headers=dict(list(headers.items())[:50])).status_code == 200


# -- multipart fields: once each, plain numbers, valid text -------------------------------------


def form_body(*parts: tuple[str, bytes, str | None]) -> tuple[bytes, dict[str, str]]:
    """A multipart body from (name, value, filename) parts, bytes as given."""
    boundary = "b0undary"
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


IMAGE_PART = ("input_reference", png_bytes(), "a.png")


@pytest.mark.parametrize("field", ["prompt", "steps", "input_reference"])
def test_a_field_sent_twice_is_refused(server: LiveServer, field: str) -> None:
    parts = [("prompt", b"a cat", None), ("size", b"64x64", None), ("steps", b"1", None)]
    parts += [IMAGE_PART]
    parts += [p for p in parts if p[0] == field]
    body, headers = form_body(*parts)
    error = assert_error(server.client.post("/v1/videos", content=body, headers=headers), 400)
    assert error["param"] == field and "more than once" in error["message"], error


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"steps": "1_0"}, "steps"),
        ({"steps": " 2"}, "steps"),
        ({"steps": "+2"}, "steps"),
        ({"seed": "1_000"}, "seed"),
        ({"latent_frames": "3.0"}, "latent_frames"),
        ({"guidance_scale": "1_0.5"}, "guidance_scale"),
        ({"cache_policy": "sliding", "window": "1_0"}, "window"),
        ({"cache_policy": "packcache", "rho": "0.1_0"}, "rho"),
    ],
    ids=["underscore", "space", "plus", "seed", "int-as-float", "float-underscore", "knob", "rho"],
)
def test_numbers_are_plain_decimal(server: LiveServer, fields: dict[str, str], param: str) -> None:
    error = assert_error(server.create(**fields), 400, param)
    assert error["param"] == param, error
    ws_error, close_code = ws_refusal(server, request(**fields))
    assert close_code == 1007 and ws_error["error"]["param"] == param, ws_error


@pytest.mark.parametrize(
    ("fields", "param", "word"),
    [
        ({"b_min": 0.125, "window": 3}, "b_min", "4-frame window"),
        ({"b_min": 0.3}, "b_min", "2^-(w-1)"),
        ({"budget": 0.01}, "budget", "no grid token"),  # checked on the model's grid
    ],
    ids=["b_min-contradicts-window", "b_min-not-a-quota", "budget-below-a-token"],
)
def test_packcache_parameters_outside_its_rule(
    server: LiveServer, fields: dict[str, float], param: str, word: str
) -> None:
    fields = {"cache_policy": "packcache", **fields}
    error = assert_error(server.create(**fields), 400, word)
    assert error["param"] == param, error
    ws_error, close_code = ws_refusal(server, request(**fields))
    assert close_code == 1007 and ws_error["error"]["param"] == param, ws_error


def test_plain_numbers_still_pass(server: LiveServer) -> None:
    fields = {"steps": "1", "latent_frames": "2", "seed": "7", "guidance_scale": "1.5e0"}
    video = server.create(**fields).json()
    assert video["steps"] == 1 and video["seed"] == 7, video
    assert server.wait_done(video["id"])["status"] == "completed"


def test_a_prompt_that_is_not_utf8_is_refused(server: LiveServer) -> None:
    body, headers = form_body(
        ("prompt", b"caf\xe9 \xff", None), ("size", b"64x64", None), IMAGE_PART
    )
    error = assert_error(server.client.post("/v1/videos", content=body, headers=headers), 400)
    assert error["param"] == "prompt" and "utf-8" in error["message"].lower(), error
    body, headers = form_body(
        ("prompt", "café ☕".encode(), None), ("size", b"64x64", None), ("steps", b"1", None)
    )
    reply = server.client.post("/v1/videos", content=body, headers=headers)
    assert reply.status_code == 200, reply.text  # valid text: a text-to-video job
    assert reply.json()["prompt"] == "café ☕"
    server.client.delete(f"/v1/videos/{reply.json()['id']}")


# -- HEAD: every GET route answers it as GET, without the body ---------------------------------


def test_head_answers_like_get(server: LiveServer) -> None:
    video = server.create(latent_frames=2, steps=1).json()
    assert server.wait_done(video["id"])["status"] == "completed"
    for path in ["/health", "/v1/videos", f"/v1/videos/{video['id']}/content", "/v1/nothing"]:
        get, head = server.client.get(path), server.client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        for name in ("content-type", "content-length"):
            assert head.headers.get(name) == get.headers.get(name), (path, name)
    assert server.client.head("/v1/videos").status_code == 200
