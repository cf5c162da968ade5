"""``faultlab rnn build`` rerun: with every requested abstraction stored, nothing is loaded, profiled or written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnn_cli_helpers import run


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def _table_rows(out: str) -> list[list[str]]:
    """The data rows of the rich table printed by ``build`` (lines between │ ... │)."""
    return [[c.strip() for c in ln.strip("│ ").split("│")] for ln in out.splitlines() if ln.startswith("│")]


@pytest.fixture
def no_work(monkeypatch):
    """Make every way of recomputing fail loudly, and count the attempts."""
    import faultlab.rnn.abstraction as abstraction
    import faultlab.rnn.analysis as analysis
    import faultlab.rnn.profile as profile
    import faultlab.rnn.subjects as subjects

    calls: list[str] = []

    def forbid(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} called on a rerun with nothing to do")
        return f

    monkeypatch.setattr(subjects, "load_model", forbid("load_model"))
    monkeypatch.setattr(analysis, "load_split_data", forbid("load_split_data"))
    monkeypatch.setattr(analysis, "check_fits", forbid("check_fits"))
    monkeypatch.setattr(profile, "profile_model", forbid("profile_model"))
    monkeypatch.setattr(abstraction, "sweep_components", forbid("sweep_components"))
    return calls


def test_rerun_with_nothing_to_do_loads_nothing_and_leaves_the_store_untouched(capsys, gru_subject, tmp_path, request):
    out = tmp_path / "b"
    args = ["build", "--model", gru_subject.path, "--pca", "4", "--start", "2", "--end", "8", "--step", "3",
            "--limit", "120", "--out", out]
    code, first, err = run(capsys, *args)
    assert code == 0, err
    before = _snapshot(out)
    stored = pd.read_csv(out / "abstraction.csv")
    assert list(stored["m"]) == [2, 5, 8]

    calls = request.getfixturevalue("no_work")
    code, second, err = run(capsys, *args)
    assert code == 0, err
    assert calls == []
    assert _snapshot(out) == before  # same bytes, not even rewritten
    # the same table: every row as the first run printed it, and as stored in abstraction.csv
    assert _table_rows(second) == _table_rows(first) and len(_table_rows(second)) == 3
    for row, (_, r) in zip(_table_rows(second), stored.iterrows()):
        assert int(row[0]) == r["m"]
        assert float(row[1]) == pytest.approx(r["bic"], abs=0.05)
        assert [float(v) for v in row[2:6]] == pytest.approx(
            [r["stability_mean"], r["stability_weighted"], r["stability_min"], r["stability_max"]], abs=5e-5)

    # a subset of the stored sweep is also served from the store
    code, third, err = run(capsys, *args[:5], "--start", "5", "--end", "8", "--step", "3", "--limit", "120", "--out", out)
    assert code == 0, err
    assert calls == [] and _snapshot(out) == before
    assert _table_rows(third) == _table_rows(first)[1:]


def test_rerun_still_refuses_other_options_and_a_changed_model(capsys, gru_subject, tmp_path, request):
    import shutil

    import torch

    model = tmp_path / "m.pt"
    shutil.copy(gru_subject.path, model)
    shutil.copy(Path(gru_subject.path).with_suffix(".json"), model.with_suffix(".json"))
    out = tmp_path / "b"
    args = ["build", "--model", model, "--pca", "4", "--start", "3", "--end", "3", "--limit", "60", "--out", out]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    before = _snapshot(out)
    calls = request.getfixturevalue("no_work")
    code, _, err = run(capsys, *args[:3], "--pca", "3", *args[5:])
    assert code == 2 and "pca=4" in err and "Traceback" not in err
    state = torch.load(model, weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, model)
    code, _, err = run(capsys, *args)
    assert code == 2 and "changed" in err and "Traceback" not in err
    assert calls == [] and _snapshot(out) == before


def test_stored_abstraction_matches_a_fresh_fit(capsys, gru_subject, tmp_path):
    """What a rerun serves is what fitting from scratch gives (independent: Abstraction.fit, not the sweep)."""
    from faultlab.rnn import Abstraction, profile_model

    out = tmp_path / "b"
    code, _, err = run(capsys, "build", "--model", gru_subject.path, "--pca", "4", "--start", "5", "--end", "5",
                       "--limit", "120", "--out", out)
    assert code == 0, err
    code, _, err = run(capsys, "build", "--model", gru_subject.path, "--pca", "4", "--start", "5", "--end", "5",
                       "--limit", "120", "--out", out)
    assert code == 0, err
    stored = Abstraction.load(out / "abstraction_m005.npz")
    fresh = Abstraction(pca_dims=4, components=5, seed=0).fit(profile_model(gru_subject.model, gru_subject.train.x[:120]).hidden)
    assert stored.bic_ == pytest.approx(fresh.bic_, rel=1e-9)
    np.testing.assert_allclose(stored.gmm_means_, fresh.gmm_means_, rtol=1e-7, atol=1e-9)


def test_extended_sweep_equals_a_fresh_full_sweep(capsys, gru_subject, tmp_path):
    """Resuming with a larger --end fits only the new m, and every result equals a build made in one go."""
    common = ["--model", gru_subject.path, "--pca", "4", "--start", "2", "--step", "3", "--limit", "120"]
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    for out, ends in ((resumed, ("5", "8")), (fresh, ("8",))):
        for end in ends:
            code, _, err = run(capsys, "build", *common, "--end", end, "--out", out)
            assert code == 0, err
    a, b = pd.read_csv(resumed / "abstraction.csv"), pd.read_csv(fresh / "abstraction.csv")
    assert list(a["m"]) == list(b["m"]) == [2, 5, 8]
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    for m in (2, 5, 8):
        with np.load(resumed / f"abstraction_m{m:03d}.npz") as x, np.load(fresh / f"abstraction_m{m:03d}.npz") as y:
            assert sorted(x.files) == sorted(y.files)
            for k in x.files:
                np.testing.assert_array_equal(x[k], y[k])
