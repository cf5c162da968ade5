"""SQLite store of training runs, keyed by a hash of the function's source and the configuration.

The original configuration of a function has one key whatever operator is being tested,
so its runs are reused across operators and sweeps. Every run is written in its own
transaction as it finishes (WAL mode); ``(config, run)`` is the primary key, so a sweep
killed with ``kill -9`` resumes without losing or counting a run twice. A failed run is retried
by the next sweep and its row replaced; a successful run is never redone.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .._sqlite import DB_SUFFIXES, check_existing, connect
from ..errors import FaultlabError

SCHEMA_VERSION = 1
DB_NAME = "mutation.sqlite"

_TABLES = ("meta", "configs", "mutants", "runs")
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
    """Key of a configuration: the function source, fixed arguments, seeds, and the mutation (None: original).

    A data operator's key also holds the revision of its definition, so runs of an older faultlab's
    definition are trained again rather than reused.
    """
    from .operators import DATA_OPERATOR_REVISIONS

    key = {"source": source_hash, "model": model, "fixed": fixed, "seed": base_seed,
           "operator": operator, "value": value if operator is not None else None}
    if operator in DATA_OPERATOR_REVISIONS:
        key["definition"] = DATA_OPERATOR_REVISIONS[operator]
    blob = json.dumps(key, sort_keys=True, default=repr)
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
    fixed: dict[str, Any] = field(default_factory=dict)  # the original's --set values
    base_seed: int = 0

    @property
    def setting(self) -> str:
        """The configuration besides the mutation, as typed on the command line: ``epochs=1, --seed 0``."""
        return ", ".join([f"{k}={v}" for k, v in sorted(self.fixed.items())] + [f"--seed {self.base_seed}"])


class MutationStore:
    """The ``mutation.sqlite`` file of a logs directory."""

    def __init__(self, *, path: str | Path) -> None:
        p = Path(path)
        if not (p.is_file() or p.suffix in DB_SUFFIXES):  # a logs directory (``logs/lr_0.5`` too)
            try:
                p.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise FaultlabError(f"--logs-dir {path}: a file stands where the directory should be; give another --logs-dir") from None
            p = p / DB_NAME
        self.path = p
        self._conn = connect(p, _SCHEMA, version=SCHEMA_VERSION, fix="use a new --logs-dir", tables=_TABLES[1:])

    @classmethod
    def open_existing(cls, logs_dir: str | Path) -> "MutationStore":
        """The store in ``logs_dir``, which must already hold one."""
        p = Path(logs_dir)
        db = p / DB_NAME if p.is_dir() else p
        if not db.exists():
            raise FaultlabError(f"{logs_dir}: no {DB_NAME} here; run 'faultlab mutate run ... --logs-dir {logs_dir}' first")
        check_existing(db, _TABLES[1:], "pass the --logs-dir of 'faultlab mutate run' or its mutation.sqlite",
                       what="faultlab mutation store", empty_ok=False)
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
        """Store finished runs in one transaction; returns how many rows were written.

        A successful run already stored is kept (never counted twice); a failed one is replaced by its
        retry, so every (configuration, run) has one row.
        """
        rows = [
            (r.config_hash, r.run, r.seed, r.status,
             json.dumps({k: (v if math.isfinite(v) else None) for k, v in r.metrics.items()}), r.outcomes, r.error,
             (seconds or {}).get((r.config_hash, r.run)), time.time())
            for r in records
        ]
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            cur = self._conn.executemany(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(config_hash, run) DO UPDATE SET "
                "seed=excluded.seed, status=excluded.status, metrics_json=excluded.metrics_json, "
                "outcomes=excluded.outcomes, error=excluded.error, seconds=excluded.seconds, finished=excluded.finished "
                "WHERE runs.status='failed'", rows)
        return cur.rowcount

    # ---------------------------------------------------------------- reading
    def done_runs(self, config_hash: str) -> set[int]:
        """Runs of ``config_hash`` that succeeded; failed ones are not done, so a rerun retries them."""
        return {r for (r,) in self._conn.execute("SELECT run FROM runs WHERE config_hash=? AND status='ok'", (config_hash,))}

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
            "SELECT m.config_hash, m.original_hash, m.model, m.source_hash, m.operator, m.value_json, m.created, "
            "c.fixed_json, c.base_seed FROM mutants m LEFT JOIN configs c ON c.config_hash = m.original_hash "
            "ORDER BY m.created"
        ).fetchall()
        latest: dict[str, tuple[float, str]] = {}
        for r in rows:
            if r[6] >= latest.get(r[2], (-1.0, ""))[0]:
                latest[r[2]] = (r[6], r[3])
        out = [MutantRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], json.loads(r[7] or "{}"), r[8] or 0)
               for r in rows if latest[r[2]][1] == r[3] and (model is None or r[2] == model)]
        order: dict[tuple[str, str], int] = {}
        for m in out:
            order.setdefault((m.model, m.operator), len(order))
        return sorted(out, key=lambda m: (order[(m.model, m.operator)], _sort_key(m.value), m.setting))

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
