"""The SQLite conventions every faultlab store shares: WAL, one writer transaction at a time, a schema version."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import FaultlabError


def connect(path: str | Path, schema: str, *, version: int, fix: str) -> sqlite3.Connection:
    """Open (creating) a database in WAL mode with ``schema`` applied and its ``meta`` schema version checked.

    ``schema`` must create a ``meta(key TEXT PRIMARY KEY, value TEXT)`` table; ``fix`` tells the user
    what to do when the file was written by another schema version.
    """
    conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(version),))
    elif int(str(row[0]).strip('"')) != version:
        conn.close()
        raise FaultlabError(f"{path}: schema version {row[0]}, this faultlab reads version {version}; {fix}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if the block raises: all of a batch or none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
