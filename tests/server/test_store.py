"""`SqliteJobStore` behind the `JobStore` interface, and `open_store` URLs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.errors import InvalidRequest
from server.events import RequestStats
from server.store import JobRecord, JobStore, SqliteJobStore, open_store

STATS = RequestStats(0.1, 0.5, 2.0, 1.9, 9, 3, 4, 0.4, 2.5, "full", 1000, 2000, 3000)


def record(i: int) -> JobRecord:
    return JobRecord(
        id=f"video_{i:032x}",
        status="queued",
        created_at=time.time(),
        model="m",
        prompt=f"prompt {i}",
        size="64x64",
        seconds="0.75",
        frames=9,
        latent_frames=3,
        fps=12,
        seed=i,
        steps=2,
        cache_policy="full",
    )


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return open_store(f"sqlite:///{tmp_path / 'sub' / 'jobs.sqlite3'}")


def test_life_cycle(store: JobStore) -> None:
    r = record(1)
    store.create(r)
    assert store.get(r.id) == r
    store.mark_started(r.id)
    assert store.get(r.id).status == "in_progress"  # type: ignore[union-attr]
    assert store.finish(r.id, "completed", stats=STATS)
    done = store.get(r.id)
    assert done is not None and done.status == "completed" and done.stats == STATS
    assert done.completed_at is not None
    assert store.delete(r.id) and store.get(r.id) is None
    assert not store.finish(r.id, "failed", ("x", "y")) and not store.delete(r.id)


def test_pages(store: JobStore) -> None:
    records = [record(i) for i in range(5)]
    for r in records:
        store.create(r)
    ids = [r.id for r in records]
    page, more = store.page(2, None, "desc")
    assert [r.id for r in page] == ids[::-1][:2] and more
    page, more = store.page(10, ids[3], "desc")
    assert [r.id for r in page] == ids[:3][::-1] and not more
    page, more = store.page(2, ids[1], "asc")
    assert [r.id for r in page] == ids[2:4] and more
    with pytest.raises(InvalidRequest, match="no video"):
        store.page(2, "video_" + "f" * 32, "asc")


def test_fail_unfinished(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    a, b, c = record(1), record(2), record(3)
    for r in (a, b, c):
        store.create(r)
    store.mark_started(b.id)
    store.finish(c.id, "completed")
    store.close()
    again = SqliteJobStore(tmp_path / "jobs.sqlite3")  # as after a restart
    assert sorted(again.fail_unfinished("server_restarted", "gone")) == [a.id, b.id]
    assert again.get(a.id).error_code == "server_restarted"  # type: ignore[union-attr]
    assert again.get(c.id).status == "completed"  # type: ignore[union-attr]


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported job store URL scheme 'postgresql'"):
        open_store("postgresql://db/jobs")
