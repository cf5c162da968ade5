"""Seeded runs, reuse of original runs, failed runs, process workers and resume after kill -9."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faultlab.errors import FaultlabError
from faultlab.executors import ProcessExecutor
from faultlab.mutation import ModelRef, MutationStore, MutationSweep, analyze
from faultlab.mutation.sweeps import run_sweep, sweep_configs

from .conftest import TOY_FILE

TOY = ModelRef(name="toy", models_file=TOY_FILE)


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _metrics(store: MutationStore, h: str) -> list[tuple[int, int, float]]:
    return [(r.run, r.seed, r.metrics["val_accuracy"]) for r in store.runs(h) if r.status == "ok"]


def test_seeded_runs_repeat_and_originals_are_shared(tmp_path, toy_env):
    store = MutationStore(path=tmp_path / "a")
    sweep = MutationSweep(model=TOY, store=store, runs=4)
    run_sweep(sweep, sweep_configs(sweep, ["shift"], [0.05]))
    assert len(_calls(toy_env)) == 8  # 4 original + 4 mutant
    first = _metrics(store, sweep.original_hash)
    assert [s for _, s, _ in first] == [0, 1, 2, 3]
    assert len({v for *_, v in first}) == 4  # different seeds, different noise
    # another operator in a new sweep object: the original is not retrained
    sweep2 = MutationSweep(model=TOY, store=store, runs=4)
    assert sweep2.original_hash == sweep.original_hash
    run_sweep(sweep2, sweep_configs(sweep2, ["use_bias"]))
    assert len(_calls(toy_env)) == 12
    # same seeds elsewhere give the same numbers (Python/NumPy/torch seeded before each run)
    other = MutationStore(path=tmp_path / "b")
    run_sweep(MutationSweep(model=TOY, store=other, runs=4), [])
    assert _metrics(other, sweep.original_hash) == first
    store.close()
    other.close()


def test_runs_get_fresh_data_and_only_mutants_get_the_mutation(tmp_path):
    """A function that edits x_train in place must not change later runs; the data mutation reaches mutant runs only."""
    clean = float(np.arange(60, dtype=np.float32).sum())  # load_training_data() in toy_models
    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=ModelRef(name="toy_data", models_file=TOY_FILE), store=store, runs=3)
        run_sweep(sweep, [("delete_training_data", 50.0), ("change_label", 50.0)])
        orig = [r.metrics for r in store.runs(sweep.original_hash)]
        assert [m["x_sum"] for m in orig] == [clean] * 3 and [m["n"] for m in orig] == [30] * 3
        assert [m["y_sum"] for m in orig] == [30.0] * 3
        deleted = [r.metrics for r in store.runs(sweep.mutant("delete_training_data", 50.0))]
        assert [m["n"] for m in deleted] == [15] * 3  # int(10 * 50 / 100) = 5 of each class
        relabelled = [r.metrics for r in store.runs(sweep.mutant("change_label", 50.0))]
        # trained after the original and the deletion runs in the same process, still on clean inputs
        assert all(m["x_sum"] == clean and m["n"] == 30 and m["y_sum"] != 30.0 for m in relabelled)


def test_seed_is_passed_when_accepted(tmp_path):
    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=ModelRef(name="toy_seeded", models_file=TOY_FILE), store=store, runs=3, base_seed=10)
        run_sweep(sweep, [])
        assert [r.metrics["seed_seen"] for r in store.runs(sweep.original_hash)] == [10, 11, 12]


def test_crashing_mutant_runs_are_failed_but_the_sweep_goes_on(tmp_path, toy_env):
    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=TOY, store=store, runs=3)
        run_sweep(sweep, [("activation", "exponential"), ("activation", "tanh"), ("crash", True)])
        crashed = sweep.mutant("activation", "exponential")
        runs = store.runs(crashed)
        assert [r.status for r in runs] == ["failed"] * 3 and "diverged" in runs[0].error
        result = analyze(store, metric="val_accuracy")
        by = {(m.operator, m.value): m for m in result.mutants}
        assert by[("activation", "exponential")].comparison.killed is None
        assert by[("activation", "exponential")].failed_mutant == 3
        assert by[("activation", "tanh")].comparison.runs_mutant == 3  # the later mutant still trained
        # rerunning retries failed runs (never successful ones) and replaces their rows: no duplicates
        n = len(_calls(toy_env))
        run_sweep(sweep, [("activation", "exponential")])
        assert len(_calls(toy_env)) == n + 3
        assert [r.status for r in store.runs(crashed)] == ["failed"] * 3
        assert len(store.runs(sweep.original_hash)) == 3


def test_failed_runs_are_retried_and_replaced(tmp_path, toy_env, monkeypatch):
    marker = tmp_path / "server_down"
    marker.touch()
    monkeypatch.setenv("FAULTLAB_TOY_FLAKY", str(marker))
    with MutationStore(path=tmp_path / "logs") as store:
        sweep = MutationSweep(model=ModelRef(name="flaky", models_file=TOY_FILE), store=store, runs=3)
        with pytest.raises(FaultlabError, match=r"failed in all 3 .*transient.*failed runs are retried"):
            run_sweep(sweep, [("shift", 0.05)])
        assert [r.status for r in store.runs(sweep.original_hash)] == ["failed"] * 3
        marker.unlink()  # the transient problem goes away
        before = len(_calls(toy_env))
        run_sweep(sweep, [("shift", 0.05)])
        assert len(_calls(toy_env)) - before == 6  # 3 retried original runs + 3 mutant runs
        for h in (sweep.original_hash, sweep.mutant("shift", 0.05)):
            runs = store.runs(h)
            assert [(r.run, r.status, r.error) for r in runs] == [(i, "ok", None) for i in range(3)]
        assert store.count_runs() == 6  # replaced, not duplicated
        ok = _metrics(store, sweep.original_hash)
        run_sweep(sweep, [("shift", 0.05)])  # successful runs are never redone
        assert len(_calls(toy_env)) - before == 6 and _metrics(store, sweep.original_hash) == ok


def test_set_values_are_type_checked_before_training(tmp_path, toy_env):
    with MutationStore(path=tmp_path) as store:
        for fixed, pattern in (({"width": "abc"}, r"--set width=abc: expected an integer"),
                               ({"width": 2.5}, r"--set width=2.5: expected an integer"),
                               ({"use_bias": 3}, r"--set use_bias=3: expected true or false"),
                               ({"noise": "x"}, r"--set noise=x: expected a number")):
            with pytest.raises(FaultlabError, match=pattern):
                MutationSweep(model=TOY, store=store, runs=2, fixed=fixed)
        MutationSweep(model=TOY, store=store, runs=2, fixed={"width": 2, "noise": 1, "use_bias": False, "activation": "tanh"})
    assert _calls(toy_env) == []


def test_configurations_with_one_value_are_told_apart(tmp_path):
    """Mutants with the same value under other --set values are separate rows, and killability counts them apart."""
    from faultlab.mutation.analysis import runs_table
    from faultlab.mutation.report import result_rows

    with MutationStore(path=tmp_path) as store:
        for noise in (0.0, 1.0):  # no noise: a tiny shift kills; the usual noise: it survives
            sweep = MutationSweep(model=TOY, store=store, runs=3, fixed={"noise": noise})
            run_sweep(sweep, [("shift", 0.001)])
        result = analyze(store, metric="val_accuracy")
        assert [(m.value, m.setting, m.comparison.killed) for m in result.mutants] == [
            (0.001, "noise=0.0, --seed 0", True), (0.001, "noise=1.0, --seed 0", False)]
        assert result.killability == {"shift": 0.5}
        assert [r["setting"] for r in result_rows(result)] == ["noise=0.0, --seed 0", "noise=1.0, --seed 0"]
        originals = [r for r in runs_table(store, result) if r["operator"] == "original"]
        assert len(originals) == 6 and {r["setting"] for r in originals} == {"noise=0.0, --seed 0", "noise=1.0, --seed 0"}


def test_metric_is_checked_at_the_first_run(tmp_path, toy_env):
    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=TOY, store=store, runs=4)
        with pytest.raises(FaultlabError, match="--metric 'val_f1'"):
            run_sweep(sweep, [("shift", 0.1)], metric="val_f1")
        assert len(_calls(toy_env)) == 1  # not the whole sweep
        with pytest.raises(FaultlabError, match="--metric 'val_f1'"):
            sweep.check_metric("val_f1")  # runs are stored: checked without training
        from faultlab.mutation import run_adaptive, search_threshold
        from faultlab.mutation.statistics import GLMTest

        with pytest.raises(FaultlabError, match="--precision 0"):
            search_threshold(sweep, "shift", metric="val_accuracy", test=GLMTest(), precision=0)
        with pytest.raises(FaultlabError, match="--round-size 0"):
            run_adaptive(sweep, [("shift", 0.1)], metric="val_accuracy", test=GLMTest(), round_size=0)
        assert len(_calls(toy_env)) == 1


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=TOY, store=store, runs=2)
        with pytest.raises(FaultlabError, match="unknown operator"):
            sweep_configs(sweep, ["nope"])
        with pytest.raises(FaultlabError, match="outside its domain"):
            sweep_configs(sweep, ["width"], [-3])
        with pytest.raises(FaultlabError, match="no keyword argument"):
            MutationSweep(model=TOY, store=store, runs=2, fixed={"epochz": 1})
        run_sweep(sweep, sweep_configs(sweep, ["shift"], [0.1]))
        with pytest.raises(FaultlabError, match="not in the training history") as e:
            analyze(store, metric="val_auc")
        assert "\n" not in str(e.value)
    with MutationStore(path=tmp_path / "broken") as store:
        sweep = MutationSweep(model=ModelRef(name="broken", models_file=TOY_FILE), store=store, runs=2)
        with pytest.raises(FaultlabError, match="original configuration failed in all 2") as e:
            run_sweep(sweep, sweep_configs(sweep, ["width"], [4]))
        assert "\n" not in str(e.value)
        assert [r.status for r in store.runs(sweep.original_hash)] == ["failed", "failed"]  # recorded
        assert store.runs(sweep.mutant("width", 4)) == []  # no mutant trained against a broken original
        with pytest.raises(FaultlabError, match="original configuration failed"):
            analyze(store)
    with pytest.raises(FaultlabError, match="not in MODEL_TYPES"):
        ModelRef(name="LSTM9", models_file=TOY_FILE).load()


@pytest.mark.slow
def test_process_workers_give_the_same_runs(tmp_path):
    with MutationStore(path=tmp_path / "one") as a, MutationStore(path=tmp_path / "two") as b:
        s1 = MutationSweep(model=TOY, store=a, runs=3)
        run_sweep(s1, [("shift", 0.02), ("activation", "exponential")])
        s2 = MutationSweep(model=TOY, store=b, runs=3, executor=ProcessExecutor(workers=2))
        run_sweep(s2, [("shift", 0.02), ("activation", "exponential")])
        for h in (s1.original_hash, s1.mutant("shift", 0.02)):
            assert _metrics(a, h) == _metrics(b, h)
        assert [r.status for r in b.runs(s2.mutant("activation", "exponential"))] == ["failed"] * 3


@pytest.mark.slow
def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path):
    logs = tmp_path / "logs"
    calls = tmp_path / "calls.log"
    cmd = [sys.executable, "-m", "faultlab.cli", "mutate", "run", "--models-file", TOY_FILE, "--model", "toy",
           "--operator", "shift", "--value", "0.01", "--value", "0.05", "--runs", "6", "--set", "sleep=0.15",
           "--logs-dir", str(logs)]
    env = {**os.environ, "FAULTLAB_TOY_LOG": str(calls)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = logs / "mutation.sqlite"
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as con:
                    stored = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            except sqlite3.Error:
                stored = 0
            if stored >= 5:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed; make the toy slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as con:
        before = dict(((h, r), m) for h, r, m in con.execute("SELECT config_hash, run, metrics_json FROM runs"))
    assert 5 <= len(before) < 18
    calls_before = len(calls.read_text().splitlines())
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT config_hash, run, metrics_json FROM runs").fetchall()
        distinct = con.execute("SELECT COUNT(DISTINCT config_hash || ':' || run) FROM runs").fetchone()[0]
    assert len(rows) == distinct == 18  # 3 configurations x 6 runs, none twice
    after = {(h, r): m for h, r, m in rows}
    assert all(after[k] == v for k, v in before.items())  # stored runs untouched
    assert len(calls.read_text().splitlines()) - calls_before == 18 - len(before)  # only the missing runs retrained


def test_adaptive_runs_stop_early_and_report_savings(tmp_path, toy_env):
    from faultlab.mutation import adaptive_summary, run_adaptive
    from faultlab.mutation.statistics import GLMTest

    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=TOY, store=store, runs=20)
        outcomes = run_adaptive(sweep, [("shift", 0.2), ("noise", 0.9)], metric="val_accuracy", test=GLMTest(), round_size=5)
        by = {o.operator: o for o in outcomes}
        assert by["shift"].comparison.killed is True and by["shift"].saved_runs == 15  # decided at the first look
        assert by["noise"].comparison.killed is False
        summary = adaptive_summary(sweep, outcomes)
        trained = len(_calls(toy_env))
        assert summary.trained == trained and summary.saved == 60 - trained > 0
        # the decision used only runs below the look: no mutant has more stored runs than it was charged for
        assert len(store.runs(sweep.mutant("shift", 0.2))) == 5


def test_threshold_search_on_stored_runs_reuses_points(tmp_path, toy_env):
    from faultlab.mutation import search_threshold
    from faultlab.mutation.statistics import GLMTest

    with MutationStore(path=tmp_path) as store:
        sweep = MutationSweep(model=TOY, store=store, runs=4)
        res = search_threshold(sweep, "shift", metric="val_accuracy", test=GLMTest(), precision=0.01)
        assert res.killable and 0 < res.threshold <= 0.1  # noise SD is 0.01: a shift of a few hundredths kills
        n = len(_calls(toy_env))
        assert n == 4 * (1 + len(res.evaluated))
        again = search_threshold(sweep, "shift", metric="val_accuracy", test=GLMTest(), precision=0.01)
        assert again.threshold == res.threshold and len(_calls(toy_env)) == n  # nothing retrained
        with pytest.raises(FaultlabError, match="not numeric"):
            search_threshold(sweep, "activation", metric="val_accuracy", test=GLMTest())


def test_model_references_and_executor_choice(tmp_path):
    from faultlab.cli.mutate import _executor
    from faultlab.executors import InProcessExecutor

    fn = ModelRef(name=f"{TOY_FILE}:toy").load()  # file.py:function, no MODEL_TYPES lookup needed
    assert fn.__name__ == "toy"
    assert ModelRef(name="toy", models_file=TOY_FILE).load() is fn
    with pytest.raises(FaultlabError, match="module:function"):
        ModelRef(name="toy").load()
    with pytest.raises(FaultlabError, match="cannot import module"):
        ModelRef(name="no_such_module_xyz:f").load()
    assert isinstance(_executor("local", 1), InProcessExecutor)
    assert isinstance(_executor("local", 2), ProcessExecutor)
    with pytest.raises(FaultlabError, match="--executor 'dask'"):
        _executor("dask", 2)
    with pytest.raises(FaultlabError, match="at least 1"):
        _executor("local", 0)


def test_editing_a_helper_beside_the_function_starts_fresh(tmp_path):
    """The source hash covers the training function's whole file: a changed data loader is not served old runs."""
    from faultlab.mutation.models import source_hash

    def load(text: str):
        import importlib.util

        p = tmp_path / "subject_mod.py"
        p.write_text(text)
        spec = importlib.util.spec_from_file_location(f"subject_mod_{abs(hash(text))}", p)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return source_hash(mod.train)  # as a sweep does when it starts, before the file changes again

    base = "def load_data():\n    return list(range({n}))\n\n\ndef train(lr=0.1):\n    return len(load_data()) * lr\n"
    a, b, again = load(base.format(n=50)), load(base.format(n=20)), load(base.format(n=50))
    assert a != b  # only the helper changed
    assert a == again  # same file, same hash: runs are reused


