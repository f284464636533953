"""Job metadata that survives restarts: the `JobStore` interface and its SQLite implementation.

What it is: `JobRecord` (one video job as stored), the `JobStore` protocol every backend
implements, `SqlJobStore` (the queries both SQL backends share), `SqliteJobStore` (the
single-machine default; `open.py` picks a backend from a URL, `postgres.py` is the one for
several replicas). What it is
not: the video files (the recorder writes those under the data directory) or live progress
(the recorder keeps that until a record is final).

Invariants: a record's status only moves queued -> in_progress -> completed | failed;
`fail_unfinished` runs at start-up, so no record claims to be running in a process that died
(and, with a shared database, never touches a record a live replica runs).
All methods are thread-safe and blocking (call them off the event loop).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, get_origin, get_type_hints

from server.engine.events import RequestStats
from server.errors import InvalidRequest, StorageError

Status = Literal["queued", "in_progress", "completed", "failed"]
log = logging.getLogger(__name__)
# SQLite's result codes for a disk that is full, read-only or failing (extended codes too).
DISK_ERRORS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")


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


COLUMNS = [f.name for f in fields(JobRecord)]
SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"


class JobStore(Protocol):
    def create(self, record: JobRecord) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def page(
        self, limit: int, after: str | None, order: Literal["asc", "desc"]
    ) -> tuple[list[JobRecord], bool]:
        """A page of records by creation order, and whether more follow."""
        ...

    def mark_started(self, job_id: str) -> None: ...

    def finish(
        self,
        job_id: str,
        status: Literal["completed", "failed"],
        error: tuple[str, str] | None = None,
        stats: RequestStats | None = None,
    ) -> bool:
        """Record the outcome; False if the record is gone (deleted meanwhile)."""
        ...

    def delete(self, job_id: str) -> bool: ...

    def fail_unfinished(self, code: str, message: str) -> list[str]:
        """Mark every queued or running record failed; returns their ids."""
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


def record_columns(dialect: str) -> str:
    """The `jobs` columns of every JobRecord field, as SQL (`id` unique, None-able = NULL)."""
    hints = get_type_hints(JobRecord)
    lines = []
    for f in fields(JobRecord):
        kinds = [k for k in get_args(hints[f.name]) or (hints[f.name],) if k is not type(None)]
        kind = str if get_origin(hints[f.name]) is Literal else kinds[0]
        nullable = type(None) in get_args(hints[f.name])
        sql = f"{f.name} {SQL_TYPES[dialect][kind]}" + ("" if nullable else " NOT NULL")
        lines.append("    " + sql + (" UNIQUE" if f.name == "id" else ""))
    return ",\n".join(lines)


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
    `fail_unfinished` (which records count as its own) and `close`.
    """

    def _exec(self, sql: str, args: tuple = ()) -> Cursor:
        raise NotImplementedError

    def _insert(self, record: JobRecord, extra: dict[str, object] | None = None) -> None:
        values: dict[str, object] = asdict(record) | {"stats": _dump(record.stats)}
        values |= extra or {}
        marks = ", ".join("?" * len(values))
        self._exec(f"INSERT INTO jobs ({', '.join(values)}) VALUES ({marks})", (*values.values(),))

    def get(self, job_id: str) -> JobRecord | None:
        row = self._exec(f"{SELECT} WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def page(
        self, limit: int, after: str | None, order: Literal["asc", "desc"]
    ) -> tuple[list[JobRecord], bool]:
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
        where: str = ""
        args: tuple[int, ...] = ()
        if after is not None:
            row = self._exec("SELECT seq FROM jobs WHERE id = ?", (after,)).fetchone()
            if row is None:
                raise InvalidRequest(f"after: no video {after!r}", param="after")
            where, args = f"WHERE seq {op} ?", (row[0],)
        sql = f"{SELECT} {where} ORDER BY seq {direction} LIMIT ?"
        rows = self._exec(sql, (*args, limit + 1)).fetchall()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    def mark_started(self, job_id: str) -> None:
        sql = "UPDATE jobs SET status = 'in_progress' WHERE id = ? AND status = 'queued'"
        self._exec(sql, (job_id,))

    def finish(
        self,
        job_id: str,
        status: Literal["completed", "failed"],
        error: tuple[str, str] | None = None,
        stats: RequestStats | None = None,
    ) -> bool:
        code, message = error or (None, None)
        cur = self._exec(
            "UPDATE jobs SET status = ?, completed_at = ?, error_code = ?, error_message = ?, "
            "stats = ? WHERE id = ?",
            (status, time.time(), code, message, _dump(stats), job_id),
        )
        return cur.rowcount > 0

    def delete(self, job_id: str) -> bool:
        return self._exec("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    def expire(self, finished_before: float) -> list[str]:
        finished = "status IN ('completed', 'failed') AND completed_at < ?"
        rows = self._exec(f"SELECT id FROM jobs WHERE {finished}", (finished_before,)).fetchall()
        return [r[0] for r in rows if self.delete(r[0])]


class SqliteJobStore(SqlJobStore):
    """One SQLite file in WAL mode; one connection behind a lock. One process at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.execute(FINISHED_INDEX)
        self._lock = threading.Lock()

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

    def fail_unfinished(self, code: str, message: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status IN ('queued', 'in_progress')"
            ).fetchall()
            self._db.execute(
                "UPDATE jobs SET status = 'failed', completed_at = ?, error_code = ?, "
                "error_message = ? WHERE status IN ('queued', 'in_progress')",
                (time.time(), code, message),
            )
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _dump(stats: RequestStats | None) -> str | None:
    return None if stats is None else json.dumps(asdict(stats))


def _record(row: Sequence[Any]) -> JobRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    stats = values.pop("stats")
    return JobRecord(**values, stats=None if stats is None else RequestStats(**json.loads(stats)))
