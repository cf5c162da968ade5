"""``faultlab mutate run`` / ``analyze``: reports with the documented columns, one-line errors with exit status 2."""
from __future__ import annotations

import base64
import csv
import math
import re
import subprocess
import sys

import pytest

from .conftest import EXAMPLES, TOY_FILE


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "faultlab.cli", "mutate", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200", **(env or {})})


def _one_line_error(res: subprocess.CompletedProcess, pattern: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_run_and_analyze_reports(tmp_path):
    logs = tmp_path / "logs"
    res = _cli("run", "--models-file", TOY_FILE, "--model", "toy", "--operator", "shift", "--operator", "activation",
               "--runs", "4", "--logs-dir", str(logs))
    assert res.returncode == 0, res.stderr
    assert "killed" in res.stdout and "killability" in res.stdout
    out_csv, runs_csv, html = tmp_path / "r.csv", tmp_path / "runs.csv", tmp_path / "r.html"
    res = _cli("analyze", str(logs), "--csv", str(out_csv), "--runs-csv", str(runs_csv), "--html", str(html))
    assert res.returncode == 0, res.stderr
    with out_csv.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["operator", "value", "setting", "runs_original", "runs_mutant", "mean_original",
                                 "mean_mutant", "std_original", "std_mutant", "p_value", "effect_size", "power", "killed",
                                 "triviality"]
    assert {r["setting"] for r in rows} == {"--seed 0"} and "triviality" in res.stdout
    ops = {r["operator"] for r in rows}
    assert ops == {"shift", "activation"}
    failed = [r for r in rows if r["value"] == "exponential"][0]  # every run of this mutant crashes
    assert failed["runs_mutant"] == "0" and failed["killed"] == ""
    decided = [r for r in rows if r["killed"]]
    assert {r["killed"] for r in decided} <= {"True", "False"} and "True" in {r["killed"] for r in decided}
    for r in decided:
        p = float(r["p_value"])
        assert 0 <= p <= 1 and (p == 0 or len(r["p_value"].split("e")[0].replace(".", "")) > 4)  # not rounded to 3 places
    with runs_csv.open() as f:
        reader = csv.DictReader(f)
        runs = list(reader)
    assert reader.fieldnames == ["operator", "value", "setting", "run", "seed", "status", "metric", "error"]
    assert sum(r["operator"] == "original" for r in runs) == 4
    assert all(r["run"] == r["seed"] for r in runs)  # seed = base seed 0 + run
    crashed = [r for r in runs if r["value"] == "exponential"]
    assert {(r["status"], r["error"]) for r in crashed} == {("failed", "FloatingPointError: diverged with exponential activation")}
    assert "activation=exponential: 4 failed run(s); first error: FloatingPointError: diverged" in res.stdout
    page = html.read_text()
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(imgs) == 2 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "src='http" not in page and 'src="http' not in page  # self-contained


def test_undecided_mutants_say_why(tmp_path):
    """A mutant whose every run trains to NaN is undecided, counts as not killed, and the output says so and why."""
    logs = tmp_path / "logs"
    res = _cli("run", "--models-file", TOY_FILE, "--model", "toy_nan", "--operator", "activation", "--runs", "3", "--logs-dir", str(logs))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("undecided"))
    assert "counted as not killed" in line and "--metric" in line
    assert "activation=exponential: mutant runs: 3 with val_accuracy NaN or infinite" in line, line
    assert line.count("=") == 1  # only that mutant
    n = int(re.search(r"(\d+) runs stored in .* \((\d+) trained now, 0 already stored\)", res.stdout).group(1))
    again = _cli("run", "--models-file", TOY_FILE, "--model", "toy_nan", "--operator", "activation", "--runs", "3", "--logs-dir", str(logs))
    assert f"{n} runs stored in" in again.stdout and f"(0 trained now, {n} already stored)" in again.stdout, again.stdout
    res = _cli("analyze", str(logs), "--metric", "loss")
    assert "activation=exponential: mutant runs: 3 with loss NaN" in res.stdout, res.stdout


def test_bad_input_one_line_exit_2(tmp_path):
    logs = str(tmp_path / "logs")
    _one_line_error(_cli("run", "--models-file", TOY_FILE, "--model", "toy", "--operator", "shfit", "--runs", "2",
                         "--logs-dir", logs), r"unknown operator")
    _one_line_error(_cli("run", "--models-file", TOY_FILE, "--model", "toy", "--operator", "shift", "--value", "99",
                         "--runs", "2", "--logs-dir", logs), r"outside its domain")
    _one_line_error(_cli("run", "--models-file", TOY_FILE, "--model", "broken", "--operator", "width", "--runs", "2",
                         "--logs-dir", logs), r"original configuration failed in all 2 .*always fails")
    _one_line_error(_cli("run", "--models-file", TOY_FILE, "--model", "toy", "--operator", "use_bias", "--runs", "2",
                         "--metric", "val_f1", "--logs-dir", logs), r"--metric 'val_f1': not in the training history")
    _one_line_error(_cli("analyze", str(tmp_path / "empty")), r"no mutation.sqlite")


