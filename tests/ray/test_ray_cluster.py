"""RayExecutor against a real Ray head on loopback: same results as the local executor, dead workers re-queued."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import importlib.util

import numpy as np
import pandas as pd
import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'faultlab[ray]')"),
]


@pytest.fixture(scope="module", autouse=True)
def _ship_this_module_by_value():
    """Ray workers cannot import this test module, so its helper classes travel by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------ test-only worker factories
@dataclass(frozen=True)
class DyingTargetFactory:
    """Builds the real target, but the worker process exits hard (like a crashed node) the first
    time it injects ``fault_id``; a marker file makes it happen once across all workers."""

    spec: object
    fault_id: int
    marker: str

    def __call__(self):
        target = self.spec()
        inject = target.inject

        def dying_inject(assignments):
            if any(f.id == self.fault_id for f, _ in assignments) and not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os._exit(1)
            return inject(assignments)

        target.inject = dying_inject
        return target


@dataclass(frozen=True)
class SquareOrFail:
    """A worker factory for executor-level tests: squares ints, raises on ``bad``, pid with each result."""

    bad: int = -1
    broken: bool = False

    def __call__(self):
        if self.broken:
            raise RuntimeError("cannot load the model on this node")
        pid = os.getpid()

        def work(t):
            if t == self.bad:
                raise ValueError(f"task {t} is bad")
            return t * t, pid

        return work


# ------------------------------------------------------------------ helpers
def stored(out: Path):
    from faultlab.store import CampaignStore

    with CampaignStore.open_existing(out) as store:
        return store.results_frame(with_codes=True), store.n_results()


def assert_same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=["codes"]), b.drop(columns=["codes"]))
    for ca, cb in zip(a["codes"], b["codes"]):
        np.testing.assert_array_equal(ca, cb)


def report_text(df: pd.DataFrame, criterion: str, path: Path) -> str:
    from faultlab.report import write_report_csv

    return write_report_csv(df, path, criterion).read_text()


@pytest.fixture(scope="module")
def local_run(small_campaign, tmp_path_factory):
    """The reference: the same campaign in this process, with one torch thread like each Ray worker.

    Whether a tiny perturbation leaves the scores bit-identical ("masked") depends on the
    order of float additions, which changes with torch's intra-op thread count.
    """
    import torch

    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = small_campaign.campaign(out).run()
    finally:
        torch.set_num_threads(threads)
    df, n = stored(out)
    assert n == len(small_campaign.faults)
    return summary, df, report_text(df, summary.criterion, out / "report.csv")


# ------------------------------------------------------------------ tests
def test_campaign_on_cluster_equals_local(ray_head, small_campaign, local_run, tmp_path):
    from faultlab.executors import make_executor

    seen: list[tuple[int, int]] = []
    with make_executor("ray", workers=2, address=ray_head) as ex:
        summary = small_campaign.campaign(tmp_path, executor=ex).run(progress=lambda d, t: seen.append((d, t)))
    df, n = stored(tmp_path)
    assert n == len(small_campaign.faults) == summary.new_results
    assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)  # streamed, chunk by chunk
    assert len(seen) > 2
    assert_same_results(df, local_run[1])
    assert report_text(df, summary.criterion, tmp_path / "report.csv") == local_run[2]
    assert summary.clean_top1 == local_run[0].clean_top1


