"""The tensorflow backend: the same model files and fault lists give the same outcome counts as the torch backend.

Covers the sequential and the branching model and a Keras-2 ``.h5`` with an LSTM, each with weight
and activation faults; the tensorflow side runs in one subprocess (a process has one Keras backend).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faultlab.faults import Fault, FaultList

HERE = Path(__file__).parent
DATA = {"seq": "digits", "branchy": "digits", "lstm_h5": "digits-seq"}


def _fault_list(model_path: Path, data: str, tmp: Path) -> Path:
    """Two faults per weight and activation site, on exponent and sign bits (23..31)."""
    from faultlab.datasets import load_dataset
    from faultlab.targets.keras import KerasTarget, load_keras_model

    t = KerasTarget(load_keras_model(model_path))
    t.trace(t.prepare(load_dataset(data, "test").x[:1]))
    rng = np.random.default_rng(3)
    faults = []
    for s in t.sites():
        for _ in range(2):
            idx = tuple(int(rng.integers(n)) for n in s.shape)
            faults.append(Fault(len(faults), s.name, idx, (int(rng.integers(23, 32)),), s.kind))
    return FaultList.of(faults).to_csv(tmp / f"{model_path.stem}_faults.csv")


@pytest.fixture(scope="module")
def both_backends(model_files, keras2_lstm_h5, tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tf_campaign import campaign_counts

    tmp = tmp_path_factory.mktemp("backends")
    files = {**model_files, "lstm_h5": keras2_lstm_h5[0]}
    jobs = {k: (files[k], _fault_list(files[k], DATA[k], tmp)) for k in DATA}
    argv = []
    for k, (model, faults) in jobs.items():
        argv += [str(model), str(faults), str(tmp / f"tf_{k}"), DATA[k]]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(HERE / "tf_campaign.py"), *argv], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tf = dict(zip(jobs, json.loads(proc.stdout.strip().splitlines()[-1])))
    th = {k: campaign_counts(str(m), str(f), str(tmp / f"torch_{k}"), DATA[k]) for k, (m, f) in jobs.items()}
    return jobs, tf, th


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("which", list(DATA))
def test_same_counts_on_tensorflow_and_torch_backends(which, both_backends):
    jobs, tf, th = both_backends
    a, b = tf[which], th[which]
    assert a["backend"] == "tensorflow" and b["backend"] == "torch"
    assert a["restored"] and b["restored"]
    assert a["clean_top1"] == pytest.approx(b["clean_top1"])
    assert {f.site for f in FaultList.from_csv(jobs[which][1])} == {"weight", "activation"}
    assert a["rows"] == b["rows"]
    # the faults matter: some change the top-1 class, some do not
    sdc, n = sum(r[4] for r in b["rows"]), sum(r[1] for r in b["rows"])
    assert 0 < sdc < n
