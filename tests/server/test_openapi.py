"""The OpenAPI document: every route declares its error model; the websocket messages are in it."""

from __future__ import annotations

from server.api.main import create_app
from server.settings import Settings


def test_schema_declares_errors_and_stream_messages() -> None:
    doc = create_app(Settings()).openapi()
    schemas = doc["components"]["schemas"]
    for name in (
        "StreamRequest",
        "CancelMessage",
        "QueuedMessage",
        "StartedMessage",
        "FrameMessage",
        "LatentFrameMessage",
        "ProgressMessage",
        "CompletedMessage",
        "ErrorMessage",
    ):
        assert name in schemas, name
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, op in ops.items():
            for status in ("400", "401"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (path, method, status)
    create = doc["paths"]["/v1/videos"]["post"]
    assert list(create["requestBody"]["content"]) == ["multipart/form-data"]
    assert {"413", "429", "503"} <= set(create["responses"])
