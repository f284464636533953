"""Job metadata that survives restarts: the `JobStore` interface and its SQLite implementation.

What it is: `JobRecord` (one video job as stored), the `JobStore` protocol every backend
implements, `SqlJobStore` (the queries both SQL backends share), `SqliteJobStore` (the
single-machine default; `open.py` picks a backend from a URL, `postgres.py` is the one for
several replicas). What it is
not: the video files (the recorder writes those under the data directory) or live progress
(the recorder keeps that until a record is final).

Invariants: a record's status only moves queued -> in_progress -> completed | failed;
a record belongs to one `owner` (a hash of the API key that made it, never the key), and
`get`, `page` and `delete` given an owner see only that owner's records (None: every record);
`claim_unfinished` runs at start-up, so every record a process that died left queued or running
is resumed or failed by the next (and, with a shared database, never one a live replica runs).
All methods are thread-safe and blocking (call them off the event loop).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import Field, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, get_origin, get_type_hints

from server.engine.events import RequestStats
from server.errors import InvalidRequest, StorageError

Status = Literal["queued", "in_progress", "completed", "failed"]
log = logging.getLogger(__name__)
# SQLite's result codes for a disk that is full, read-only or failing (extended codes too).
DISK_ERRORS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")
# The owner of jobs made while no API keys are configured, and of rows stored before owners.
ANONYMOUS = ""


@dataclass(frozen=True)
class JobRecord:
    id: str
    status: Status
    created_at: float
    model: str
    prompt: str
    size: str
    seconds: str
    frames: int
    latent_frames: int
    fps: int
    seed: int
    steps: int
    cache_policy: str
    completed_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    stats: RequestStats | None = None
    owner: str = ANONYMOUS  # who may see it: `security.owner_of(key)`; never in the API
    remixed_from_video_id: str | None = None  # the video whose image and settings it reused


COLUMNS = [f.name for f in fields(JobRecord)]
SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"


class JobStore(Protocol):
    # Other processes use it too (they may delete a job this one runs); else every change
    # to a job comes through this process.
    shared: bool

    def create(self, record: JobRecord) -> None: ...

    def get(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        """The record if it exists and belongs to `owner` (None: whoever owns it)."""
        ...

    def page(
        self,
        limit: int,
        after: str | None,
        order: Literal["asc", "desc"],
        *,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], bool]:
        """A page of `owner`'s records (None: all) by creation order, and whether more follow."""
        ...

    def mark_started(self, job_id: str) -> None: ...

    def finish(
        self,
        job_id: str,
        status: Literal["completed", "failed"],
        error: tuple[str, str] | None = None,
        stats: RequestStats | None = None,
        seconds: str | None = None,
    ) -> bool:
        """Record the outcome; False if the record is gone (deleted meanwhile). With `seconds`
        (a video whose length was not preset), its length becomes what `stats` counted."""
        ...

    def delete(self, job_id: str, *, owner: str | None = None) -> bool: ...

    def claim_unfinished(self) -> list[JobRecord]:
        """Queued or running records no live process runs, now this store's to resume (or to
        fail); in the order they were created. Called at start-up and then periodically:
        a record is claimed once (until it is released)."""
        ...

    def release(self, job_ids: Sequence[str]) -> None:
        """Give claimed records back, unfinished, for the next `claim_unfinished` (of any
        process sharing the store) to take."""
        ...

    def known(self, job_ids: Sequence[str]) -> set[str]:
        """Those of `job_ids` that still have a record (a job deleted elsewhere has none)."""
        ...

    def expire(self, finished_before: float) -> list[str]:
        """Delete the records of jobs that finished (completed or failed) before this time
        (seconds since the epoch); returns their ids."""
        ...

    def close(self) -> None: ...


# Column type of each JobRecord field's Python type, per SQL backend (the record is the one
# definition of the columns: the schemas below and the queries are derived from it).
SQL_TYPES: dict[str, dict[type, str]] = {
    "sqlite": {str: "TEXT", int: "INTEGER", float: "REAL", RequestStats: "TEXT"},
    "postgres": {str: "TEXT", int: "BIGINT", float: "DOUBLE PRECISION", RequestStats: "TEXT"},
}


def column_sql(f: Field[Any], dialect: str) -> str:
    """One field's column, as SQL (`id` unique, None-able = NULL, a str or int default kept)."""
    hint = get_type_hints(JobRecord)[f.name]
    kinds = [k for k in get_args(hint) or (hint,) if k is not type(None)]
    kind = str if get_origin(hint) is Literal else kinds[0]
    sql = f"{f.name} {SQL_TYPES[dialect][kind]}"
    sql += "" if type(None) in get_args(hint) else " NOT NULL"
    if isinstance(f.default, str):
        sql += " DEFAULT '" + f.default.replace("'", "''") + "'"
    elif isinstance(f.default, int):
        sql += f" DEFAULT {f.default}"
    return sql + (" UNIQUE" if f.name == "id" else "")


def record_columns(dialect: str) -> str:
    """The `jobs` columns of every JobRecord field, as SQL."""
    return ",\n".join("    " + column_sql(f, dialect) for f in fields(JobRecord))


OWNER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq)"  # a key's pages


