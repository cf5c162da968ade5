"""SQLite campaign store: settings, faults and per-fault results, appended as they are produced.

One database per campaign directory. Results are written in one transaction per batch
(``INSERT OR IGNORE`` on the fault id), so a killed run loses at most the batch in
flight and a rerun never counts a fault twice. The campaign's identity (model, data,
outcome criterion, fault list) is fixed on creation; reopening with a different one is
refused rather than silently mixed.
"""
from __future__ import annotations

import json
import time
import zlib
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ._sqlite import DB_SUFFIXES, connect, transaction
from .errors import FaultlabError
from .faults import Fault, FaultList, format_index, parse_index
from .outcomes import FaultResult

SCHEMA_VERSION = 1
DB_NAME = "campaign.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY, layer TEXT NOT NULL, idx TEXT NOT NULL, bits TEXT NOT NULL,
    site TEXT NOT NULL, model TEXT NOT NULL, value REAL, input INTEGER, stratum TEXT
);
CREATE TABLE IF NOT EXISTS results (
    fault_id INTEGER PRIMARY KEY REFERENCES faults(id),
    n INTEGER NOT NULL, masked INTEGER NOT NULL, non_critical INTEGER NOT NULL,
    sdc1 INTEGER NOT NULL, sdc5 INTEGER NOT NULL, due INTEGER NOT NULL,
    top1_correct INTEGER NOT NULL, top5_correct INTEGER NOT NULL,
    top1_robust INTEGER NOT NULL, top5_robust INTEGER NOT NULL,
    engine TEXT NOT NULL, codes BLOB, created REAL NOT NULL
);
"""

RESULT_COLUMNS = ("n", "masked", "non_critical", "sdc1", "sdc5", "due", "top1_correct", "top5_correct", "top1_robust", "top5_robust")


#: rows per fetch when a store's results are read into one table
_FRAME_CHUNK = 8192


def store_file(path: str | Path) -> Path:
    """The database file for ``path`` (a campaign directory, ``runs/lr_0.5`` too, or a ``.sqlite`` file), refused in
    one line where a file stands in the way of the directory."""
    p = Path(path)
    if not (p.is_file() or p.suffix in DB_SUFFIXES):
        p = p / DB_NAME
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FaultlabError(f"{path}: {parent} is a file, not a directory; give --out a new or campaign directory")
            break
    return p


class CampaignStore:
    """A campaign's SQLite database (``DIR/campaign.sqlite``): ids in, frozen records out.

    ``CampaignStore(path)`` opens the store, creating the directory and an empty database where there are
    none (what a new campaign wants); :meth:`open_existing` refuses a path without a campaign (what reading
    one wants). A file that is not one of our databases is refused untouched either way.
    """

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        p = store_file(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self._conn = connect(p, _SCHEMA, version=SCHEMA_VERSION, fix="rerun into a new --out directory", tables=("faults", "results"))

    @classmethod
    def open_existing(cls, directory: str | Path) -> "CampaignStore":
        p = Path(directory)
        db = p / DB_NAME if p.is_dir() else p
        if not db.exists():
            raise FaultlabError(f"{p}: no campaign database ({DB_NAME}) here; run 'faultlab run --out {p}' first")
        return cls(db)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "CampaignStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- meta -----
    def get_meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def settings(self) -> dict[str, Any]:
        return self.get_meta("settings") or {}

    # ----- campaign identity -----
    def init_campaign(self, identity: dict[str, Any], settings: dict[str, Any], faults: FaultList | None = None) -> bool:
        """Record a new campaign, or check that a stored one is the same; True when resuming.

        ``identity`` holds what must match to resume (model, data, criterion, fault list);
        ``settings`` is descriptive (batch size, engine, versions) and is updated.
        """
        stored = self.get_meta("identity")
        if stored is not None:
            diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            if diff:
                raise FaultlabError(
                    f"{self.path.parent}: holds a different campaign ({', '.join(diff)} differ); use another --out directory to start a new one"
                )
            self.set_meta("settings", {**self.settings(), **settings})
            return True
        with self._tx():
            self.set_meta("identity", identity)
            self.set_meta("settings", settings)
            self.set_meta("created", time.time())
            if faults is not None:
                self._insert_faults(faults)
        return False

    def _tx(self):
        return transaction(self._conn)

    def _insert_faults(self, faults: Iterable[Fault], stratum: str | None = None) -> None:
        # a generator: sqlite3 takes the rows one by one, so a long list is never held twice
        self._conn.executemany(
            "INSERT OR IGNORE INTO faults(id, layer, idx, bits, site, model, value, input, stratum) VALUES (?,?,?,?,?,?,?,?,?)",
            ((f.id, f.layer, format_index(f.index), ";".join(map(str, f.bits)), f.site, f.model, f.value, f.input, stratum) for f in faults),
        )

    def add_faults(self, faults: Iterable[Fault], stratum: str | None = None, *, meta: dict[str, Any] | None = None) -> None:
        """Append faults (adaptive rounds) and, in the same transaction, meta entries; stored ids are kept."""
        with self._tx():
            self._insert_faults(faults, stratum)
            for k, v in (meta or {}).items():
                self.set_meta(k, v)

    def add_faults_with_strata(self, faults: Sequence[Fault], strata: Sequence[str], *, meta: dict[str, Any] | None = None) -> None:
        """Append faults each tagged with its stratum, plus meta entries, in one transaction."""
        with self._tx():
            self._conn.executemany(
                "INSERT OR IGNORE INTO faults(id, layer, idx, bits, site, model, value, input, stratum) VALUES (?,?,?,?,?,?,?,?,?)",
                [(f.id, f.layer, format_index(f.index), ";".join(map(str, f.bits)), f.site, f.model, f.value, f.input, s) for f, s in zip(faults, strata)],
            )
            for k, v in (meta or {}).items():
                self.set_meta(k, v)

    def faults(self) -> FaultList:
        rows = self._conn.execute("SELECT id, layer, idx, bits, site, model, value, input FROM faults ORDER BY id").fetchall()
        return FaultList(
            tuple(
                Fault(r[0], r[1], parse_index(r[2], where="store"), tuple(int(b) for b in r[3].split(";") if b), r[4], r[5], r[6], r[7])
                for r in rows
            ),
            str(self.path),
        )

    # ----- results -----
    def done_id_array(self) -> np.ndarray:
        """The ids of the faults with a stored result, as one int64 array (no Python int per fault)."""
        cur = self._conn.execute("SELECT fault_id FROM results")
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def n_results(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def add_results(self, results: Sequence[FaultResult]) -> int:
        """Store a batch of results in one transaction; returns how many were new."""
        if not results:
            return 0
        now = time.time()
        with self._tx():
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO results(fault_id, n, masked, non_critical, sdc1, sdc5, due, top1_correct, top5_correct, top1_robust, top5_robust, engine, codes, created)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.fault_id, r.n, r.masked, r.non_critical, r.sdc1, r.sdc5, r.due,
                        r.top1_correct, r.top5_correct, r.top1_robust, r.top5_robust, r.engine,
                        r.compressed().codes_z, now,
                    )
                    for r in results
                ],
            )
            return self._conn.total_changes - before

    def results_frame(self, *, with_codes: bool = False):
        """Faults joined with their results as a pandas DataFrame (one row per finished fault).

        Holds every fault's row at once; :meth:`result_chunks` and :meth:`layer_sums` keep a long
        campaign's summary in constant memory.
        """
        import pandas as pd

        frames = list(self.result_chunks(with_codes=with_codes))
        if not frames:
            return self._empty_frame(with_codes)
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _result_columns(self, with_codes: bool) -> str:
        cols = "f.id AS fault_id, f.layer, f.idx, f.bits, f.site, f.model, f.value, f.input, f.stratum, " + ", ".join(f"r.{c}" for c in RESULT_COLUMNS) + ", r.engine"
        return cols + (", r.codes" if with_codes else "")

    def _empty_frame(self, with_codes: bool):
        import pandas as pd

        with closing(self._conn.cursor()) as cur:
            cur.execute(f"SELECT {self._result_columns(with_codes)} FROM results r JOIN faults f ON f.id = r.fault_id LIMIT 0")
            return pd.DataFrame(columns=[d[0] for d in cur.description])

    def result_chunks(self, *, with_codes: bool = False, chunk: int | None = None) -> Iterator[Any]:
        """:meth:`results_frame` in DataFrames of at most ``chunk`` faults, in fault-id order."""
        import pandas as pd

        chunk = chunk or _FRAME_CHUNK

        with closing(self._conn.cursor()) as cur:
            cur.execute(f"SELECT {self._result_columns(with_codes)} FROM results r JOIN faults f ON f.id = r.fault_id ORDER BY f.id")
            names = [d[0] for d in cur.description]
            while rows := cur.fetchmany(chunk):
                df = pd.DataFrame(rows, columns=names)
                if with_codes:
                    df["codes"] = [np.frombuffer(zlib.decompress(b), dtype=np.uint8) if b else np.zeros(0, np.uint8) for b in df["codes"]]
                yield df

    def layer_sums(self):
        """Per (site kind, layer), in order of first fault id: finished faults and the sums of their result counts (one SQL query).

        ``n_nn``, the sum of the faults' squared input counts, sizes the intervals of :func:`faultlab.report.layer_table`.
        """
        import pandas as pd

        sums = ", ".join(f"SUM(r.{c}) AS {c}" for c in RESULT_COLUMNS)
        # n_nn, the sum of squared input counts, sizes the intervals over pairs (see stats.pair_rate_interval)
        q = (f"SELECT f.site, f.layer, COUNT(*) AS faults, {sums}, SUM(r.n * r.n) AS n_nn "
             "FROM results r JOIN faults f ON f.id = r.fault_id GROUP BY f.site, f.layer ORDER BY MIN(f.id)")
        with closing(self._conn.cursor()) as cur:
            cur.execute(q)
            return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])


__all__ = ["CampaignStore", "SCHEMA_VERSION", "DB_NAME", "RESULT_COLUMNS"]
