"""The SQLite conventions every faultlab store shares: WAL, one writer transaction at a time, a schema version."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import FaultlabError

#: a store path with one of these suffixes names the database itself, any other its directory (``runs/lr_0.5`` too)
DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def connect(path: str | Path, schema: str, *, version: int, fix: str, tables: tuple[str, ...] = ()) -> sqlite3.Connection:
    """Open (creating) a database in WAL mode with ``schema`` applied and its ``meta`` schema version checked.

    ``schema`` must create a ``meta(key TEXT PRIMARY KEY, value TEXT)`` table; ``fix`` tells the user
    what to do when the file was written by another schema version. An existing file is first read
    without writing: one that is not an SQLite database, or lacks the store's ``tables``, is refused
    untouched (a mistyped path must never gain our tables).
    """
    p = Path(path)
    if p.is_file() and p.stat().st_size > 0:
        check_existing(p, tables, fix)
    try:
        conn = sqlite3.connect(str(p), timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        raise FaultlabError(f"{p}: cannot be used as a faultlab database ({e}); {fix}") from None
    if row is None:
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(version),))
    elif int(str(row[0]).strip('"')) != version:
        conn.close()
        raise FaultlabError(f"{p}: schema version {row[0]}, this faultlab reads version {version}; {fix}")
    return conn


def check_existing(p: Path, tables: tuple[str, ...], fix: str, *, what: str = "faultlab database", empty_ok: bool = True) -> None:
    """Refuse, without writing to it, an existing file that is not one of our databases (read-only open).

    ``tables`` (besides ``meta``) must all be there; a database with no tables at all passes when
    ``empty_ok`` (a store about to be created), else it is refused too.
    """
    try:
        ro = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            have = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            ro.close()
    except sqlite3.DatabaseError as e:
        raise FaultlabError(f"{p}: not a readable SQLite database ({e}); {fix}") from None
    missing = [t for t in ("meta", *tables) if t not in have]
    if missing and (have or not empty_ok):
        raise FaultlabError(f"{p}: not a {what} (another kind of SQLite database, missing table(s): {', '.join(missing)}); left untouched; {fix}")


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
