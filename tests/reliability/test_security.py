"""Security: every route needs a key once keys are configured (except the few public ones,
listed here), uploads are bounded in bytes and pixels, ids cannot reach outside the data
directory, and no key appears in a response, a websocket message or the server's log.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Route, WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.reliability.conftest import Served
from tests.reliability.inject import STEP_ERROR
from tests.reliability.test_fuzz_websocket import exchange
from tests.server.conftest import LiveServer, png_bytes
from tests.server.test_stream import client_frame, deflated, open_raw, read_head, request

KEY = "sk-reliability-" + secrets.token_hex(16)
OTHER_KEY = "sk-other-" + secrets.token_hex(16)
ALWAYS_PUBLIC = {"/health", "/ready"}
# Public by design, carrying no job data: the API document and its viewers, and the demo page
# (which asks for a key and sends it with each request; `/ui/config` says only whether one is
# needed). Any route not listed here or above must answer 401 without a key.
DOCUMENTS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
PAGE = {"/", "/static/{name}", "/ui/config"}
SAMPLE_PARAMS = {
    "video_id": "video_" + "0" * 32,
    "image_id": "img_" + "0" * 32,
    "name": "app.js",
    "model_id": "m",
}
UPLOAD, PIXELS = 256 << 10, 200_000


@pytest.fixture(scope="module", params=[True, False], ids=["metrics-public", "metrics-private"])
def locked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("locked"),
        api_keys=[OTHER_KEY, KEY],
        metrics_public=request.param,
        max_upload_bytes=UPLOAD,
        max_image_pixels=PIXELS,
    ).start()
    yield live
    live.stop()


def test_every_route_needs_a_key(locked: LiveServer) -> None:
    public = ALWAYS_PUBLIC | DOCUMENTS | PAGE
    if locked.settings.metrics_public:
        public.add("/metrics")
    seen = set()
    for route in every_route(locked.app.routes):
        if isinstance(route, WebSocketRoute):  # refused at the handshake, before any message
            assert handshake(locked) == (401, "missing_api_key")
            assert handshake(locked, headers=bearer(KEY[:-1])) == (401, "invalid_api_key")
            assert handshake(locked, query=f"?api_key={KEY[:-1]}") == (401, "invalid_api_key")
            assert handshake(locked, headers=bearer(KEY)) == (101, None)
            assert handshake(locked, query=f"?api_key={KEY}") == (101, None)
            seen.add(route.path)
            continue
        assert isinstance(route, APIRoute) or route.path in DOCUMENTS, route
        path = re.sub(r":\w+}", "}", route.path).format(**SAMPLE_PARAMS)  # `{x:path}` too
        for method in sorted(route.methods - {"HEAD"}):
            anonymous = locked.client.request(method, path)
            wrong = locked.client.request(method, path, headers=bearer(KEY[:-1]))
            right = locked.client.request(method, path, headers=bearer(KEY))
            if route.path in public:
                assert anonymous.status_code != 401, (method, path)
            else:
                assert anonymous.status_code == wrong.status_code == 401, (method, path)
                assert "WWW-Authenticate" in anonymous.headers
            assert right.status_code != 401, (method, path)
            seen.add(route.path)
    assert {"/v1/videos", "/v1/videos/{video_id}", "/v1/videos/stream", "/metrics"} <= seen


def every_route(routes: list[BaseRoute]) -> Iterator[Route | WebSocketRoute]:
    """The app's routes, with those of included routers (FastAPI wraps each router it
    includes; `original_router` is where it keeps that router's own routes)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from every_route(included.routes)
        else:
            assert isinstance(route, Route | WebSocketRoute), route
            yield route


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def handshake(
    server: LiveServer | Served, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    """The websocket handshake's answer: (101, None) if accepted, else (status, error code)."""
    try:
        with connect(server.ws_url + query, additional_headers=headers):
            return 101, None
    except InvalidStatus as refused:
        body = json.loads(refused.response.body or b"{}")
        return refused.response.status_code, body.get("error", {}).get("code")


def test_uploads_are_bounded_in_bytes_and_pixels(locked: LiveServer) -> None:
    big = png_bytes(1000, 1000)  # 1 MP: under the byte limit? no: noise-free PNGs are small
    assert len(big) < UPLOAD
    files = {"input_reference": ("a.png", big)}
    form = {"prompt": "x", "size": "64x64"}
    reply = locked.client.post("/v1/videos", data=form, files=files, headers=bearer(KEY))
    assert reply.status_code == 400 and "pixels" in reply.json()["error"]["message"]
    files = {"input_reference": ("a.png", b"\x89PNG" + bytes(UPLOAD + 1))}
    reply = locked.client.post("/v1/videos", data=form, files=files, headers=bearer(KEY))
    assert reply.status_code == 413
    huge = base64.b64encode(bytes(UPLOAD + 100)).decode()
    reply_ws, code = exchange(locked, request(image=huge), headers=bearer(KEY))
    assert code == 1009, reply_ws
    bomb = base64.b64encode(big).decode()
    reply_ws, code = exchange(locked, request(image=bomb), query=f"?api_key={KEY}")
    assert code == 1007 and "pixels" in reply_ws[-1]["error"]["message"]


def test_ids_cannot_reach_outside_the_data_directory(locked: LiveServer) -> None:
    canary = locked.settings.data_dir.parent / "canary.txt"
    canary.write_text("CANARY-" + secrets.token_hex(8))
    relative = f"../../{canary.parent.name}/canary.txt"
    attempts = [
        f"/v1/videos/{quote(relative, safe='')}",
        f"/v1/videos/{quote(relative, safe='')}/content",
        "/v1/videos/video_..%2F..%2Fcanary.txt/content",
        "/v1/videos/%2e%2e%2f%2e%2e%2fcanary.txt/content",
        f"/v1/videos/{quote(str(canary), safe='')}/content",
        "/v1/videos/video_" + "0" * 32 + "%2F..%2F..%2Fcanary.txt/content",
        "/v1/videos/video_" + "0" * 32 + "%00/content",
        "/static/..%2F..%2Fsettings.py",
        "/static/%2e%2e%2fsettings.py",
        f"/v1/videos?after={quote(relative, safe='')}",
    ]
    for path in attempts:
        for method in ("GET", "DELETE"):
            reply = locked.client.request(method, path, headers=bearer(KEY))
            assert 400 <= reply.status_code < 500, (method, path, reply.status_code)
            assert canary.read_text() not in reply.text
    assert canary.exists()


@given(video_id=st.text(min_size=1, max_size=60))
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_any_id_is_a_4xx(locked: LiveServer, video_id: str) -> None:
    path = f"/v1/videos/{quote(video_id, safe='')}/content"
    reply = locked.client.get(path, headers=bearer(KEY))
    assert 400 <= reply.status_code < 500, (video_id, reply.status_code)


def test_no_key_in_responses_or_logs(serve: Callable[..., Served], tmp_path: Path) -> None:
    """Keys from the environment; requests that succeed, fail auth, fail validation, fail in
    generation; then every response, websocket message and log line is searched for a key."""
    env = {"PACKCACHE_API_KEYS": f"{OTHER_KEY},{KEY}"}
    served = serve("--log-level", "debug", inject=True, api_key=KEY, **env).wait_ready()
    seen: list[str] = []
    with httpx.Client(base_url=served.url, timeout=60) as anonymous:
        for key in [KEY[:-1], KEY + "x", KEY.upper(), OTHER_KEY[:-1], None]:
            for path in ("/v1/videos", "/v1/videos/video_x", "/metrics"):
                reply = anonymous.get(path, headers=bearer(key) if key else {})
                seen.append(reply.text + str(reply.headers))
        for key in [KEY, KEY[:-1]]:  # a key in a query string lands in the access log
            reply = anonymous.get("/v1/videos", params={"api_key": key, "limit": 1})
            seen.append(reply.text + str(reply.headers))
        seen.append(anonymous.get("/ui/config").text)
    for prompt in ["fine", STEP_ERROR]:
        reply = served.create(prompt=prompt)
        seen.append(reply.text + json.dumps(served.wait_done(reply.json()["id"])))
    bad = served.client.post("/v1/videos", data={"prompt": "x", "colour": KEY})
    seen.append(bad.text + served.client.get("/v1/videos/video_x").text)
    seen.append(served.client.get("/metrics").text)
    # The websocket: keys in the handshake's header (the websockets library logs every header
    # at debug level) and in its query string (uvicorn logs the path), good and bad.
    for key in (KEY, KEY[:-1], KEY + "x"):
        for where in ({"headers": bearer(key)}, {"query": f"?api_key={key}"}):
            seen.append(str(handshake(served, **where)))  # type: ignore[arg-type]
    for message, where in [
        (request(), {"headers": bearer(KEY)}),
        (request(steps=0), {"query": f"?api_key={KEY}"}),
        (request(prompt=STEP_ERROR), {"headers": bearer(OTHER_KEY)}),
        (request(api_key=KEY), {"headers": bearer(KEY)}),  # the old field: refused, not echoed
    ]:
        received, _ = exchange(served, message, **where)  # type: ignore[arg-type]
        seen.extend(json.dumps(m) if isinstance(m, dict) else "" for m in received)
    served.stop()
    everything = "\n".join(seen) + served.output()
    for line in everything.splitlines():
        assert not leaks(line, KEY) and not leaks(line, OTHER_KEY), line[:600]
    assert "generation_error" in everything  # the failure paths really ran
    assert "Bearer [redacted]" in everything  # the handshake headers were logged, redacted
    assert "api_key=[redacted]" in everything  # the query strings were logged, redacted
    assert "[redacted]]" not in everything  # each replaced once


def test_an_unauthenticated_socket_is_refused_before_its_message_is_read(
    serve: Callable[..., Served],
) -> None:
    """38 KB of permessage-deflate that inflate to 38 MiB, sent without a key (or with a wrong
    one), right after the handshake or once it is answered: the handshake is refused (401) and
    the server's peak memory does not grow by the inflated size."""
    served = serve(PACKCACHE_API_KEYS=KEY).wait_ready()
    inflated = 38 << 20
    payload = deflated(json.dumps({"type": "generate", "prompt": "a" * inflated, "image": "x"}))
    assert len(payload) < 64 << 10
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    status_path = Path(f"/proc/{served.proc.pid}/status")
    try:
        Path(f"/proc/{served.proc.pid}/clear_refs").write_text("5")  # reset the peak RSS
    except OSError as e:
        pytest.skip(f"cannot reset the peak RSS of the served process: {e}")
    before = peak_rss(status_path)
    answers = []
    for headers in [(), (f"Authorization: Bearer {KEY[:-1]}",)]:
        for pipelined in (True, False):
            sock = open_raw(served.port, offer, *headers)
            try:
                if pipelined:
                    sock.sendall(client_frame(payload, compressed=True))
                status, _ = read_head(sock)
                if status == 101:  # accepted without a key: send what it will read
                    sock.sendall(client_frame(payload, compressed=True))
                    sock.recv(65536)
            finally:
                sock.close()
            answers.append(status)
    grown = peak_rss(status_path) - before
    assert grown < inflated // 2, f"peak RSS grew by {grown >> 20} MiB"
    assert answers == [401] * 4
    assert handshake(served, query=f"?api_key={KEY}") == (101, None)
    assert handshake(served, headers=bearer(KEY)) == (101, None)


def peak_rss(status: Path) -> int:
    """VmHWM of /proc/<pid>/status, bytes."""
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) << 10


def test_no_key_in_a_startup_error(serve: Callable[..., Served]) -> None:
    served = serve(PACKCACHE_API_KEYS=f'["{KEY}"')  # a JSON list missing its bracket
    assert served.wait_exit(timeout=120) != 0
    assert "api_keys" in served.output() and not leaks(served.output(), KEY)


def leaks(text: str, key: str, run: int = 12) -> bool:
    """Whether any `run` characters of the key's random part appear (a truncated echo too)."""
    secret = key.rsplit("-", 1)[1]
    return any(secret[i : i + run] in text for i in range(len(secret) - run + 1))
