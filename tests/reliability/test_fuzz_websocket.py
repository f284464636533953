"""A websocket fuzzer: malformed, oversized, binary and out-of-order messages, and clients that
vanish without a close handshake in every phase of a request (queued, generating, sending).

Every refusal is one `error` message (the `ErrorMessage` model) and a documented close code,
never 1011 or a dropped connection; a client that vanishes has its request run to completion,
or, if it asked for `cancel_on_disconnect`, cancelled and its cache freed; afterwards nothing is
left open, running or unfinished, and the server is ready.
Random cases come from Hypothesis (`FUZZ_EXAMPLES`, or `PACKCACHE_FUZZ_EXAMPLES`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from server.api.routes.stream import control_limit
from server.api.schemas import ErrorMessage
from server.settings import Settings
from tests.reliability.conftest import SMALL
from tests.server.conftest import LiveServer, png_bytes, wait_until

UPLOAD = 64 << 10  # a small upload limit, so an oversized message is cheap to send
TEXT_LIMIT = 2 * UPLOAD + 65536  # the first message's limit (routes/stream.py)
# the limit of every later message (the fuzzed server keeps the default prompt length)
CONTROL_LIMIT = control_limit(Settings.model_fields["max_prompt_chars"].default)
REFUSALS = {1007, 1008, 1009, 1013}  # invalid, key, too big, try again: never 1011
FUZZ_EXAMPLES = int(os.environ.get("PACKCACHE_FUZZ_EXAMPLES", "40"))
IMAGE = base64.b64encode(png_bytes(64, 64)).decode()
OUTCOMES: Counter[str] = Counter()  # how each fuzzed exchange ended, for the summary


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("wsfuzz"), max_upload_bytes=UPLOAD, max_running=1, max_queued=4
    ).start()
    yield live
    live.stop()


def valid(**fields: Any) -> dict[str, Any]:
    return {"type": "generate", "prompt": "fuzz", "image": IMAGE, **SMALL, **fields}


def exchange(
    server: LiveServer,
    *messages: str | bytes,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[list[Any], int | None]:
    """Send `messages`, read to the server's close (cancelling an accepted request); returns
    every message received (JSON parsed) and the close code."""
    received: list[Any] = []
    with connect(server.ws_url + query, max_size=None, additional_headers=headers) as ws:
        for m in messages:
            send(ws, m)
        try:
            while True:
                raw = ws.recv(timeout=60)
                message = json.loads(raw) if isinstance(raw, str) else raw
                received.append(message)
                if isinstance(message, dict) and message["type"] == "queued":
                    send(ws, json.dumps({"type": "cancel"}))
        except ConnectionClosed:
            pass
    return received, ws.close_code


def send(ws: ClientConnection, message: str | bytes) -> None:
    """Send unless the server has closed already (its last messages stay readable)."""
    with contextlib.suppress(ConnectionClosed):
        ws.send(message)


def assert_refused(received: list[Any], code: int | None) -> dict[str, Any]:
    assert code in REFUSALS, (code, received)
    last = received[-1]
    ErrorMessage.model_validate(last)  # the documented shape
    OUTCOMES[f"refused {code}"] += 1
    return dict(last["error"])


def assert_clean_end(received: list[Any], code: int | None) -> None:
    """Refused, or accepted then ended by our cancel (1000), never a server failure."""
    if code == 1000:
        assert received[-1]["type"] in ("completed", "error"), received[-1]
        OUTCOMES["accepted, then cancelled or completed"] += 1
    else:
        assert_refused(received, code)


@pytest.mark.parametrize(
    ("messages", "code", "word"),
    [
        (["{"], 1007, "json"),
        (["[]"], 1007, "valid"),
        (["null"], 1007, "valid"),
        (['"generate"'], 1007, "valid"),
        (["[" * 50_000 + "]" * 50_000], 1007, ""),  # deep nesting
        ([json.dumps(valid(prompt=5))], 1007, "prompt"),
        ([json.dumps(valid(steps=10**30))], 1007, "steps"),
        ([json.dumps(valid(image="\0" * 100))], 1007, "base64"),
        ([json.dumps(valid(prompt="\ud800"))], 1007, ""),  # a lone surrogate, escaped
        ([json.dumps(valid(unknown=1))], 1007, "extra"),
        ([b"\x89PNG\r\n\x1a\n" + b"\0" * 64], 1007, "binary"),
        ([b""], 1007, "binary"),
        (["x" * (TEXT_LIMIT + 1)], 1009, "larger than the limit"),
        ([json.dumps(valid(image="A" * (2 * UPLOAD)))], 1009, "image is larger"),
        ([json.dumps({"type": "cancel"})], 1007, ""),  # cancel before any request
    ],
    ids=[
        "truncated",
        "array",
        "null",
        "string",
        "deep-nesting",
        "wrong-type",
        "huge-number",
        "nul-image",
        "lone-surrogate",
        "extra-field",
        "binary-png",
        "binary-empty",
        "oversized",
        "oversized-image",
        "cancel-first",
    ],
)
def test_bad_messages_are_refused(
    server: LiveServer, messages: list[str | bytes], code: int, word: str
) -> None:
    received, close_code = exchange(server, *messages)
    assert close_code == code, received[-1:]
    assert word in assert_refused(received, close_code)["message"].lower()


@pytest.mark.parametrize(
    ("later", "code"),
    [
        (json.dumps(valid()), "invalid_message"),  # a second request
        (b"\0\1", "invalid_message"),  # binary
        ("y" * (CONTROL_LIMIT + 1), "message_too_large"),
    ],
    ids=["second-request", "binary-later", "oversized-later"],
)
def test_bad_messages_after_the_request_are_rejected_and_the_video_kept(
    server: LiveServer, later: str | bytes, code: str
) -> None:
    """Read before our cancel (sent once `queued` arrives), each is answered `rejected` and
    the video goes on; it ends by that cancel, never by the bad message."""
    received, close_code = exchange(server, json.dumps(valid()), later)
    (rejected,) = [m for m in received if isinstance(m, dict) and m["type"] == "rejected"]
    assert rejected["error"]["code"] == code and rejected["request"] is None
    assert close_code == 1000 and received[-1]["error"]["code"] == "cancelled"


def mutate(data: bytes, positions: list[int], values: list[int]) -> bytes:
    out = bytearray(data)
    for p, v in zip(positions, values, strict=False):
        out[p % len(out)] = v
    return bytes(out)


SMALL_REQUEST = json.dumps(valid()).encode()
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
first_messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(sorted(valid())), json_values).map(
        lambda d: json.dumps(valid() | d)
    ),
    st.tuples(
        st.lists(st.integers(0, len(SMALL_REQUEST)), min_size=1, max_size=8),
        st.lists(st.integers(0, 255), min_size=1, max_size=8),
    ).map(lambda pv: mutate(SMALL_REQUEST, *pv).decode("utf-8", "replace")),
)


@given(first=first_messages, later=st.lists(st.text(max_size=50) | st.binary(max_size=50)))
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_random_messages(server: LiveServer, first: str | bytes, later: list[str | bytes]) -> None:
    received, code = exchange(server, first, *later[:3])
    assert_clean_end(received, code)


# -- clients that vanish -----------------------------------------------------------------------


def vanish(ws: ClientConnection) -> None:
    """Drop the TCP connection with a reset: no close frame, no FIN handshake."""
    ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.socket.close()


def read_until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        raw = ws.recv(timeout=60)
        if isinstance(raw, str) and json.loads(raw)["type"] == kind:
            return dict(json.loads(raw))


def assert_cancelled(server: LiveServer, video_id: str) -> None:
    video = server.wait_done(video_id)
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled", video
    OUTCOMES["vanished, cancelled"] += 1


def test_vanishing_before_the_request(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        vanish(ws)
    with connect(server.ws_url) as ws:  # half a frame: a 1000-byte text frame cut at 10 bytes
        ws.socket.sendall(b"\x81\xfe\x03\xe8" + b"mask" + b"0123456789")
        vanish(ws)
    wait_until(lambda: server.metrics()["packcache_websocket_streams_open"] == 0, timeout=10)


def test_vanishing_while_queued(server: LiveServer) -> None:
    blocker = server.create(latent_frames=8, steps=4).json()  # max_running is 1
    with connect(server.ws_url) as ws:
        ws.send(json.dumps(valid(cancel_on_disconnect=True)))
        queued = read_until(ws, "queued")
        assert queued["position"] >= 1
        vanish(ws)
    assert_cancelled(server, queued["id"])
    assert server.wait_done(blocker["id"])["status"] == "completed"


@pytest.mark.parametrize("opted_in", [True, False], ids=["cancel-on-disconnect", "default"])
def test_vanishing_while_generating(server: LiveServer, opted_in: bool) -> None:
    with connect(server.ws_url) as ws:
        ws.send(json.dumps(valid(latent_frames=8, steps=4, cancel_on_disconnect=opted_in)))
        started = read_until(ws, "started")
        read_until(ws, "progress")
        vanish(ws)
    if opted_in:
        assert_cancelled(server, started["id"])
        return
    assert server.wait_done(started["id"])["status"] == "completed"
    OUTCOMES["vanished, completed"] += 1


def test_vanishing_while_frames_are_sent(server: LiveServer) -> None:
    """The client reads a frame header, never its image, and leaves while frames pile up."""
    with connect(server.ws_url, max_queue=1) as ws:
        ws.send(json.dumps(valid(latent_frames=8, steps=1, size="128x64")))
        started = read_until(ws, "started")
        read_until(ws, "frame")
        vanish(ws)
    video = server.wait_done(started["id"])
    assert video["status"] in ("completed", "failed"), video  # it may have finished meanwhile
    if video["status"] == "failed":
        assert video["error"]["code"] == "cancelled"
    OUTCOMES["vanished while sending"] += 1


def test_nothing_left_behind(server: LiveServer) -> None:
    def settled() -> bool:
        m = server.metrics()
        open_, kv = m["packcache_websocket_streams_open"], m["packcache_kv_cache_bytes"]
        busy = m["packcache_num_requests_running"] + m["packcache_num_requests_waiting"]
        return open_ == kv == busy == 0

    wait_until(settled, timeout=30)
    videos = server.client.get("/v1/videos", params={"limit": 100}).json()["data"]
    assert {v["status"] for v in videos} <= {"completed", "failed"}
    assert server.client.get("/ready").status_code == 200
    print(f"\nwebsocket fuzz: {sum(OUTCOMES.values())} exchanges; {sorted(OUTCOMES.items())}")