def test_options_are_checked_before_training(tmp_path):
    calls = tmp_path / "calls.log"
    env = {"FAULTLAB_TOY_LOG": str(calls)}
    base = ("run", "--models-file", TOY_FILE, "--model", "toy", "--operator", "shift", "--runs", "2",
            "--logs-dir", str(tmp_path / "logs"))
    for extra, pattern in ((("--search", "--precision", "0"), r"--precision 0\.0: must be greater than 0"),
                           (("--search", "--precision", "-1"), r"--precision -1\.0: must be greater than 0"),
                           (("--alpha", "2"), r"--alpha 2\.0: must be between 0 and 1"),
                           (("--direction", "up"), r"--direction 'up'"),
                           (("--min-effect", "-1"), r"--min-effect -1\.0: must be 0 or more"),
                           (("--adaptive", "--round-size", "0"), r"--round-size 0: must be at least 1"),
                           (("--set", "width=abc"), r"--set width=abc: expected an integer"),
                           (("--set", "use_bias=3"), r"--set use_bias=3: expected true or false")):
        _one_line_error(_cli(*base, *extra, env=env), pattern)
    assert not calls.exists()  # nothing trained
    _one_line_error(_cli(*base, "--metric", "nosuch", env=env), r"--metric 'nosuch': not in the training history")
    assert len(calls.read_text().splitlines()) == 1  # failed at the first finished run, not after the sweep
    _one_line_error(_cli(*base, "--metric", "nosuch", env=env), r"--metric 'nosuch'")
    assert len(calls.read_text().splitlines()) == 1  # runs stored: checked before training


@pytest.mark.parametrize("wal", [False, True])
def test_analyze_leaves_a_foreign_sqlite_file_alone(tmp_path, wal):
    import sqlite3

    db = tmp_path / "campaign.sqlite"
    con = sqlite3.connect(db)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE results (fault INTEGER, outcome TEXT)")
    con.execute("INSERT INTO results VALUES (1, 'masked')")
    con.commit()
    con.close()
    before = db.read_bytes()
    _one_line_error(_cli("analyze", str(db)), r"campaign\.sqlite: not a faultlab mutation store")
    assert db.read_bytes() == before
    with sqlite3.connect(db) as con:
        assert [n for (n,) in con.execute("SELECT name FROM sqlite_master")] == ["results"]
    junk = tmp_path / "logs" / "mutation.sqlite"
    junk.parent.mkdir()
    junk.write_text("not a database")
    _one_line_error(_cli("analyze", str(junk.parent)), r"mutation\.sqlite: not a readable SQLite database")
    assert junk.read_text() == "not a database"


def test_rerun_retries_failed_runs(tmp_path):
    marker = tmp_path / "server_down"
    marker.touch()
    env = {"FAULTLAB_TOY_FLAKY": str(marker)}
    args = ("run", "--models-file", TOY_FILE, "--model", "flaky", "--operator", "shift", "--value", "0.05", "--runs", "3",
            "--logs-dir", str(tmp_path / "logs"))
    _one_line_error(_cli(*args, env=env), r"failed in all 3 stored run\(s\) .*transient.*then rerun: failed runs are retried")
    marker.unlink()
    res = _cli(*args, env=env)
    assert res.returncode == 0, res.stderr
    assert "6 runs stored" in res.stdout and "failed run" not in res.stdout and "3/3 " in res.stdout


def test_list_operators_and_mann_whitney_warning(tmp_path):
    res = _cli("run", "--models-file", TOY_FILE, "--model", "toy_val", "--logs-dir", str(tmp_path), "--list-operators")
    assert res.returncode == 0, res.stderr
    assert "remove_validation_set (removes validation_split)" in res.stdout
    logs = str(tmp_path / "logs")
    res = _cli("run", "--models-file", TOY_FILE, "--model", "toy", "--operator", "shift", "--value", "0.2", "--runs", "3",
               "--test", "mann-whitney", "--logs-dir", logs)
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "smallest attainable p-value is 0.1" in warnings[0] and "at least 4 runs" in warnings[0]
    assert "survived" in res.stdout  # a shift of 20 SD cannot be killed with 3 runs: the warning was right
    res = _cli("analyze", logs, "--test", "mann-whitney")
    assert res.returncode == 0 and len([ln for ln in res.stderr.splitlines() if "warning" in ln]) == 1
    res = _cli("analyze", logs, "--test", "welch")
    assert "warning" not in res.stderr


@pytest.mark.slow
def test_small_sweep_of_a_shipped_example(tmp_path):
    """Two operators, three runs, one epoch, on the PyTorch example (data operators included)."""
    logs = tmp_path / "logs"
    res = _cli("run", "--models-file", str(EXAMPLES / "torch_mlp_digits.py"), "--model", "MLP", "--operator", "use_bias",
               "--operator", "disable_batching", "--runs", "3", "--set", "epochs=1", "--metric", "test_accuracy",
               "--logs-dir", str(logs))
    assert res.returncode == 0, res.stderr
    assert "18 runs stored" not in res.stdout and "9 runs stored" in res.stdout
    res = _cli("analyze", str(logs), "--metric", "test_accuracy", "--csv", str(tmp_path / "r.csv"))
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [(r["operator"], r["runs_mutant"]) for r in rows] == [("use_bias", "3"), ("disable_batching", "3")]
    assert all(math.isfinite(float(r["mean_mutant"])) for r in rows)
    from faultlab.mutation import MutationStore, analyze

    with MutationStore.open_existing(logs) as store:  # per-input outcomes were stored, so triviality is known
        result = analyze(store, metric="test_accuracy")
    assert all(0.0 <= m.triviality <= 1.0 for m in result.mutants)
