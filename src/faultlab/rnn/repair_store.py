"""A small SQLite store for experiment rows, so a killed run resumes without redoing or double-counting work.

Each row has a unique key (e.g. ``seed=1/method=kl/percent=10``) and a JSON payload. The
store remembers the configuration it was created with and refuses rows of another one.
WAL mode, one transaction per :meth:`ResultStore.put` call, a ``schema_version`` row.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import FaultlabError

SCHEMA_VERSION = 1


class ResultStore:
    """Rows keyed by strings with JSON payloads, in ``path`` (created on first use)."""

    def __init__(self, path: str | Path, *, config: dict[str, Any]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path)
        except (OSError, sqlite3.Error) as e:
            raise FaultlabError(f"--out {self.path.parent}: cannot create {self.path.name} there ({e}); choose another --out") from e
        self._con.execute("PRAGMA journal_mode=WAL")
        with self._con:
            self._con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._con.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, payload TEXT NOT NULL)")
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('config', ?)", (json.dumps(config, sort_keys=True),))
        meta = dict(self._con.execute("SELECT name, value FROM meta"))
        if meta["schema_version"] != str(SCHEMA_VERSION):
            raise FaultlabError(f"{self.path}: schema version {meta['schema_version']}, expected {SCHEMA_VERSION}; use a new --out directory")
        if json.loads(meta["config"]) != json.loads(json.dumps(config, sort_keys=True)):
            raise FaultlabError(f"{self.path}: holds results of another configuration ({meta['config']}); "
                                "rerun with the same options or choose a new --out directory")

    def has(self, key: str) -> bool:
        """Whether a row with ``key`` is stored."""
        return self._con.execute("SELECT 1 FROM rows WHERE key = ?", (key,)).fetchone() is not None

    def get(self, key: str) -> dict[str, Any] | None:
        """The payload stored under ``key``, or None."""
        row = self._con.execute("SELECT payload FROM rows WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, rows: dict[str, dict[str, Any]]) -> None:
        """Store several rows in one transaction; a key already stored keeps its first payload."""
        with self._con:
            self._con.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?)",
                                  [(k, json.dumps(v, sort_keys=True)) for k, v in rows.items()])

    def rows(self) -> list[dict[str, Any]]:
        """Every payload, in key order."""
        return [json.loads(p) for (p,) in self._con.execute("SELECT payload FROM rows ORDER BY key")]

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarise(rows: list[dict[str, Any]], *, by: list[str], values: list[str]) -> "Any":
    """Mean, standard deviation (ddof=1) and seed count of ``values`` grouped by ``by`` (a pandas DataFrame)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=by + [f"{v}_{s}" for v in values for s in ("mean", "std")] + ["seeds"])
    g = df.groupby(by, sort=False)
    out = g[values].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = g.size()
    return out.reset_index()


def mean_pm(mean: float, std: float, digits: int = 3) -> str:
    """``"0.812 ± 0.034"``; just ``"0.812"`` when there is no spread (one seed: std is NaN)."""
    if mean != mean:
        return "-"
    if std != std:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


__all__ = ["ResultStore", "SCHEMA_VERSION", "summarise", "mean_pm"]
