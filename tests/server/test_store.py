"""The `JobStore` contract, run against every backend (SQLite, PostgreSQL), and `open_store` URLs.

PostgreSQL: `PACKCACHE_TEST_POSTGRES_URL` names a database the tests may create schemas in
(`.ci/run` starts one); each test gets a fresh schema. Without it the PostgreSQL cases skip,
except under `PACKCACHE_CI=1`, where they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from server.engine.events import RequestStats
from server.errors import InvalidRequest, StorageError
from server.storage.open import open_store
from server.storage.store import ANONYMOUS, JobRecord, JobStore

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


def postgres_url() -> str:
    """The test database's URL, or a skip (a failure under `PACKCACHE_CI=1`)."""
    url = os.environ.get("PACKCACHE_TEST_POSTGRES_URL")
    if url:
        return url
    reason = "PACKCACHE_TEST_POSTGRES_URL is not set (bash .ci/run starts a PostgreSQL)"
    if os.environ.get("PACKCACHE_CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def postgres_schema(base: str) -> Iterator[str]:
    """A URL whose connections see only a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    try:
        joiner = "&" if "?" in base else "?"
        yield f"{base}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of each backend, as the URL `store_url` settings would carry."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sub' / 'jobs.sqlite3'}"
    else:
        yield from postgres_schema(postgres_url())


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


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


def test_claim_unfinished(store_url: str) -> None:
    store = open_store(store_url)
    a, b, c = record(1), record(2), record(3)
    for r in (a, b, c):
        store.create(r)
    store.mark_started(b.id)
    store.finish(c.id, "completed")
    store.close()
    again = open_store(store_url)  # as after a restart
    claimed = again.claim_unfinished()
    assert [r.id for r in claimed] == [a.id, b.id]  # in the order they were created
    assert [r.status for r in claimed] == ["queued", "in_progress"]
    assert again.get(c.id).status == "completed"  # type: ignore[union-attr]
    again.close()


def test_owners_see_only_their_records(store: JobStore) -> None:
    a1, b1, a2 = (replace(record(i), owner=o) for i, o in ((1, "a"), (2, "b"), (3, "a")))
    for r in (a1, b1, a2):
        store.create(r)
    assert store.get(a1.id, owner="a") == a1 and store.get(a1.id, owner="b") is None
    assert store.get(b1.id) == b1  # no owner: an admin's view
    page, more = store.page(10, None, "asc", owner="a")
    assert [r.id for r in page] == [a1.id, a2.id] and not more
    page, _ = store.page(10, a1.id, "asc", owner="a")
    assert [r.id for r in page] == [a2.id]  # b's record in between is skipped, not counted
    assert [r.id for r in store.page(10, None, "asc")[0]] == [a1.id, b1.id, a2.id]
    with pytest.raises(InvalidRequest, match="no video"):  # as if b's id did not exist
        store.page(10, b1.id, "asc", owner="a")
    assert not store.delete(b1.id, owner="a") and store.get(b1.id) == b1
    assert store.delete(b1.id, owner="b") and store.get(b1.id) is None
    assert store.delete(a2.id) and store.page(10, None, "asc", owner="a")[0] == [a1]


# `jobs` as versions before owners made it, in each dialect.
OLD_COLUMNS = (
    "id TEXT NOT NULL UNIQUE, status TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
    "model TEXT NOT NULL, prompt TEXT NOT NULL, size TEXT NOT NULL, seconds TEXT NOT NULL, "
    "frames BIGINT NOT NULL, latent_frames BIGINT NOT NULL, fps BIGINT NOT NULL, "
    "seed BIGINT NOT NULL, steps BIGINT NOT NULL, cache_policy TEXT NOT NULL, "
    "completed_at DOUBLE PRECISION, error_code TEXT, error_message TEXT, stats TEXT"
)
OLD_ROW = (
    "INSERT INTO jobs (id, status, created_at, model, prompt, size, seconds, frames, "
    "latent_frames, fps, seed, steps, cache_policy{}) "
    "VALUES ('video_{}', 'completed', 1.5, 'm', 'old', '64x64', '0.75', 9, 3, 12, 1, 2, 'full'{})"
)


def make_old_table(store_url: str, job_id: str) -> None:
    hex_id = job_id.removeprefix("video_")
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as db:
            db.execute(f"CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, {OLD_COLUMNS})")
            db.execute(OLD_ROW.format("", hex_id, ""))
        return
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE jobs (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            f"{OLD_COLUMNS}, lease BIGINT NOT NULL)"
        )
        db.execute(OLD_ROW.format(", lease", hex_id, ", 1"))


def test_a_table_without_owners_opens(store_url: str) -> None:
    """Old rows belong to the anonymous owner (so only an admin key, or no keys, reaches them)."""
    old_id = record(1).id
    make_old_table(store_url, old_id)
    for _ in range(2):  # the column is added once; opening again changes nothing
        store = open_store(store_url)
        old = store.get(old_id)
        assert old is not None and old.owner == ANONYMOUS and old.prompt == "old"
        assert store.get(old_id, owner="a") is None
        assert [r.id for r in store.page(10, None, "asc", owner=ANONYMOUS)[0]] == [old_id]
        store.close()
    store = open_store(store_url)
    new = replace(record(2), owner="a")
    store.create(new)
    assert store.get(new.id, owner="a") == new
    assert store.page(10, None, "asc", owner="a")[0] == [new]
    store.close()


def set_stats_json(store_url: str, job_id: str, text: str) -> None:
    """Overwrite a record's stats as another version of the server might have written them."""
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE jobs SET stats = ? WHERE id = ?", (text, job_id))
        return
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as db:
        db.execute("UPDATE jobs SET stats = %s WHERE id = %s", (text, job_id))


def test_stats_written_by_a_newer_or_older_replica_read_back(store_url: str) -> None:
    """Replicas of different versions share one store: a stats key this version does not know
    is left out, a key it added since takes its default (both failed to build the record)."""
    store = open_store(store_url)
    r = record(1)
    store.create(r)
    store.finish(r.id, "completed", stats=STATS)
    stored = json.loads(cast(str, store_stats_json(store_url, r.id)))
    set_stats_json(store_url, r.id, json.dumps(stored | {"added_in_a_later_version": 7}))
    assert store.get(r.id).stats == STATS  # type: ignore[union-attr]
    older = {k: v for k, v in stored.items() if k != "decoder_bytes"}
    set_stats_json(store_url, r.id, json.dumps(older | {"decoder_bytes": 5}))
    assert store.get(r.id).stats == replace(STATS, decoder_bytes=5)  # type: ignore[union-attr]
    set_stats_json(store_url, r.id, json.dumps(older))
    assert store.get(r.id).stats == replace(STATS, decoder_bytes=0)  # type: ignore[union-attr]
    store.close()


def store_stats_json(store_url: str, job_id: str) -> str | None:
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            return db.execute("SELECT stats FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as db:
        row = db.execute("SELECT stats FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return None if row is None else row[0]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_replicas_share_records_and_keep_each_others_jobs(store_url: str) -> None:
    """A replica claims the jobs of a dead one, once, never those of a live one."""
    live, dead = open_store(store_url), open_store(store_url)
    mine, orphan = record(1), record(2)
    live.create(mine)
    dead.create(orphan)
    dead.close()  # its session ends, as when its process dies
    starting = open_store(store_url)
    assert starting.get(mine.id) == mine  # any replica reads any record
    assert [r.id for r in starting.claim_unfinished()] == [orphan.id]
    assert starting.claim_unfinished() == []  # claimed: its lease is live now
    assert starting.get(mine.id).status == "queued"  # type: ignore[union-attr]
    assert live.finish(mine.id, "completed", stats=STATS)
    assert starting.get(mine.id).stats == STATS  # type: ignore[union-attr]
    starting.close()
    live.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_broken_connection_is_opened_again_with_the_same_lease(store_url: str) -> None:
    import psycopg

    store = open_store(store_url)
    mine = record(1)
    store.create(mine)
    pid = store._db.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(store_url, autocommit=True) as admin:  # as a database restart would
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.get(mine.id) == mine  # connected again
    other = open_store(store_url)
    assert other.claim_unfinished() == []  # still ours: lease retaken
    other.close()
    store.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_an_unreachable_database_is_a_storage_error(store_url: str) -> None:
    """A 503 the client may retry, not a 500, while the database cannot be reached."""
    import psycopg

    store = open_store(store_url)
    pid = store._db.info.backend_pid  # type: ignore[attr-defined]
    store._url = "postgresql://nobody@127.0.0.1:1/none"  # type: ignore[attr-defined]
    with psycopg.connect(store_url, autocommit=True) as admin:  # the database goes away
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StorageError, match="cannot store jobs"):
        store.get(record(1).id)
    store.close()


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported job store URL scheme 'mysql'"):
        open_store("mysql://db/jobs")


def test_expire_deletes_only_what_finished_before_the_time(store: JobStore) -> None:
    done, failed, recent, running = record(1), record(2), record(3), record(4)
    for r in (done, failed, recent, running):
        store.create(r)
    store.finish(done.id, "completed", stats=STATS)
    store.finish(failed.id, "failed", ("cancelled", "cancelled"))
    store.mark_started(running.id)
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    store.finish(recent.id, "completed")
    assert sorted(store.expire(cutoff)) == [done.id, failed.id]
    assert store.get(done.id) is None and store.get(failed.id) is None
    assert store.get(recent.id) is not None and store.get(running.id) is not None
    assert store.expire(cutoff) == []


def test_a_store_made_before_retention_opens_and_expires(store_url: str) -> None:
    """A `jobs` table without the sweep's index (an older version's) gets it when opened; the
    table itself is unchanged (`expires_at` derives from `completed_at` and the setting)."""
    first = open_store(store_url)
    old = record(1)
    first.create(old)
    first.finish(old.id, "completed")
    first._exec("DROP INDEX jobs_finished")  # type: ignore[attr-defined]
    first.close()
    again = open_store(store_url)
    assert again.get(old.id).status == "completed"  # type: ignore[union-attr]
    assert again.expire(time.time() + 1) == [old.id]
    again._exec("DROP INDEX jobs_finished")  # type: ignore[attr-defined]  # made again: it drops
    again.close()
