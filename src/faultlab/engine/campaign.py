"""The campaign driver: validate, compute golden outputs, stream results into the store, resume.

A :class:`Campaign` ties a target, evaluation data and a fault list to a campaign
directory. Work is cut into chunks of faults and handed to an executor; whatever comes
back is written to SQLite at once, so a killed campaign resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..datasets import Dataset
from ..errors import DataError, FaultlabError
from ..executors import Executor, InProcessExecutor
from ..faults import Fault, FaultList
from ..outcomes import FaultResult
from ..store import CampaignStore
from ..targets.base import Target
from . import make_engine
from ._base import EvalSet

log = logging.getLogger("faultlab")

ProgressFn = Callable[[int, int], None]


def data_fingerprint(x: np.ndarray, y: np.ndarray | None) -> str:
    h = hashlib.sha256()
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()[:16]


def _class_ids(y: np.ndarray, outputs: int, name: str) -> np.ndarray:
    """Integer labels as one class id per input: as they are (shape (N,)), or from one-hot rows (N, outputs).

    Anything else (a label per time step, several classes per input) cannot be scored against one
    top-1 per input, and is refused in one line before anything is written.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim == 2 and y.shape[1] == outputs and len(y) and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1):
        return y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(
            f"{name}: integer labels y must hold one class id per input (shape (N,)) or one-hot rows (N, {outputs}); "
            f"got shape {tuple(y.shape)}. For labels per time step, score the model's per-input output instead, or leave y out"
        )
    return y


@dataclass(frozen=True)
class CampaignWorker:
    """Builds, once per process, what a worker needs: the target, golden outputs and an engine.

    Picklable when ``target_factory`` is (e.g. a :class:`faultlab.targets.TargetSpec`), so the
    same worker runs in this process, a process pool or a Ray actor.
    """

    target_factory: Callable[[], Target]
    x: np.ndarray
    y: np.ndarray | None
    engine: str = "exact"
    batch_size: int = 512
    k: int = 5
    tolerance: float | None = None
    engine_options: dict = field(default_factory=dict)

    def __call__(self) -> Callable[[Sequence[Fault]], list[FaultResult]]:
        target = self.target_factory()
        if hasattr(target, "trace"):
            target.trace(target.prepare(self.x[:1]))
        data = EvalSet.build(target, self.x, self.y, batch_size=self.batch_size)
        eng = make_engine(self.engine, batch_size=self.batch_size, k=self.k, tolerance=self.tolerance, **self.engine_options)

        def work(faults: Sequence[Fault]) -> list[FaultResult]:
            # codes are compressed here, in the worker, so the store's writer (one process) only inserts
            return [r.compressed() for r in eng.run(target, data, faults)]

        return work


@dataclass
class CampaignSummary:
    """What a finished (or resumed) campaign holds: per-fault results and the clean accuracy.

    ``results`` (one row per fault) is read from the store when first asked for, so a long
    campaign's summary costs no memory unless it is used; ``layer_sums()`` and
    ``result_chunks()`` give the same content in constant memory.
    """

    directory: Path
    frame: Any  # pandas DataFrame of per-fault results, or None: read from the store on first use
    n_inputs: int
    clean_top1: float | None
    criterion: str
    resumed: bool
    new_results: int
    seconds: float
    clean_correct: np.ndarray | None = None

    @property
    def results(self) -> Any:
        """Per-fault results joined with their faults (a pandas DataFrame, one row per finished fault)."""
        if self.frame is None:
            with CampaignStore(self.directory) as store:
                self.frame = store.results_frame()
        return self.frame

    def n_results(self) -> int:
        """Faults with a stored result."""
        if self.frame is not None:
            return len(self.frame)
        with CampaignStore(self.directory) as store:
            return store.n_results()

    def layer_sums(self) -> Any:
        """Per (site kind, layer) sums of the result counts, computed by the store (see :func:`faultlab.report.layer_table`)."""
        with CampaignStore(self.directory) as store:
            return store.layer_sums()

    def result_chunks(self, chunk: int = 2048) -> Iterator[Any]:
        """The per-fault results in DataFrames of at most ``chunk`` rows, read from the store as they are consumed."""
        with CampaignStore(self.directory) as store:
            yield from store.result_chunks(chunk=chunk)


