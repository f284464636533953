"""Open the job store a URL names: SQLite in the data directory, or PostgreSQL for replicas.

What it is: the one place that maps a store URL to a `JobStore`; it imports the PostgreSQL
store only when asked (psycopg is an optional extra), so `store.py` never imports it back.
"""

from __future__ import annotations

from pathlib import Path

from server.storage.store import JobStore, SqliteJobStore


def open_store(url: str) -> JobStore:
    """`sqlite:///relative/or/absolute/path.sqlite3`, or `postgresql://user@host/db` (libpq
    URL; needs the `postgres` extra). Other schemes are refused."""
    if url.startswith("sqlite:///"):
        return SqliteJobStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from server.storage.postgres import PostgresJobStore  # psycopg: optional extra

        return PostgresJobStore(url)
    scheme = url.split(":", 1)[0]
    raise ValueError(
        f"unsupported job store URL scheme {scheme!r} "
        "(supported: sqlite:///PATH, postgresql://USER@HOST/DB)"
    )
