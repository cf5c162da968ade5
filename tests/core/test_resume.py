"""kill -9 in the middle of a campaign, rerun the same command: nothing lost, nothing counted twice."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from faultlab.faults import Fault, FaultList
from faultlab.models import pretrained_digits_cnn, pretrained_digits_path
from faultlab.planning import RandomPlanner
from faultlab.targets import make_target


def count(db: Path) -> int:
    try:
        con = sqlite3.connect(db, timeout=5)
        n = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        con.close()
        return int(n)
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill9_and_resume_equals_uninterrupted(tmp_path):
    model = pretrained_digits_cnn()
    weights = pretrained_digits_path()
    target = make_target(model)
    faults = RandomPlanner(n=640, site_kind="weight").plan(target.sites(), seed=5).faults
    fl = tmp_path / "faults.csv"
    faults.to_csv(fl)

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "faultlab", "run", "--model", "faultlab.models:digits_cnn", "--weights", str(weights),
                "--data", "digits", "--limit", "100", "--engine", "exact", "--faults", str(fl), "--out", str(out)]

    killed = tmp_path / "killed"
    db = killed / "campaign.sqlite"
    proc = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and count(db) < 64:
        time.sleep(0.02)
    assert proc.poll() is None, "the campaign finished before it could be killed; make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = count(db)
    assert 0 < partial < len(faults)

    r = subprocess.run(cmd(killed), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "resumed campaign" in r.stdout
    assert f"{len(faults) - partial} faults run now" in r.stdout

    fresh = tmp_path / "fresh"
    r2 = subprocess.run(cmd(fresh), capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr

    a = pd.read_csv(killed / "report.csv")
    b = pd.read_csv(fresh / "report.csv")
    assert len(a) == len(faults) and a["inj_id"].is_unique
    pd.testing.assert_frame_equal(a, b)