def test_killed_worker_chunk_is_requeued_and_counted_once(ray_head, small_campaign, local_run, tmp_path):
    from faultlab.executors.ray import RayExecutor

    victim = small_campaign.faults[len(small_campaign.faults) // 2].id
    marker = tmp_path / "killed.pid"
    factory = DyingTargetFactory(small_campaign.spec, victim, str(marker))
    with RayExecutor(address=ray_head, workers=2) as ex:
        summary = small_campaign.campaign(tmp_path / "c", executor=ex, target_factory=factory).run()
        assert ex.replaced_workers >= 1
    assert marker.exists()  # a worker process really died mid-campaign
    df, n = stored(tmp_path / "c")
    ids = [f.id for f in small_campaign.faults]
    assert n == len(ids) and sorted(df["fault_id"]) == sorted(ids)  # every fault once
    assert_same_results(df, local_run[1])
    assert report_text(df, summary.criterion, tmp_path / "report.csv") == local_run[2]


def test_driver_killed_mid_campaign_resumes_without_double_counting(ray_head, small_campaign, local_run, tmp_path):
    from faultlab.executors.ray import RayExecutor

    class DriverKilled(Exception):
        pass

    def stop_after_two_chunks(done: int, total: int) -> None:
        if done >= 16:
            raise DriverKilled

    with RayExecutor(address=ray_head, workers=2) as ex:
        with pytest.raises(DriverKilled):
            small_campaign.campaign(tmp_path, executor=ex).run(progress=stop_after_two_chunks)
        _, partial = stored(tmp_path)
        assert 0 < partial < len(small_campaign.faults)
        summary = small_campaign.campaign(tmp_path, executor=ex).run()
    df, n = stored(tmp_path)
    assert summary.resumed and summary.new_results == len(small_campaign.faults) - partial
    assert n == len(small_campaign.faults)
    assert_same_results(df, local_run[1])


def test_task_errors_are_reported_once_and_not_retried(ray_head):
    from faultlab.executors.ray import RayExecutor

    with RayExecutor(address=ray_head, workers=2) as ex:
        outcomes = list(ex.run(SquareOrFail(bad=5), range(30)))
        assert ex.replaced_workers == 0
    assert sorted(o.task for o in outcomes) == list(range(30))
    bad = [o for o in outcomes if not o.ok]
    assert [o.task for o in bad] == [5] and "ValueError: task 5 is bad" in bad[0].error
    assert all(o.result[0] == o.task**2 for o in outcomes if o.ok)


def test_worker_that_cannot_build_fails_every_task_without_hanging(ray_head):
    from faultlab.executors.ray import RayExecutor

    with RayExecutor(address=ray_head, workers=2) as ex:
        outcomes = list(ex.run(SquareOrFail(broken=True), range(7)))
    assert sorted(o.task for o in outcomes) == list(range(7))
    assert all(not o.ok and "cannot load the model on this node" in o.error for o in outcomes)


def _refuse_to_unpickle():
    raise ImportError("this worker factory cannot be loaded on the worker")


class UnloadableFactory:
    """Pickles fine on the driver, fails to unpickle in the actor's constructor."""

    def __reduce__(self):
        return _refuse_to_unpickle, ()

    def __call__(self):  # pragma: no cover - never built
        return lambda t: t


def test_factory_that_cannot_be_unpickled_fails_fast_without_replacements(ray_head):
    from faultlab.executors.ray import RayExecutor

    with RayExecutor(address=ray_head, workers=2) as ex:
        outcomes = list(ex.run(UnloadableFactory(), range(5)))
        assert ex.replaced_workers == 0
    assert sorted(o.task for o in outcomes) == list(range(5))
    assert all(not o.ok and "cannot be loaded on the worker" in o.error for o in outcomes)


MUTATION_MODELS = '''
import numpy as np


def load_training_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5))
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.2 * rng.normal(size=96) > 0).astype(np.int64)
    return x, y


def train(x_train, y_train, learning_rate=0.1, epochs=12, seed=0):
    """Logistic regression by full-batch gradient descent; returns per-epoch loss and accuracy."""
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=0.5, size=x_train.shape[1])
    hist = {"loss": [], "accuracy": []}
    for _ in range(epochs):
        p = 1 / (1 + np.exp(-(x_train @ w)))
        w -= learning_rate * x_train.T @ (p - y_train) / len(y_train)
        hist["loss"].append(float(-np.mean(y_train * np.log(p + 1e-9) + (1 - y_train) * np.log(1 - p + 1e-9))))
        hist["accuracy"].append(float(np.mean((p > 0.5) == y_train)))
    return hist


MODEL_TYPES = {"logreg": train}
'''


def test_mutation_sweep_on_cluster_equals_local(ray_head, tmp_path):
    from faultlab.executors.ray import RayExecutor
    from faultlab.executors import InProcessExecutor
    from faultlab.mutation.models import ModelRef
    from faultlab.mutation.runner import MutationSweep
    from faultlab.mutation.store import MutationStore

    models = tmp_path / "models.py"
    models.write_text(MUTATION_MODELS)

    def sweep(executor, logs: Path):
        with MutationStore(path=logs) as store:
            s = MutationSweep(model=ModelRef("logreg", str(models)), store=store, executor=executor, runs=3)
            values = s.run_values("learning_rate", [0.01, 0.5])
            hashes = [s.original_hash] + [s.mutant("learning_rate", v) for v in values]
            return {h: [(r.run, r.seed, r.status, r.metrics) for r in store.runs(h)] for h in hashes}

    local = sweep(InProcessExecutor(), tmp_path / "local")
    with RayExecutor(address=ray_head, workers=2) as ex:
        remote = sweep(ex, tmp_path / "ray")
    assert len(local) == 3 and all(len(v) == 3 and all(r[2] == "ok" for r in v) for v in local.values())
    assert remote == local


# ------------------------------------------------------------------ the CLI (`--executor ray --address`)
def _cli_supports(args: list[str], option: str) -> bool:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "faultlab", *args, "--help"], capture_output=True, text=True)
    return option in out.stdout


def _faultlab(*args: str) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "faultlab", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_run_on_cluster_equals_local(ray_head, small_campaign, tmp_path):
    assert _cli_supports(["run"], "--address") and _cli_supports(["run"], "--executor")  # wired (issue #8): no silent skip
    faults_csv = small_campaign.faults.to_csv(tmp_path / "faults.csv")
    base = ["run", "--model", "faultlab.models:digits_cnn", "--weights", small_campaign.spec.weights,
            "--data", "digits", "--limit", str(len(small_campaign.data)), "--faults", str(faults_csv)]
    _faultlab(*base, "--out", str(tmp_path / "local"))
    _faultlab(*base, "--out", str(tmp_path / "ray"), "--executor", "ray", "--address", ray_head, "--workers", "2")
    assert (tmp_path / "ray" / "report.csv").read_text() == (tmp_path / "local" / "report.csv").read_text()


def test_cli_mutate_on_cluster_equals_local(ray_head, tmp_path):
    import sqlite3

    assert _cli_supports(["mutate", "run"], "--address") and _cli_supports(["mutate", "run"], "--executor")  # wired (issue #8)
    models = tmp_path / "models.py"
    models.write_text(MUTATION_MODELS)
    base = ["mutate", "run", "--models-file", str(models), "--model", "logreg", "--operator", "learning_rate",
            "--value", "0.5", "--runs", "3"]
    _faultlab(*base, "--logs-dir", str(tmp_path / "local"))
    _faultlab(*base, "--logs-dir", str(tmp_path / "ray"), "--executor", "ray", "--address", ray_head, "--workers", "2")

    def runs(logs: Path):
        with sqlite3.connect(logs / "mutation.sqlite") as c:
            return c.execute("SELECT config_hash, run, seed, status, metrics_json FROM runs ORDER BY 1, 2").fetchall()

    assert len(runs(tmp_path / "local")) == 6 and runs(tmp_path / "ray") == runs(tmp_path / "local")