class Campaign:
    """A fault campaign on one target and dataset, stored in ``out`` (``campaign.sqlite``) as results arrive.

    :meth:`run` checks everything first, then resumes whatever the store already holds and returns a
    :class:`CampaignSummary`. ``engine`` defaults to ``"exact"`` (the reference) in the library; the CLI
    defaults to ``"fast"`` (same outcomes, faster): pass ``engine="fast"`` for that.
    """

    def __init__(
        self,
        *,
        target: Target,
        data: Dataset,
        faults: FaultList,
        out: str | Path,
        engine: str = "exact",
        batch_size: int = 512,
        k: int = 5,
        tolerance: float | None = None,
        executor: Executor | None = None,
        target_factory: Callable[[], Target] | None = None,
        chunk_size: int = 64,
        model_id: str = "<memory>",
        settings: dict | None = None,
        engine_options: dict | None = None,
    ) -> None:
        self.target = target
        self.data = data
        self.faults = faults
        self.out = Path(out)
        self.engine = engine
        self.batch_size = batch_size
        self.k = k
        self.tolerance = tolerance
        self.executor = executor or InProcessExecutor()
        self.target_factory = target_factory or (lambda: target)
        self.chunk_size = chunk_size
        self.model_id = model_id
        self.extra_settings = settings or {}
        self.engine_options = engine_options or {}

    @property
    def criterion(self) -> str:
        return f"top-1 (top-{self.k} for SDC-5)" if self.tolerance is None else f"relative error <= {self.tolerance:g}"

    def _prepared(self) -> tuple[np.ndarray, np.ndarray | None, EvalSet]:
        x = self.target.prepare(self.data.x)
        if len(x) == 0:
            raise DataError(f"{self.data.name}: the dataset is empty; it needs at least one sample")
        try:
            if hasattr(self.target, "trace"):
                self.target.trace(x[:1])
            data = EvalSet.build(self.target, x[:1], None)
        except DataError as e:
            raise DataError(f"{self.data.name}: {e}") from None
        golden1 = data.golden
        y = self.data.y
        if y is not None and np.issubdtype(y.dtype, np.integer) and golden1.shape[1] > 1:
            y = _class_ids(y, golden1.shape[1], self.data.name)
            if y.min() < 0 or y.max() >= golden1.shape[1]:
                raise DataError(
                    f"{self.data.name}: labels must be 0..{golden1.shape[1] - 1} for a model with {golden1.shape[1]} outputs, found {int(y.min())}..{int(y.max())}"
                )
        return x, y, data

    def validate(self) -> None:
        """Check the engine, data, every fault, and an existing store's campaign before anything is written."""
        self.check_engine()
        x, y, _ = self._prepared()
        self.target.check_faults(self.faults, len(x))
        from ..store import store_file

        if store_file(self.out).exists():
            with CampaignStore(self.out) as store:
                stored = store.get_meta("identity")
                mine = self.identity(x, y)
                if stored is not None:
                    diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
                    if diff:
                        raise FaultlabError(
                            f"{self.out}: holds a different campaign ({', '.join(diff)} differ); use another --out directory to start a new one"
                        )

    def check_engine(self) -> None:
        """Build the engine once (an unknown name or bad option fails here, before the store records it)."""
        make_engine(self.engine, batch_size=self.batch_size, k=self.k, tolerance=self.tolerance, **self.engine_options)

    def worker(self, x: np.ndarray, y: np.ndarray | None) -> CampaignWorker:
        """The worker recipe; in this process it reuses the loaded target (the model stays in memory once)."""
        factory = (lambda: self.target) if isinstance(self.executor, InProcessExecutor) else self.target_factory
        return CampaignWorker(factory, x, y, self.engine, self.batch_size, self.k, self.tolerance, self.engine_options)

    def common_settings(self) -> dict[str, Any]:
        """Settings every campaign records: framework, device, the sites (for populations) and versions."""
        from ..report.html import package_versions

        return {
            "framework": self.target.framework,
            "device": self.target.device,
            "sites": [{"name": s.name, "kind": s.kind, "layer": s.layer, "layer_type": s.layer_type, "shape": list(s.shape), "dtype": s.dtype} for s in self.target.sites()],
            "versions": package_versions(),
            **self.extra_settings,
        }

    def identity(self, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
        fp = getattr(self.target, "fingerprint", None)
        return {
            "model": self.model_id,
            "model_hash": fp() if callable(fp) else None,
            "data": data_fingerprint(x, y),
            "criterion": self.criterion,
            "faults": self.faults.fingerprint(),
        }

    def run(self, progress: ProgressFn | None = None) -> CampaignSummary:
        """Run every fault not yet stored (``progress(done, total)`` after each batch) and summarise the campaign."""
        t0 = time.perf_counter()
        self.check_engine()
        x, y, _ = self._prepared()
        self.target.check_faults(self.faults, len(x))
        settings = {
            "model": self.model_id,
            "data": self.data.name,
            "n_inputs": int(len(x)),
            "n_faults": len(self.faults),
            "engine": self.engine,
            "batch_size": self.batch_size,
            "k": self.k,
            "tolerance": self.tolerance,
            "criterion": self.criterion,
            **self.common_settings(),
        }
        with CampaignStore(self.out) as store:
            resumed = store.init_campaign(self.identity(x, y), settings, self.faults)
            golden = EvalSet.build(self.target, x, y, batch_size=self.batch_size)
            clean_top1 = None
            if golden.labels is not None:
                clean_top1 = float((golden.golden.argmax(1) == golden.labels).float().mean().item())
            store.set_meta("clean_top1", clean_top1)
            if golden.labels is not None:
                ok = (golden.golden.argmax(1) == golden.labels).cpu().numpy()
                store.set_meta("clean_correct", "".join("1" if v else "0" for v in ok))
            pending = pending_faults(self.faults, store)
            total, finished = len(self.faults), len(self.faults) - len(pending)
            worker = self.worker(x, y)
            new = execute(store, pending, worker, self.executor, chunk_size=self.chunk_size, progress=progress, done=finished, total=total)
            cc = store.get_meta("clean_correct")
        clean_correct = None if cc is None else np.frombuffer(cc.encode(), dtype=np.uint8) == ord("1")
        return CampaignSummary(self.out, None, int(len(x)), clean_top1, self.criterion, resumed, new, time.perf_counter() - t0, clean_correct)


#: a chunk grows while it would take less than this many seconds per worker
CHUNK_SECONDS = 1.0
#: ... up to this many times the campaign's chunk size: 4x gave most of the speed (digits, 100,000 weight faults:
#: 16.3 s against 21.2 s unchanged and 15.4 s at 16x) without filling the engine's memory budget (466 MiB peak,
#: 440 unchanged, 533 at 16x)
MAX_CHUNK_GROWTH = 4


class _Pending(Sequence[Fault]):
    """The faults of ``faults`` at positions ``todo``, made into records only when sliced or indexed."""

    def __init__(self, faults: FaultList, todo: np.ndarray) -> None:
        self.faults, self.todo = faults, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.faults[int(j)] for j in self.todo[i]]
        return self.faults[int(self.todo[i])]


