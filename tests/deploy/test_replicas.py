"""Two replicas, one PostgreSQL job store and one shared data directory, as on a cluster.

A job created on one replica is visible, listed and downloadable on the other, and a replica
that starts while another runs a job leaves that job alone; the jobs of a replica that dies
are resumed by another (its lease in the database is gone with its connection).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.conftest import (
    LONG,
    Served,
    assert_same_video,
    recorded_frames,
)
from tests.server.conftest import LiveServer, wait_until
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


def _cancelled(replica: Served) -> float:
    text = replica.client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "packcache_requests_total" and s.labels.get("status") == "cancelled":
                return s.value
    return 0.0


def test_a_replica_that_dies_leaves_its_jobs_to_the_others(store_url: str, tmp_path: Path) -> None:
    """kill -9 of the replica running a job: another resumes it from the shared record and
    finishes it as an uninterrupted run would; progress and DELETE work across replicas."""
    data = tmp_path / "data"
    a = Served(data, tmp_path, "--store-url", store_url).wait_ready()
    b = Served(data, tmp_path, "--store-url", store_url).wait_ready()
    c: Served | None = None
    try:
        job = a.create(seed=7, **LONG).json()["id"]
        wait_until(lambda: recorded_frames(data, job) >= 2, timeout=120)
        seen = b.client.get(f"/v1/videos/{job}").json()  # runs on a, read on b
        assert seen["status"] == "in_progress" and 0 < seen["progress"] < 100, seen
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=30)
        done = b.wait_done(job, timeout=300)
        assert done["status"] == "completed", done
        again = b.create(seed=7, **LONG).json()["id"]
        assert b.wait_done(again, timeout=300)["status"] == "completed"
        assert_same_video(b, data, job, again)

        # DELETE through one replica stops the job where it runs.
        c = Served(data, tmp_path, "--store-url", store_url).wait_ready()
        running = b.create(seed=8, **LONG).json()["id"]
        wait_until(lambda: recorded_frames(data, running) >= 1, timeout=120)
        before = _cancelled(b)
        assert c.client.delete(f"/v1/videos/{running}").json()["deleted"] is True
        wait_until(lambda: _cancelled(b) == before + 1, timeout=10)
        wait_until(lambda: not (data / "videos" / running).exists(), timeout=10)
        assert b.client.get(f"/v1/videos/{running}").status_code == 404
    finally:
        for replica in (a, b, c):
            if replica is not None:
                replica.stop()
