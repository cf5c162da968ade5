"""The hardware-fault CLI as a user runs it: layers, faults generate, run (CSV, YAML, .pt2, pickles), save-outputs."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from faultlab.cli import main
from faultlab.datasets import load_digits
from faultlab.faults import FaultList
from faultlab.models import pretrained_digits_cnn, pretrained_digits_path

MODEL = "faultlab.models:digits_cnn"


@pytest.fixture(scope="module")
def weights():
    pretrained_digits_cnn()
    return str(pretrained_digits_path())


def cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_layers_lists_every_site(weights, capsys):
    code, out, _ = cli(["layers", "--model", MODEL, "--weights", weights], capsys)
    assert code == 0
    for name, p in pretrained_digits_cnn().named_parameters():
        site = name[: -len(".weight")] if name.endswith(".weight") else name
        assert site in out and f"{p.numel():,}" in out
    assert "activation" in out and "(16, 8, 8)" in out  # conv2's output shape


def test_generate_is_seeded_and_uniform(tmp_path, weights, capsys):
    paths = []
    for seed in (1, 1, 2):
        p = tmp_path / f"f{len(paths)}.csv"
        code, _, err = cli(["faults", "generate", "--model", MODEL, "--n", "3000", "--site", "weight", "--seed", str(seed), "-o", str(p)], capsys)
        assert code == 0, err
        paths.append(p)
    assert paths[0].read_text() == paths[1].read_text()
    assert paths[0].read_text() != paths[2].read_text()
    fl = FaultList.from_csv(paths[0])
    df = pd.DataFrame({"layer": [f.layer for f in fl], "bit": [f.bits[0] for f in fl]})
    sizes = {("fc1" if n == "fc1.weight" else n.replace(".weight", "")): p.numel() for n, p in pretrained_digits_cnn().named_parameters()}
    share = df["layer"].value_counts(normalize=True)
    assert abs(share["fc1"] - sizes["fc1"] / sum(sizes.values())) < 0.03  # uniform over elements
    assert df["bit"].between(0, 31).all() and df["bit"].nunique() == 32
    code, _, _ = cli(["faults", "generate", "--model", MODEL, "--n", "50", "--site", "activation", "--layers", "relu3", "--bits", "30-31", "-o", str(tmp_path / "a.csv")], capsys)
    acts = FaultList.from_csv(tmp_path / "a.csv")
    assert code == 0 and {f.layer for f in acts} == {"relu3"} and {f.bits[0] for f in acts} <= {30, 31}



REUSED_RELU = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.fc1, self.fc2 = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(256, 16), nn.Linear(16, 10)
        self.act = nn.ReLU()  # one ReLU module after conv1 and after fc1, as tutorial CNNs often do

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.act(self.conv1(x)).flatten(1))))


def net():
    torch.manual_seed(0)
    return Net()
"""


