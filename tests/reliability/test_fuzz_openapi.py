"""Schemathesis against the OpenAPI document, over HTTP to a real uvicorn on 127.0.0.1.

Every operation gets schema-valid and schema-violating cases (a bounded number: `EXAMPLES`,
or `PACKCACHE_FUZZ_EXAMPLES`); each response must not be a 5xx and must match the document
(status declared, body and headers as declared, content type declared, invalid input refused).
Schema-valid creates get a real PNG as `input_reference`, so they run real generations
(bounded by the server's limits below to 64x64, 3 latent frames, 2 steps).

How: the document is taken in-process from the same `create_app` that serves it, and the
first test checks that the live `/openapi.json` is that document. (Schemathesis 4's pytest
loader for a fixture-made schema reads a private pytest attribute that pytest 9 removed, so
the schema is built when the module loads; nothing starts then.) Requests go over real HTTP to
`LiveServer`, not through ASGI, so uvicorn, the body-limit middleware and the multipart
parser are all in the path.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.api.main import create_app
from server.settings import Settings
from tests.server.conftest import LiveServer, png_bytes

EXAMPLES = int(os.environ.get("PACKCACHE_FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# Cheap generations whatever a case asks: the server's limits cap them.
LIMITS = {
    "max_latent_frames": 3,
    "max_bounded_latent_frames": 3,
    "max_steps": 2,
    "max_video_pixels": 64 * 64,
    "max_queued": 4,
}
STATUSES: Counter[int] = Counter()  # every response's status, for the summary
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("fuzz"), **LIMITS).start()
    yield live
    live.stop()


def test_the_live_document_is_the_fuzzed_one(fuzzed: LiveServer) -> None:
    assert fuzzed.client.get("/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_openapi(case: schemathesis.Case, fuzzed: LiveServer) -> None:
    body = case.body
    valid = case.meta is None or not case.meta.generation.mode.is_negative
    if valid and isinstance(body, dict) and "input_reference" in body:
        body["input_reference"] = png_bytes(64, 64)  # a real image: a real generation
    response = case.call_and_validate(base_url=fuzzed.url, checks=CHECKS)
    STATUSES[response.status_code] += 1


def test_still_serving_after_the_fuzz(fuzzed: LiveServer) -> None:
    assert fuzzed.client.get("/ready").status_code == 200
    metrics = fuzzed.metrics()
    assert metrics['packcache_requests_total{status="failed"}'] == 0
    total = sum(STATUSES.values())
    print(f"\nopenapi fuzz: {total} requests; by status: {sorted(STATUSES.items())}")
    assert total >= EXAMPLES and max(STATUSES) < 500
