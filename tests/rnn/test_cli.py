"""``faultlab rnn`` commands of issue #7, run through the real entry point."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rnn_cli_helpers import build_into, run
from faultlab.rnn.abstraction import SWEEP_COLUMNS


@pytest.fixture(scope="module")
def build_dir(gru_subject, tmp_path_factory):
    return build_into(tmp_path_factory.mktemp("build"), gru_subject.path, "--pca", 8, "--start", 2, "--end", 11, "--step", 3)


def test_build_writes_every_m_of_the_sweep(build_dir):
    df = pd.read_csv(build_dir / "abstraction.csv")
    assert tuple(df.columns) == SWEEP_COLUMNS
    assert list(df["m"]) == [2, 5, 8, 11]
    assert df.notna().all().all()
    assert ((df["stability_min"] >= 0) & (df["stability_max"] <= 1)).all()
    assert all((build_dir / f"abstraction_m{m:03d}.npz").exists() for m in df["m"])


def test_build_resumes_and_refuses_other_options(capsys, gru_subject, build_dir):
    before = pd.read_csv(build_dir / "abstraction.csv")
    code, out, _ = run(capsys, "build", "--model", gru_subject.path, "--pca", "8", "--start", "2", "--end", "14", "--step", "3", "--out", build_dir)
    assert code == 0
    after = pd.read_csv(build_dir / "abstraction.csv")
    assert list(after["m"]) == [2, 5, 8, 11, 14]
    pd.testing.assert_frame_equal(after.iloc[:4], before)  # stored rows untouched, not recomputed
    code, _, err = run(capsys, "build", "--model", gru_subject.path, "--pca", "4", "--out", build_dir)
    assert code == 2 and "pca" in err and "Traceback" not in err


@pytest.mark.slow
def test_features_and_compare_features(capsys, gru_subject, build_dir, tmp_path):
    code, out, _ = run(capsys, "features", "--model", gru_subject.path, "--build", build_dir, "--components", "11", "--out", tmp_path)
    assert code == 0
    df = pd.read_csv(tmp_path / "features.csv")
    assert df["feature_set"].tolist() == ["all"] and df["accuracy"].iloc[0] > 0.3 and df["components"].iloc[0] == 11
    code, _, _ = run(capsys, "compare-features", "--model", gru_subject.path, "--build", build_dir, "--components", "8",
                     "--feature-sets", "ID,CS", "--out", tmp_path)
    assert code == 0
    assert pd.read_csv(tmp_path / "compare_features.csv")["feature_set"].tolist() == ["ID", "CS"]
    code, _, err = run(capsys, "compare-features", "--model", gru_subject.path, "--components", "8", "--feature-sets", "ID,XX")
    assert code == 2 and "XX" in err


def test_localize_writes_csv_and_png(capsys, gru_subject, build_dir, tmp_path):
    code, _, _ = run(capsys, "localize", "--model", gru_subject.path, "--build", build_dir, "--components", "11",
                     "--benign", "0", "-k", "4", "--out", tmp_path)
    assert code == 0
    curves = pd.read_csv(tmp_path / "localize_failed.csv")
    assert curves["k"].tolist() == [1, 2, 3, 4]
    assert (np.diff(curves["truth_fraction"]) >= 0).all()  # more neighbours can only add matches
    n_failed = int(np.sum(gru_subject.test_profile.pred != gru_subject.test.y))
    assert len(pd.read_csv(tmp_path / "neighbours_failed.csv")) == 4 * n_failed
    assert (tmp_path / "localize.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "localize", "--model", gru_subject.path, "--benign", "2", "--out", tmp_path)
    assert code == 2 and "--benign" in err


def test_markov_and_diff(capsys, gru_subject, build_dir, tmp_path):
    code, _, _ = run(capsys, "markov", "--model", gru_subject.path, "--build", build_dir, "--components", "8", "--out", tmp_path)
    assert code == 0
    cov = json.loads((tmp_path / "coverage.json").read_text())
    assert 0 < cov["state_coverage"] <= 1 and 0 < cov["transition_coverage"] <= 1
    edges = pd.read_csv(tmp_path / "transitions.csv")
    assert edges.groupby("source")["probability"].sum().round(9).eq(1).all()
    # independent: the stored m=8 abstraction's traces of the training (reference) and test sets, as sets and counts
    from faultlab.rnn import Abstraction

    ab = Abstraction.load(build_dir / "abstraction_m008.npz")
    ref, test = ab.traces(gru_subject.train_profile.hidden), ab.traces(gru_subject.test_profile.hidden)
    ref_states, test_states = set(ref[:, 1:].ravel().tolist()), set(test[:, 1:].ravel().tolist())
    ref_tr = {(a, b) for r in ref.tolist() for a, b in zip(r[:-1], r[1:])}
    test_tr = {(a, b) for r in test.tolist() for a, b in zip(r[:-1], r[1:])}
    assert cov["state_coverage"] == pytest.approx(len(ref_states & test_states) / len(ref_states))
    assert cov["transition_coverage"] == pytest.approx(len(ref_tr & test_tr) / len(ref_tr))
    assert (cov["new_states"], cov["new_transitions"]) == (len(test_states - ref_states), len(test_tr - ref_tr))
    counts: dict = {}
    for r in ref.tolist():
        for a, b in zip(r[:-1], r[1:]):
            counts[(a, b)] = counts.get((a, b), 0) + 1
    assert sorted((int(a), int(b), int(c)) for a, b, c in edges[["source", "target", "count"]].itertuples(index=False)) == sorted(
        (a, b, c) for (a, b), c in counts.items())
    out_of = {a: sum(c for (s, _), c in counts.items() if s == a) for a, _ in counts}
    for a, b, c, p in edges.itertuples(index=False):
        assert p == pytest.approx(counts[(a, b)] / out_of[a])
    code, out, _ = run(capsys, "diff", "--model", gru_subject.path, "--build", build_dir, "--components", "8",
                       "--fault", "rnn.weight_ih_l0,(0,3),30", "--out", tmp_path)
    assert code == 0 and "total variation" in out
    assert pd.read_csv(tmp_path / "diff_states.csv")["change"].abs().sum() > 0
    code, out, _ = run(capsys, "diff", "--model", gru_subject.path, "--build", build_dir, "--components", "8",
                       "--mutant", gru_subject.path, "--out", tmp_path)
    assert code == 0
    assert (pd.read_csv(tmp_path / "diff_states.csv")["change"] == 0).all()  # the same model: nothing moves


@pytest.mark.parametrize("args,needle", [
    (["diff", "--components", "8"], "exactly one"),
    (["diff", "--components", "8", "--fault", "rnn.weight_ih_l0"], "--fault"),
    (["diff", "--components", "8", "--fault", "rnn.nothing,(0,0),1"], "no parameter"),
])
def test_diff_bad_input_exits_2(capsys, gru_subject, args, needle):
    code, _, err = run(capsys, *args, "--model", gru_subject.path)
    assert code == 2 and needle in err and "Traceback" not in err


def test_missing_model_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "features", "--model", tmp_path / "nope.pt", "--components", "4")
    assert code == 2 and "nope" in err


def test_train_saves_a_loadable_subject(capsys, tmp_path):
    from faultlab.rnn import load_model

    code, out, _ = run(capsys, "train", "--arch", "lstm", "--epochs", "1", "--hidden", "8", "-o", tmp_path / "tiny")
    assert code == 0 and "test accuracy" in out
    model = load_model(tmp_path / "tiny.pt")
    assert model.config["arch"] == "lstm" and json.loads((tmp_path / "tiny.json").read_text())["hidden_size"] == 8