def schema_upgrades(existing: Collection[str], dialect: str) -> list[str]:
    """What brings a `jobs` table made by an older version up to date: `ALTER TABLE` for each
    field it lacks (such a field has a default or is None-able; its old rows then hold that),
    then the index of each owner's pages (which needs `owner`). Idempotent."""
    add = [f for f in fields(JobRecord) if f.name not in existing]
    return [f"ALTER TABLE jobs ADD COLUMN {column_sql(f, dialect)}" for f in add] + [OWNER_INDEX]


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
{record_columns("sqlite")}
)
"""
# The retention sweep's query (`expire`); tables made before it get it when opened.
FINISHED_INDEX = "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (completed_at)"


class Cursor(Protocol):
    """What both drivers' cursors offer (sqlite3 and psycopg)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlJobStore:
    """The queries every SQL backend shares, written with `?` marks; `_exec` runs one.

    A backend supplies the connection (`_exec`), the insert (it may add private columns),
    `claim_unfinished` (which records count as its own) and `close`.
    """

    def _exec(self, sql: str, args: tuple = ()) -> Cursor:
        raise NotImplementedError

    def _insert(self, record: JobRecord, extra: dict[str, object] | None = None) -> None:
        values: dict[str, object] = asdict(record) | {"stats": _dump(record.stats)}
        values |= extra or {}
        marks = ", ".join("?" * len(values))
        self._exec(f"INSERT INTO jobs ({', '.join(values)}) VALUES ({marks})", (*values.values(),))

    def get(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        where, args = _owned("id = ?", (job_id,), owner)
        row = self._exec(f"{SELECT} WHERE {where}", args).fetchone()
        return None if row is None else row_record(row)

    def page(
        self,
        limit: int,
        after: str | None,
        order: Literal["asc", "desc"],
        *,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], bool]:
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
        where, args = _owned("1 = 1", (), owner)
        if after is not None:  # another owner's id is as unknown as a made-up one
            seq_of, seq_args = _owned("id = ?", (after,), owner)
            row = self._exec(f"SELECT seq FROM jobs WHERE {seq_of}", seq_args).fetchone()
            if row is None:
                raise InvalidRequest(f"after: no video {after!r}", param="after")
            where, args = f"{where} AND seq {op} ?", (*args, row[0])
        sql = f"{SELECT} WHERE {where} ORDER BY seq {direction} LIMIT ?"
        rows = self._exec(sql, (*args, limit + 1)).fetchall()
        return [row_record(r) for r in rows[:limit]], len(rows) > limit

    def mark_started(self, job_id: str) -> None:
        sql = "UPDATE jobs SET status = 'in_progress' WHERE id = ? AND status = 'queued'"
        self._exec(sql, (job_id,))

    def finish(
        self,
        job_id: str,
        status: Literal["completed", "failed"],
        error: tuple[str, str] | None = None,
        stats: RequestStats | None = None,
        seconds: str | None = None,
    ) -> bool:
        code, message = error or (None, None)
        cur = self._exec(
            "UPDATE jobs SET status = ?, completed_at = ?, error_code = ?, error_message = ?, "
            "stats = ? WHERE id = ?",
            (status, time.time(), code, message, _dump(stats), job_id),
        )
        if seconds is not None and stats is not None:
            self._exec(
                "UPDATE jobs SET seconds = ?, frames = ?, latent_frames = ? WHERE id = ?",
                (seconds, stats.frames, stats.latent_frames, job_id),
            )
        return cur.rowcount > 0

    def delete(self, job_id: str, *, owner: str | None = None) -> bool:
        where, args = _owned("id = ?", (job_id,), owner)
        return self._exec(f"DELETE FROM jobs WHERE {where}", args).rowcount > 0

    def known(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        marks = ", ".join("?" * len(job_ids))
        rows = self._exec(f"SELECT id FROM jobs WHERE id IN ({marks})", tuple(job_ids))
        return {r[0] for r in rows.fetchall()}

    def expire(self, finished_before: float) -> list[str]:
        finished = "status IN ('completed', 'failed') AND completed_at < ?"
        rows = self._exec(f"SELECT id FROM jobs WHERE {finished}", (finished_before,)).fetchall()
        return [r[0] for r in rows if self.delete(r[0])]


class SqliteJobStore(SqlJobStore):
    """One SQLite file in WAL mode; one connection behind a lock. One process at a time."""

    shared = False

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        existing = [row[1] for row in self._db.execute("PRAGMA table_info(jobs)")]
        for statement in schema_upgrades(existing, "sqlite"):
            self._db.execute(statement)
        self._db.execute(FINISHED_INDEX)
        self._lock = threading.Lock()
        self._claimed = False  # one process owns the file: what it left is claimed once
        self._released: list[str] = []  # claimed, then given back: claimed again

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, args)
            except sqlite3.OperationalError as e:  # a full or read-only disk is no server bug
                if not (getattr(e, "sqlite_errorname", None) or "").startswith(DISK_ERRORS):
                    raise
                log.error("job store: %s", e)
                raise StorageError(f"the server cannot store jobs now: {e}") from e

    def create(self, record: JobRecord) -> None:
        self._insert(record)

    def claim_unfinished(self) -> list[JobRecord]:
        unfinished = f"{SELECT} WHERE status IN ('queued', 'in_progress')"
        if not self._claimed:
            self._claimed = True
            return [row_record(r) for r in self._exec(f"{unfinished} ORDER BY seq").fetchall()]
        ids, self._released = self._released, []
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self._exec(f"{unfinished} AND id IN ({marks}) ORDER BY seq", tuple(ids))
        return [row_record(r) for r in rows.fetchall()]

    def release(self, job_ids: Sequence[str]) -> None:
        self._released.extend(job_ids)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _owned(where: str, args: tuple, owner: str | None) -> tuple[str, tuple]:
    """`where` narrowed to `owner`'s records (unless None: every owner)."""
    return (where, args) if owner is None else (f"{where} AND owner = ?", (*args, owner))


def _dump(stats: RequestStats | None) -> str | None:
    return None if stats is None else json.dumps(asdict(stats))


def row_record(row: Sequence[Any]) -> JobRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    stats = values.pop("stats")
    return JobRecord(
        **values, stats=None if stats is None else RequestStats.from_stored(json.loads(stats))
    )