def test_a_module_called_twice_is_named_by_layers_and_refused_as_a_fault_site(tmp_path, capsys):
    (tmp_path / "reused.py").write_text(REUSED_RELU)
    model = f"{tmp_path / 'reused.py'}:net"
    code, out, err = cli(["layers", "--model", model], capsys)
    assert code == 0, err
    rows = [line.replace("│", " ").split() for line in out.splitlines()]
    assert not any(r[:2] == ["act", "activation"] for r in rows if len(r) > 1)  # two outputs: no one activation site
    assert any(r[:2] == ["fc1", "activation"] for r in rows if len(r) > 1)
    assert "called several times per forward pass: act (2 calls)" in " ".join(out.split())
    csv = tmp_path / "f.csv"
    csv.write_text('Injection,Layer,TensorIndex,Bit,Site\n0,act,"(3,)",30,activation\n')
    code, out, err = cli(["run", "--model", model, "--data", "digits", "--faults", str(csv), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "f.csv" in err and "'act' is called 2 times per forward pass" in err, err
    assert not (tmp_path / "o").exists()

def test_config_run_prints_clean_and_faulty_accuracy(tmp_path, weights, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text("inject_layer:\n  layer_name: fc2\n  fault_type: BitFlip\n  bit_flip_type: SpecificBit\n  bit_number: 31\n  probability: 1.0\n")
    code, out, err = cli(["run", "--model", MODEL, "--weights", weights, "--data", "digits", "--config", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    rep = pd.read_csv(tmp_path / "o" / "report.csv")
    assert len(rep) == 450 and (rep["n_injections"] == 1).all()
    # independent: flip the sign of the chosen logit per input and score
    from faultlab.store import CampaignStore

    with CampaignStore(tmp_path / "o") as st:
        faults = list(st.faults())
    ds = load_digits("test")
    with torch.no_grad():
        logits = pretrained_digits_cnn()(torch.from_numpy(ds.x)).numpy()
    faulty = logits.copy()
    for f in faults:
        faulty[f.input, f.index[0]] = -faulty[f.input, f.index[0]]
    clean_acc = (logits.argmax(1) == ds.y).mean()
    faulty_acc = (faulty.argmax(1) == ds.y).mean()
    assert f"clean accuracy {100 * clean_acc:.2f}%" in out
    assert f"faulty accuracy {100 * faulty_acc:.2f}%" in out
    assert "450 faults, 450 (fault, input) pairs" in " ".join(out.split())  # each config fault hits one input, not 450 x 450 pairs


def test_save_outputs_and_pt2_and_pickles(tmp_path, weights, capsys):
    model = pretrained_digits_cnn()
    ds = load_digits("test").head(30)
    np.savez(tmp_path / "d.npz", x=ds.x, y=ds.y)
    faults = tmp_path / "f.csv"
    faults.write_text('Injection,Layer,TensorIndex,Bit\n7,fc1,"(2, 5)",30\n')
    code, _, err = cli(["run", "--model", MODEL, "--weights", weights, "--data", str(tmp_path / "d.npz"), "--faults", str(faults), "--out", str(tmp_path / "o"), "--save-outputs"], capsys)
    assert code == 0, err
    with torch.no_grad():
        xt = torch.tensor(ds.x)  # torch-owned, aligned storage, as faultlab uses
        clean = model(xt).numpy()
        m2 = copy.deepcopy(model)
        w = m2.fc1.weight.data.numpy()
        w[2, 5] = np.array([w[2, 5]], np.float32).view(np.uint32).__xor__(np.uint32(1 << 30)).view(np.float32)[0]
        faulty = m2(xt).numpy()
    # raw scores from another process history may differ in the last ulp (CPU kernels choose
    # code paths by history and alignment); the engine's own golden/faulty pairs never mix those
    saved_clean = np.load(tmp_path / "o" / "outputs" / "clean.npy")
    saved_faulty = np.load(tmp_path / "o" / "outputs" / "inj_7.npy")
    np.testing.assert_allclose(saved_clean, clean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved_faulty, faulty, rtol=1e-5, atol=1e-5)
    assert np.abs(saved_faulty - saved_clean).max() > 1e-3  # the fault was really applied

    ep = torch.export.export(model, (torch.from_numpy(ds.x[:2]),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(ep, tmp_path / "m.pt2")
    code, _, err = cli(["run", "--model", str(tmp_path / "m.pt2"), "--data", str(tmp_path / "d.npz"), "--faults", str(faults), "--out", str(tmp_path / "o2")], capsys)
    assert code == 0, err
    a = pd.read_csv(tmp_path / "o" / "report.csv").drop(columns=["criterion"])
    b = pd.read_csv(tmp_path / "o2" / "report.csv").drop(columns=["criterion"])
    pd.testing.assert_frame_equal(a, b)

    torch.save(model, tmp_path / "whole.pt")
    code, _, err = cli(["run", "--model", str(tmp_path / "whole.pt"), "--data", str(tmp_path / "d.npz"), "--faults", str(faults), "--out", str(tmp_path / "o3")], capsys)
    assert code == 2 and "--trust-pickle" in err
    code, _, err = cli(["run", "--model", str(tmp_path / "whole.pt"), "--trust-pickle", "--data", str(tmp_path / "d.npz"), "--faults", str(faults), "--out", str(tmp_path / "o3")], capsys)
    assert code == 0, err
    c = pd.read_csv(tmp_path / "o3" / "report.csv").drop(columns=["criterion"])
    pd.testing.assert_frame_equal(a, c)  # the pickled module is the same model: the same outcomes


def test_pt2_with_a_fixed_batch_size_is_refused_before_anything_is_written(tmp_path, weights, capsys):
    """torch.export's default pins the example's batch size: one line that says how to export, exit 2, no --out."""
    ep = torch.export.export(pretrained_digits_cnn(), (torch.zeros(1, 1, 8, 8),))
    torch.export.save(ep, tmp_path / "fixed.pt2")
    faults = tmp_path / "f.csv"
    faults.write_text('Injection,Layer,TensorIndex,Bit\n7,fc1,"(2, 5)",30\n')
    for argv in (["layers"], ["run", "--data", "digits", "--faults", str(faults), "--out", str(tmp_path / "o")]):
        code, _, err = cli([argv[0], "--model", str(tmp_path / "fixed.pt2"), *argv[1:]], capsys)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "batch of two" in err and "dynamic_shapes" in err, err
    assert not (tmp_path / "o").exists()


def test_piped_tables_are_not_cut_to_80_columns(tmp_path):
    """Output into a pipe or file keeps whole cells (rich would cut them to '…' at its default 80 columns)."""
    import os
    import subprocess
    import sys

    from faultlab.faults import Fault, FaultList
    from faultlab.models import pretrained_digits_cnn, pretrained_digits_path

    pretrained_digits_cnn()
    f = tmp_path / "f.csv"
    FaultList.of([Fault(i, "fc1", (i,), (30,), "activation") for i in range(4)]).to_csv(f)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    argv = [sys.executable, "-m", "faultlab.cli", "run", "--model", "faultlab.models:digits_cnn", "--weights", str(pretrained_digits_path()),
            "--data", "digits", "--limit", "50", "--faults", str(f)]
    r = subprocess.run(argv + ["--out", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "masked" in r.stdout and "…" not in r.stdout, r.stdout
    narrow = subprocess.run(argv + ["--out", str(tmp_path / "b")], capture_output=True, text=True, env={**env, "COLUMNS": "50"}, timeout=300)
    assert "…" in narrow.stdout  # the check above can fail: a narrow COLUMNS still cuts


TIME_FIRST_LSTM = """
import torch
from torch import nn


class TimeFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 6)  # no batch_first: its output is (time, batch, features)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):  # x: (N, 8, 8), the digits' rows as 8 steps
        out, _ = self.lstm(x[:, 0].transpose(0, 1))
        return self.fc(out[-1])


def net():
    torch.manual_seed(0)
    return TimeFirst()
"""


def test_layers_says_why_a_time_first_output_is_not_an_activation_site(tmp_path, capsys):
    (tmp_path / "tf.py").write_text(TIME_FIRST_LSTM)
    code, out, err = cli(["layers", "--model", f"{tmp_path / 'tf.py'}:net"], capsys)
    assert code == 0, err
    rows = [line.replace("│", " ").split() for line in out.splitlines()]
    assert not any(r[:2] == ["lstm", "activation"] for r in rows if len(r) > 1)
    assert any(r[:2] == ["fc", "activation"] for r in rows if len(r) > 1)
    assert "first dimension is not the batch (time first): lstm" in " ".join(out.split())