def pending_faults(faults: FaultList, store: CampaignStore) -> Sequence[Fault]:
    """The faults of ``faults`` without a stored result, in list order (records made only as they are read)."""
    return _Pending(faults, np.flatnonzero(~np.isin(faults.ids, store.done_id_array())))


def execute(
    store: CampaignStore,
    pending: Sequence[Fault],
    worker: Callable[[], Callable[[Sequence[Fault]], list[FaultResult]]],
    executor: Executor,
    *,
    chunk_size: int = 64,
    progress: ProgressFn | None = None,
    done: int = 0,
    total: int | None = None,
) -> int:
    """Run ``pending`` faults in chunks on ``executor`` and store each chunk's results as it arrives.

    Chunks start at ``chunk_size`` faults and grow, up to :data:`MAX_CHUNK_GROWTH` times that,
    while the faults run so fast that a chunk would take less than :data:`CHUNK_SECONDS` per
    worker: an engine pays a fixed cost per call, and a kill still loses about a second of work.
    Returns how many results were new. A failed chunk is logged and reported after the others
    finish; what was stored stays stored, and a rerun retries only what is missing.
    """
    total = len(pending) + done if total is None else total
    if progress:
        progress(done, total)
    size = chunk_size
    workers = max(1, int(getattr(executor, "workers", 1) or 1))

    def chunks() -> Iterator[list[Fault]]:
        # made as the executor asks for them: only the chunks in flight exist as Fault records
        i = 0
        while i < len(pending):
            n = size  # read once: ``size`` may change while this chunk runs
            yield list(pending[i : i + n])
            i += n

    errors: list[str] = []
    new = ran = 0
    t0 = time.perf_counter()
    for outcome in executor.run(worker, chunks()):
        if not outcome.ok:
            errors.append(outcome.error or "?")
            log.error("chunk of %d faults failed: %s", len(outcome.task), outcome.error)
            continue
        new += store.add_results(outcome.result)
        done += len(outcome.result)
        ran += len(outcome.result)
        per_worker = ran / max(time.perf_counter() - t0, 1e-9) / workers  # faults per second, set-up included
        size = int(min(chunk_size * MAX_CHUNK_GROWTH, max(chunk_size, per_worker * CHUNK_SECONDS)))
        if progress:
            progress(done, total)
    if errors:
        raise FaultlabError(f"{len(errors)} chunk(s) of faults failed (stored results are kept; rerun to retry): {errors[0].splitlines()[0]}")
    return new


def faulty_accuracy(summary: CampaignSummary) -> float:
    """Top-1 accuracy under the campaign's faults.

    Per-input faults (InjectTF2 configs): every input once, faulted where a fault hit it, clean
    elsewhere -- InjectTF2's 'faulty accuracy'. Whole-dataset faults: the mean over (fault, input) pairs.
    """
    df = summary.results
    if df.empty:
        return float("nan")
    if df["input"].notna().all() and summary.clean_correct is not None:
        correct = summary.clean_correct.astype(np.int64).copy()
        for inp, t1 in zip(df["input"].astype(int), df["top1_correct"]):
            correct[inp] = t1
        return float(correct.mean())
    return float(df["top1_correct"].sum() / df["n"].sum())


__all__ = ["Campaign", "CampaignWorker", "CampaignSummary", "data_fingerprint", "execute", "faulty_accuracy", "pending_faults"]
