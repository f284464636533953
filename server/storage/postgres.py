"""Job metadata in PostgreSQL, shared by every replica of a scaled-out server.

What it is: `PostgresJobStore`, the `JobStore` for several replicas behind one load balancer,
so any replica answers `GET /v1/videos/{id}` for a job that another one runs. It shares its
queries with SQLite (`store.SqlJobStore`); what differs is the schema, the connection (opened
again once if it breaks) and which unfinished records a start-up may fail. What it is not: the
video files (replicas share a volume for those, see deploy/README.md) or live progress (only
the replica running a job knows its steps; the others report its stored status).

Invariant: a store holds a session-level advisory lock on a random 63-bit *lease* for as long
as its connection lives, and stamps every record it creates with that lease.
`claim_unfinished` takes over (re-stamps with its own lease) only unfinished records whose lease
no live session holds: a replica never takes the jobs of one that runs, and the jobs of a
replica that died (its connection gone) go to the next replica that claims them, once.
Session locks need a direct connection or session pooling (not PgBouncer's transaction pooling).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from server.errors import StorageError
from server.storage.store import (
    COLUMNS,
    FINISHED_INDEX,
    JobRecord,
    SqlJobStore,
    record_columns,
    row_record,
    schema_upgrades,
)

log = logging.getLogger(__name__)
# Connection options the URL may override:
DEFAULT_OPTIONS = {"connect_timeout": 10, "application_name": "packcache"}
SCHEMA_LOCK = 0x7061636B63616368  # "packcach": serializes CREATE TABLE across replicas
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
{record_columns("postgres")},
    lease BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (lease)
    WHERE status IN ('queued', 'in_progress');
{FINISHED_INDEX};
"""
# The columns of `jobs` as it is, to add those a table made by an older version lacks.
COLUMNS_NOW = """
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'jobs'
"""
# Leases held by live sessions of this database: a bigint advisory key is (classid, objid).
LIVE_LEASES = """
SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class PostgresJobStore(SqlJobStore):
    """One connection (autocommit) behind a lock; `url` is a libpq URL or key=value string."""

    shared = True

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._lease = 0  # taken by _connect
        self._db = self._connect()

    def _connect(self) -> psycopg.Connection:
        given = conninfo_to_dict(self._url)
        options = {k: v for k, v in DEFAULT_OPTIONS.items() if k not in given}
        db = psycopg.connect(self._url, autocommit=True, **options)  # type: ignore[arg-type]
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            db.execute(SCHEMA)
            existing = [row[0] for row in db.execute(COLUMNS_NOW).fetchall()]
            for statement in schema_upgrades(existing, "postgres"):
                db.execute(statement)
        if self._lease:  # reconnecting: the same lease, so our records stay ours
            if not _try_lock(db, self._lease):
                db.close()
                raise RuntimeError(f"job store lease {self._lease} was taken by another session")
            return db
        while not self._lease:
            lease = secrets.randbits(63)
            if lease and _try_lock(db, lease):
                self._lease = lease
        return db

    def _exec(self, sql: str, args: tuple = ()) -> psycopg.Cursor:
        query = sql.replace("?", "%s")  # the shared queries use sqlite's marks
        with self._lock:
            try:
                return self._run(query, args)
            except psycopg.OperationalError as e:  # down, unreachable or full: no server bug
                log.error("job store: %s", e)
                raise StorageError(f"the server cannot store jobs now: {e}") from e

    def _run(self, query: str, args: tuple) -> psycopg.Cursor:
        """One statement; once more on a new connection if this one broke (under the lock)."""
        try:
            return self._db.execute(query, args or None)
        except psycopg.OperationalError:
            if not self._db.broken:
                raise
        log.warning("the job store connection broke; connecting again")
        self._db = self._connect()
        return self._db.execute(query, args or None)

    def create(self, record: JobRecord) -> None:
        self._insert(record, {"lease": self._lease})

    def claim_unfinished(self) -> list[JobRecord]:
        rows = self._exec(
            "UPDATE jobs SET lease = ? WHERE status IN ('queued', 'in_progress') "
            f"AND lease NOT IN ({LIVE_LEASES}) RETURNING seq, {', '.join(COLUMNS)}",
            (self._lease,),
        ).fetchall()
        return [row_record(r[1:]) for r in sorted(rows)]

    def release(self, job_ids: Sequence[str]) -> None:
        if job_ids:  # lease 0 is never held (`_connect` draws non-zero ones): claimable
            marks = ", ".join("?" * len(job_ids))
            self._exec(f"UPDATE jobs SET lease = 0 WHERE id IN ({marks})", tuple(job_ids))

    def close(self) -> None:
        with self._lock:
            self._db.close()  # ends the session, so its lease is released


def _try_lock(db: psycopg.Connection, key: int) -> bool:
    row = db.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])
