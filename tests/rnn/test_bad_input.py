"""Bad input to the ``faultlab rnn`` analysis commands: one ``error:`` line, exit 2, nothing written into --out."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnn_cli_helpers import build_into, run


def refused(capsys, needle: str, *args: object) -> str:
    """Run a command that must fail with exactly one ``error:`` line containing ``needle``."""
    code, _, err = run(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def files(gru_subject, tmp_path_factory) -> dict[str, Path]:
    """Small .npz files (good, NaN, out-of-range labels, 5 features, flat) and a file to put --out below."""
    d = tmp_path_factory.mktemp("bad")
    x, y = gru_subject.train.x[:40], gru_subject.train.y[:40]
    xt, yt = gru_subject.test.x[:30], gru_subject.test.y[:30]
    np.savez(d / "train.npz", x=x, y=y)
    np.savez(d / "test.npz", x=xt, y=yt)
    nan = x.copy()
    nan[3, 2, 1] = np.nan
    np.savez(d / "nan.npz", x=nan, y=y)
    np.savez(d / "lab99.npz", x=x, y=np.full(len(y), 99))
    np.savez(d / "f5.npz", x=x[:, :, :5], y=y)
    np.savez(d / "flat.npz", x=xt.reshape(len(xt), -1), y=yt)
    (d / "afile").write_text("not a directory\n")
    return {p.stem: p for p in d.iterdir()}


# ----------------------------------------------------------------- build: nothing left behind
@pytest.mark.parametrize("extra, needle", [
    (["--pca", "0"], "--pca 0"),
    (["--pca", "17"], "--pca 17"),            # the subject's hidden size is 16
    (["--limit", "0"], "--limit 0"),
    (["--limit", "-5"], "--limit -5"),
    (["--data", "nope"], "--data nope"),
    (["--end", "900", "--step", "400", "--limit", "50"], "--end 900"),
    (["--start", "3", "--end", "2"], "--start 3"),
])
def test_failed_build_writes_nothing_and_the_fixed_rerun_works(capsys, gru_subject, tmp_path, extra, needle):
    out = tmp_path / "b"
    refused(capsys, needle, "build", "--model", gru_subject.path, "--out", out, *extra)
    assert not out.exists()
    code, _, err = run(capsys, "build", "--model", gru_subject.path, "--pca", "4", "--end", "3", "--limit", "60", "--out", out)
    assert code == 0, err
    meta = json.loads((out / "build.json").read_text())
    assert meta["pca"] == 4 and meta["hidden_size"] == 16 and len(meta["model_sha256"]) == 64


def test_missing_model_writes_nothing(capsys, tmp_path):
    refused(capsys, "--model", "build", "--model", tmp_path / "nope.pt", "--out", tmp_path / "b")
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------- data that does not fit the model
def test_data_with_other_features_is_one_line(capsys, gru_subject, files, tmp_path):
    line = refused(capsys, "--data", "build", "--model", gru_subject.path, "--data", files["f5"], "--test-data", files["test"],
                   "--out", tmp_path / "b")
    assert "5 features per step" in line and "expects 8" in line
    refused(capsys, "--test-data", "markov", "--model", gru_subject.path, "--data", files["train"], "--test-data", files["f5"], "-c", "3")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("cmd", ["build", "localize", "markov"])
def test_labels_outside_the_models_classes_are_refused(capsys, gru_subject, files, tmp_path, cmd):
    extra = ["--out", tmp_path / "o"] if cmd != "markov" else []
    line = refused(capsys, "lab99.npz", cmd, "--model", gru_subject.path, "--data", files["lab99"], "--test-data", files["test"], *extra)
    assert "0..9" in line
    assert not (tmp_path / "o").exists()


def test_train_refuses_labels_and_bad_options_before_training(capsys, files, tmp_path):
    refused(capsys, "lab99.npz", "train", "--data", files["lab99"], "--test-data", files["test"], "-o", tmp_path / "m")
    refused(capsys, "--lr -1", "train", "--lr", "-1", "-o", tmp_path / "m")
    refused(capsys, "--hidden 0", "train", "--hidden", "0", "-o", tmp_path / "m")
    refused(capsys, "--epochs 0", "train", "--epochs", "0", "-o", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_non_finite_inputs_name_the_file(capsys, gru_subject, files):
    refused(capsys, "--data " + str(files["nan"]), "markov", "--model", gru_subject.path, "--data", files["nan"],
            "--test-data", files["test"], "-c", "3")


def test_data_file_messages(capsys, gru_subject, files, tmp_path):
    line = refused(capsys, "no such file", "markov", "--model", gru_subject.path, "--data", tmp_path / "missing.npz", "-c", "3")
    assert "missing.npz" in line
    refused(capsys, f"--test-data {files['flat']}", "markov", "--model", gru_subject.path, "--data", files["train"],
            "--test-data", files["flat"], "-c", "3")
    refused(capsys, "--test-data", "markov", "--model", gru_subject.path, "--data", files["train"], "-c", "3")


# --------------------------------------------------------------------------- --out below a file
@pytest.mark.parametrize("cmd", [
    ["build"], ["localize"], ["markov", "-c", "3"], ["features", "-c", "3"], ["diff", "--mutant", "MODEL", "-c", "3"],
])
def test_out_below_a_file_is_one_line(capsys, gru_subject, files, cmd):
    cmd = [str(gru_subject.path) if c == "MODEL" else c for c in cmd]
    refused(capsys, "--out", *cmd, "--model", gru_subject.path, "--limit", "40", "--out", files["afile"] / "sub")


def test_train_out_below_a_file_is_one_line(capsys, files):
    refused(capsys, "--out", "train", "--epochs", "1", "-o", files["afile"] / "sub" / "m")


# ------------------------------------------------------------------------------ model files
def test_pickled_module_needs_trust(capsys, gru_subject, tmp_path):
    import torch

    path = tmp_path / "whole.pt"
    torch.save(gru_subject.model, path)
    line = refused(capsys, "pickled", "markov", "--model", path, "-c", "3", "--limit", "40")
    assert "--trust" in line
    code, out, err = run(capsys, "markov", "--model", path, "-c", "3", "--limit", "40", "--trust")
    assert code == 0, err
    assert "coverage" in out


def test_state_dict_of_another_architecture_is_one_line(capsys, gru_subject, tmp_path):
    import torch

    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    torch.save(cnn.state_dict(), tmp_path / "cnn.pt")
    shutil.copy(gru_subject.path.with_suffix(".json"), tmp_path / "cnn.json")
    line = refused(capsys, "do not match cnn.json", "markov", "--model", tmp_path / "cnn.pt", "-c", "3")
    assert "missing" in line and "unexpected" in line


# ----------------------------------------------------------------------- stored abstractions
@pytest.fixture(scope="module")
def small_build(gru_subject, tmp_path_factory) -> Path:
    return build_into(tmp_path_factory.mktemp("small-build"), gru_subject.path, "--pca", 4, "--start", 3, "--end", 3, "--limit", 60)


def test_build_dir_of_another_model_or_missing_is_refused(capsys, gru_subject, small_build, tmp_path):
    from faultlab.rnn import RecurrentClassifier, save_model

    other = save_model(RecurrentClassifier(arch="gru", input_size=8, hidden_size=16, n_classes=10), tmp_path / "other")
    refused(capsys, "--build", "markov", "--model", other, "--build", small_build, "-c", "3", "--limit", "60")
    refused(capsys, "no such directory", "markov", "--model", gru_subject.path, "--build", tmp_path / "nodir", "-c", "3")
    code, _, err = run(capsys, "markov", "--model", gru_subject.path, "--build", small_build, "-c", "3", "--limit", "60")
    assert code == 0, err


def test_damaged_abstraction_is_one_line(capsys, gru_subject, small_build, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(small_build, d)
    npz = d / "abstraction_m003.npz"
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["gmm_means_"] = arrays["gmm_means_"][:, :2]
    np.savez(npz, **arrays)
    refused(capsys, "damaged", "markov", "--model", gru_subject.path, "--build", d, "-c", "3", "--limit", "60")


# ----------------------------------------------------------------------------- range checks
def test_diff_options_name_the_right_option(capsys, gru_subject, tmp_path):
    refused(capsys, "--mutant", "diff", "--model", gru_subject.path, "--mutant", tmp_path / "nope.pt")
    refused(capsys, "--top -2", "diff", "--model", gru_subject.path, "--mutant", gru_subject.path, "--top", "-2")
    refused(capsys, "--fault", "diff", "--model", gru_subject.path, "--fault", "rnn.weight_hh_l0,(200,1),30", "--limit", "40")
    refused(capsys, "-k 0", "localize", "--model", gru_subject.path, "-k", "0", "--out", tmp_path / "l")
    assert not (tmp_path / "l").exists()


def test_help_describes_the_seed_and_trust(capsys):
    _, out, _ = run(capsys, "train", "--help")
    assert "SimNN" not in out and "initial weights" in out
    _, out, _ = run(capsys, "build", "--help")
    assert "SimNN" not in out and "--trust" in out and "pickled" in out
