"""The #9 commands: bad input exits 2 with one line; a run resumes without counting anything twice."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from faultlab.cli import app


def _faultlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from faultlab.cli import main; main(sys.argv[1:])", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, needle", [
    (["rnn", "flip", "--classes", "1"], "--classes"),
    (["rnn", "flip", "--rate", "1.5"], "--rate"),
    (["rnn", "influence", "--method", "magic"], "--method"),
    (["rnn", "influence", "--retrain-percents", "0"], "--retrain-percents"),
    (["rnn", "influence", "--scope", "everything"], "--scope"),
    (["rnn", "backdoor", "--poison", "2"], "--poison"),
    (["rnn", "segment", "--seeds", "0"], "--seeds"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    res = _faultlab(*args, *(["--out", str(tmp_path / "o")] if args[1] not in ("flip",) else []))
    assert res.returncode == 2
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3  # one message, wrapped at most


@pytest.mark.slow
def test_segment_command_reports_baselines_and_resumes(tmp_path):
    out = tmp_path / "seg"
    args = ["rnn", "segment", "--seeds", "1", "--train", "150", "--epochs", "5", "--components", "10", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    import pandas as pd

    assert "original" in first.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary["strategy"].tolist() == ["original", "segment", "random-position", "fresh-samples"]
    count = sqlite3.connect(out / "results.sqlite").execute("select count(*) from rows").fetchone()[0]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0
    assert sqlite3.connect(out / "results.sqlite").execute("select count(*) from rows").fetchone()[0] == count == 1
    other = CliRunner().invoke(app, [*args[:-2], "--width", "2", "--out", str(out)])
    assert other.exit_code != 0  # another configuration never mixes into stored results