def test_editing_a_local_module_the_file_imports_starts_fresh(tmp_path, monkeypatch):
    """User modules imported by the training file (``import x`` or ``from x import f``) are in the hash; installed packages are not."""
    import importlib.util
    import sys

    from faultlab.mutation.models import source_hash

    pkg = tmp_path / "helpers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .scaling import SCALE\n")
    (pkg / "scaling.py").write_text("SCALE = 2\n")
    (tmp_path / "mydata.py").write_text("def load():\n    return list(range(50))\n")
    # an installed package that happens to live below the file's directory (a venv beside the project)
    installed = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    installed.mkdir(parents=True)
    (installed / "vendored_pkg.py").write_text("ONE = 1\n")
    (tmp_path / "train_mod.py").write_text(
        "import numpy as np\nimport mydata\nimport vendored_pkg\nfrom helpers import SCALE\n\n\n"
        "def train(lr=0.1):\n    return len(mydata.load()) * lr * SCALE * float(np.ones(1)[0]) * vendored_pkg.ONE\n"
    )
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.syspath_prepend(str(tmp_path))

    def fresh_hash() -> str:
        for name in ("mydata", "helpers", "helpers.scaling", "vendored_pkg"):
            sys.modules.pop(name, None)
        spec = importlib.util.spec_from_file_location("train_mod_under_test", tmp_path / "train_mod.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return source_hash(mod.train)

    base = fresh_hash()
    assert fresh_hash() == base  # nothing changed: runs are reused
    (tmp_path / "mydata.py").write_text("def load():\n    return list(range(20))\n")
    edited_module = fresh_hash()
    assert edited_module != base  # `import mydata`
    (pkg / "scaling.py").write_text("SCALE = 3\n")
    edited_package = fresh_hash()
    assert edited_package != edited_module  # reached through the package's __init__
    (tmp_path / "notes.py").write_text("X = 1\n")  # beside the file but not imported: no effect
    assert fresh_hash() == edited_package, "a file the training file does not import changed the hash"
    (installed / "vendored_pkg.py").write_text("ONE = 1  # upgraded\n")  # an installed package's file: no effect
    assert fresh_hash() == edited_package, "an installed package's file changed the hash"


def test_data_operator_keys_carry_their_definition_revision():
    """Runs of the data operators' older definitions are not reused; other keys are as they were."""
    import hashlib
    import json

    from faultlab.mutation.operators import DATA_OPERATOR_REVISION, DATA_OPERATOR_REVISIONS, DATA_OPERATORS
    from faultlab.mutation.store import config_hash

    def key(**extra):  # the key's formula written out: sha256 of the sorted JSON, 24 hex digits
        blob = {"source": "abc", "model": "m", "fixed": {"epochs": 2}, "seed": 0, **extra}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:24]

    common = dict(source_hash="abc", model="m", fixed={"epochs": 2}, base_seed=0)
    assert DATA_OPERATOR_REVISION >= 3 and set(DATA_OPERATOR_REVISIONS) == set(DATA_OPERATORS)
    assert config_hash(**common, operator=None, value=None) == key(operator=None, value=None)
    assert config_hash(**common, operator="learning_rate", value=0.1) == key(operator="learning_rate", value=0.1)
    got = config_hash(**common, operator="change_label", value=10.0)
    assert got == key(operator="change_label", value=10.0, definition=2)  # unchanged by revision 3: runs reused
    assert got != key(operator="change_label", value=10.0)  # the key before the definitions changed
    # revision 3 changed deletion of regression labels (per SD bucket, not a share of all samples)
    deleted = config_hash(**common, operator="delete_training_data", value=10.0)
    assert deleted == key(operator="delete_training_data", value=10.0, definition=3)
    assert deleted != key(operator="delete_training_data", value=10.0, definition=2)
