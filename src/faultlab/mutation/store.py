"""SQLite store of training runs, keyed by a hash of the function's source and the configuration.

The original configuration of a function has one key whatever operator is being tested,
so its runs are reused across operators and sweeps. Every run is written in its own
transaction as it finishes (WAL mode); ``(config, run)`` is the primary key, so a sweep
killed with ``kill -9`` resumes without losing or counting a run twice.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .._sqlite import connect
from ..errors import FaultlabError

SCHEMA_VERSION = 1
DB_NAME = "mutation.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    config_hash TEXT PRIMARY KEY, model TEXT NOT NULL, source_hash TEXT NOT NULL,
    operator TEXT, value_json TEXT, fixed_json TEXT NOT NULL, base_seed INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS mutants (
    config_hash TEXT PRIMARY KEY, original_hash TEXT NOT NULL, model TEXT NOT NULL, source_hash TEXT NOT NULL,
    operator TEXT NOT NULL, value_json TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    config_hash TEXT NOT NULL, run INTEGER NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL,
    metrics_json TEXT, outcomes BLOB, error TEXT, seconds REAL, finished REAL NOT NULL,
    PRIMARY KEY (config_hash, run));
"""


def value_json(value: Any) -> str:
    """Canonical JSON of an operator value (so 0.5 and 0.50 share a key)."""
    return json.dumps(value, sort_keys=True)


def config_hash(*, source_hash: str, model: str, fixed: dict[str, Any], base_seed: int,
                operator: str | None, value: Any) -> str:
    """Key of a configuration: the function source, fixed arguments, seeds, and the mutation (None: original)."""
    blob = json.dumps({"source": source_hash, "model": model, "fixed": fixed, "seed": base_seed,
                       "operator": operator, "value": value if operator is not None else None},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RunRecord:
    """One stored training run."""

    config_hash: str
    run: int
    seed: int
    status: str  # ok | failed
    metrics: dict[str, float]
    outcomes: bytes | None
    error: str | None


@dataclass(frozen=True)
class MutantRecord:
    """One (operator, value) configuration that a sweep asked for, with its original's key."""

    config_hash: str
    original_hash: str
    model: str
    source_hash: str
    operator: str
    value: Any
    created: float


class MutationStore:
    """The ``mutation.sqlite`` file of a logs directory."""

    def __init__(self, *, path: str | Path) -> None:
        p = Path(path)
        if p.is_dir() or p.suffix == "":
            p.mkdir(parents=True, exist_ok=True)
            p = p / DB_NAME
        self.path = p
        self._conn = connect(p, _SCHEMA, version=SCHEMA_VERSION, fix="use a new --logs-dir")

    @classmethod
    def open_existing(cls, logs_dir: str | Path) -> "MutationStore":
        """The store in ``logs_dir``, which must already hold one."""
        p = Path(logs_dir)
        db = p / DB_NAME if p.is_dir() else p
        if not db.exists():
            raise FaultlabError(f"{logs_dir}: no {DB_NAME} here; run 'faultlab mutate run ... --logs-dir {logs_dir}' first")
        return cls(path=db)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "MutationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- writing
    def add_config(self, *, config_hash: str, model: str, source_hash: str, operator: str | None, value: Any,
                   fixed: dict[str, Any], base_seed: int) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO configs VALUES (?,?,?,?,?,?,?,?)",
            (config_hash, model, source_hash, operator, value_json(value) if operator else None,
             json.dumps(fixed, sort_keys=True, default=repr), base_seed, time.time()),
        )

    def add_mutant(self, *, config_hash: str, original_hash: str, model: str, source_hash: str,
                   operator: str, value: Any) -> None:
        self._conn.execute(
            "INSERT INTO mutants VALUES (?,?,?,?,?,?,?) ON CONFLICT(config_hash) DO UPDATE SET created=excluded.created",
            (config_hash, original_hash, model, source_hash, operator, value_json(value), time.time()),
        )

    def add_runs(self, records: Iterable[RunRecord], seconds: dict[tuple[str, int], float] | None = None) -> int:
        """Store finished runs in one transaction; a run already stored is kept (never counted twice)."""
        rows = [
            (r.config_hash, r.run, r.seed, r.status,
             json.dumps({k: (v if math.isfinite(v) else None) for k, v in r.metrics.items()}), r.outcomes, r.error,
             (seconds or {}).get((r.config_hash, r.run)), time.time())
            for r in records
        ]
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            cur = self._conn.executemany("INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return cur.rowcount

    # ---------------------------------------------------------------- reading
    def done_runs(self, config_hash: str) -> set[int]:
        return {r for (r,) in self._conn.execute("SELECT run FROM runs WHERE config_hash=?", (config_hash,))}

    def runs(self, config_hash: str) -> list[RunRecord]:
        out = []
        for ch, run, seed, status, mj, outcomes, err in self._conn.execute(
            "SELECT config_hash, run, seed, status, metrics_json, outcomes, error FROM runs WHERE config_hash=? ORDER BY run",
            (config_hash,),
        ):
            metrics = {k: (float("nan") if v is None else float(v)) for k, v in json.loads(mj or "{}").items()}
            out.append(RunRecord(ch, run, seed, status, metrics, outcomes, err))
        return out

    def mutants(self, model: str | None = None) -> list[MutantRecord]:
        """Mutants of the latest source version of each model (of ``model`` only, when given)."""
        rows = self._conn.execute(
            "SELECT config_hash, original_hash, model, source_hash, operator, value_json, created FROM mutants ORDER BY created"
        ).fetchall()
        latest: dict[str, tuple[float, str]] = {}
        for r in rows:
            if r[6] >= latest.get(r[2], (-1.0, ""))[0]:
                latest[r[2]] = (r[6], r[3])
        out = [MutantRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows
               if latest[r[2]][1] == r[3] and (model is None or r[2] == model)]
        order: dict[tuple[str, str], int] = {}
        for m in out:
            order.setdefault((m.model, m.operator), len(order))
        return sorted(out, key=lambda m: (order[(m.model, m.operator)], _sort_key(m.value)))

    def models(self) -> list[str]:
        return [m for (m,) in self._conn.execute("SELECT DISTINCT model FROM mutants ORDER BY model")]

    def count_runs(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, bool) or v is None:
        return (0, str(v))
    if isinstance(v, (int, float)):
        return (1, float(v))
    return (2, str(v))


__all__ = ["MutationStore", "RunRecord", "MutantRecord", "config_hash", "value_json", "SCHEMA_VERSION", "DB_NAME"]
