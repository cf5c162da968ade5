"""Bad input to flip/influence/datagen/segment/backdoor: one ``error:`` line before any work, nothing written into --out."""
from __future__ import annotations

import math

import pytest

from rnn_cli_helpers import run


@pytest.mark.parametrize("args, needle", [
    (["flip", "--epochs", "0"], "--epochs 0"),
    (["flip", "--hidden", "0"], "--hidden 0"),
    (["flip", "--rate", "0"], "--rate 0"),
    (["flip", "--classes", "1,12"], "class 12"),
    (["flip", "--data", "nope"], "--data nope"),
    (["influence", "--data", "nope"], "--data nope"),
    (["influence", "--epochs", "0"], "--epochs 0"),
    (["influence", "--pca", "0"], "--pca 0"),
    (["influence", "--classes", "1,12"], "class 12"),
    (["datagen", "--models", "0"], "--models 0"),
    (["datagen", "--per-target", "0"], "--per-target 0"),
    (["datagen", "--epochs", "0"], "--epochs 0"),
    (["datagen", "--data", "nope.npz"], "--data nope.npz"),
    (["segment", "--width", "20"], "--width 20"),
    (["segment", "--components", "0"], "--components 0"),
    (["segment", "--epochs", "0"], "--epochs 0"),
    (["backdoor", "--train", "1"], "--train 1"),
    (["backdoor", "--train", "2", "--components", "30"], "--train 2"),
])
def test_bad_options_fail_in_one_line_before_writing(capsys, tmp_path, args, needle):
    out = tmp_path / "o"
    code, _, err = run(capsys, *args, "--out", out)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["flip", "influence", "datagen", "segment", "backdoor"])
def test_out_below_a_file_is_one_line(capsys, tmp_path, cmd):
    (tmp_path / "afile").write_text("x\n")
    code, _, err = run(capsys, cmd, "--out", tmp_path / "afile" / "sub")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "--out" in lines[0] and "afile" in lines[0], err


def test_a_bad_rerun_leaves_stored_results_alone(capsys, tmp_path):
    from faultlab.rnn.repair_store import ResultStore

    out = tmp_path / "seg"
    with ResultStore(out / "results.sqlite", config={"any": 1}) as store:
        store.put({"seed=0000": {"rows": [1]}})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, _ = run(capsys, "segment", "--width", "20", "--out", out)
    assert code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_one_seed_shows_no_spread(capsys):
    import pandas as pd

    from faultlab.cli.rnn_repair import _print_table
    from faultlab.rnn.repair_store import mean_pm

    assert mean_pm(0.5, math.nan) == "0.500"
    assert mean_pm(0.5, 0.1) == "0.500 ± 0.100"
    _print_table(pd.DataFrame([{"method": "kl", "recall_mean": 0.5, "recall_std": math.nan, "seeds": 1}]),
                 title="t", keys=["method"], values=["recall"])
    assert "±" not in capsys.readouterr().out


def test_help_texts_are_filled_in():
    import typer

    from faultlab.cli.rnn import app

    group = typer.main.get_command(app)
    for cmd in ("flip", "influence", "datagen", "segment", "backdoor", "train", "build"):
        params = group.commands[cmd].params  # type: ignore[attr-defined]
        missing = [p.opts[0] for p in params if p.opts and p.opts[0].startswith("--") and not getattr(p, "help", None)]
        assert missing == [], (cmd, missing)
