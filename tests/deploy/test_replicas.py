"""Two replicas, one PostgreSQL job store and one shared data directory, as on a cluster.

A job created on one replica is visible, listed and downloadable on the other, and a replica
that starts while another runs a job leaves that job alone (only a dead replica's jobs are
failed at start-up).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import LiveServer
from tests.server.test_store import postgres_schema, postgres_url


@pytest.fixture
def store_url() -> Iterator[str]:
    yield from postgres_schema(postgres_url())


def test_any_replica_serves_any_job(store_url: str, tmp_path: Path) -> None:
    first = LiveServer(tmp_path, store_url=store_url).start()
    second: LiveServer | None = None
    try:
        video = first.create(latent_frames=5, steps=8).json()  # a few seconds on a CPU
        second = LiveServer(tmp_path, store_url=store_url).start()  # while `video` runs
        assert second.client.get(f"/v1/videos/{video['id']}").json()["status"] in (
            "queued",
            "in_progress",
            "completed",
        )
        done = first.wait_done(video["id"])
        assert done["status"] == "completed", done  # not failed by the second's start-up
        seen = second.client.get(f"/v1/videos/{video['id']}").json()
        assert seen["status"] == "completed" and seen["stats"] == done["stats"]
        listed = second.client.get("/v1/videos").json()["data"]
        assert [v["id"] for v in listed] == [video["id"]]
        path = f"/v1/videos/{video['id']}/content"
        assert second.client.get(path).content == first.client.get(path).content
    finally:
        first.stop()
        if second is not None:
            second.stop()
