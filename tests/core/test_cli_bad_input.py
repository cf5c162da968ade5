"""Bad input: one line naming the file/field, exit status 2, no traceback, stored results untouched."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faultlab.cli import main
from faultlab.faults import Fault, FaultList
from faultlab.models import pretrained_digits_cnn, pretrained_digits_path

MODEL = "faultlab.models:digits_cnn"


@pytest.fixture(scope="module")
def weights() -> Path:
    pretrained_digits_cnn()
    return pretrained_digits_path()


@pytest.fixture(scope="module")
def good_faults(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("f") / "faults.csv"
    FaultList.of([Fault(0, "conv1", (1, 0, 1, 1), (30,)), Fault(1, "fc1", (3,), (31,), "activation")]).to_csv(p)
    return p


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    return int(e.value.code or 0), err


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def db_digest(out: Path) -> str:
    import sqlite3

    con = sqlite3.connect(out / "campaign.sqlite")
    rows = con.execute("SELECT * FROM results ORDER BY fault_id").fetchall() + con.execute("SELECT * FROM faults ORDER BY id").fetchall()
    con.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


CSV_HEAD = "Injection,Layer,TensorIndex,Bit\n"


@pytest.mark.parametrize(
    "case,csv_text,expect",
    [
        ("unknown layer", CSV_HEAD + '0,conv9,"(0, 0, 0, 0)",3\n', "unknown weight layer 'conv9'"),
        ("wrong rank", CSV_HEAD + '0,conv1,"(0, 0)",3\n', "rank 2"),
        ("out of bounds", CSV_HEAD + '0,fc1,"(32, 0)",3\n', "out of bounds"),
        ("bit beyond dtype", CSV_HEAD + '0,fc1,"(1, 0)",32\n', "bit 32 is beyond"),
        ("missing column", "Injection,Layer,Bit\n0,fc1,3\n", "missing column(s) TensorIndex"),
        ("bad index", CSV_HEAD + "0,fc1,(a b),3\n", "TensorIndex"),
        ("bad id", CSV_HEAD + 'x,fc1,"(1, 0)",3\n', "Injection 'x'"),
        ("unquoted tuple", CSV_HEAD + "0,fc1,(1, 0),3\n", "expected 4 fields"),
        ("empty list", CSV_HEAD, "no faults"),
        ("activation unknown layer", "Injection,Layer,TensorIndex,Bit,Site\n0,nope,\"(1,)\",3,activation\n", "unknown activation layer"),
    ],
)
def test_bad_fault_lists(case, csv_text, expect, tmp_path, weights, capsys):
    f = write(tmp_path, "f.csv", csv_text)
    code, err = run_cli(["run", "--model", MODEL, "--weights", str(weights), "--data", "digits", "--faults", str(f), "--out", str(tmp_path / "o")], capsys)
    assert code == 2, err
    assert expect in err, err
    assert str(f) in err or "f.csv" in err, f"the message should name the file: {err}"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "yaml_text,expect",
    [
        ("inject_layer: [unclosed\n", "malformed YAML"),
        ("something: 1\n", "inject_layer"),
        ("inject_layer: {layer_name: fc2, fault_type: Explode}\n", "fault_type"),
        ("inject_layer: {layer_name: fc2, bit_flip_type: SpecificBit}\n", "bit_number"),
        ("inject_layer: {layer_name: fc2, bit_flip_type: SpecificBit, bit_number: 40}\n", "beyond"),
        ("inject_layer: {layer_name: fc2, probability: 1.5}\n", "probability"),
        ("inject_layer: {layer_name: nope}\n", "unknown activation layer 'nope'"),
        ("inject_layer: {inject_layer_number: 99}\n", "inject_layer_number 99"),
        ("inject_layer: {layer_name: fc2, probability: 0.0}\n", "would inject nothing"),
        ("inject_layer: {layer_name: fc2, bit_number: 40}\n", "beyond"),  # RandomBit: a bit number is still checked
        ("inject_layer: {layer_name: fc2, bit_number: x}\n", "bit_number must be an integer"),
        ("inject_layer: {layer_name: fc2, bit_flip_type: SpecificBit, bit_position: 32}\n", "inject_layer.bit_position 32 is beyond"),
        ("inject_layer:\n  layer_name: fc2\n  layer_name: fc1\n", "'layer_name' is given twice"),
    ],
)
def test_bad_configs(yaml_text, expect, tmp_path, weights, capsys):
    c = write(tmp_path, "c.yml", yaml_text)
    code, err = run_cli(["run", "--model", MODEL, "--weights", str(weights), "--data", "digits", "--config", str(c), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and expect in err, err
    assert "c.yml" in err, f"the message should name the file: {err}"
    assert len(err.strip().splitlines()) == 1


def test_unknown_config_layer_names_the_field(tmp_path, weights, capsys):
    c = write(tmp_path, "c.yml", "inject_layer: {layer_name: dense_9}\n")
    code, err = run_cli(["run", "--model", MODEL, "--weights", str(weights), "--data", "digits", "--config", str(c), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "c.yml: inject_layer.layer_name: unknown activation layer 'dense_9'" in err, err


def test_csv_bit_minus_one_is_named(tmp_path, weights, capsys):
    f = write(tmp_path, "f.csv", CSV_HEAD + '0,fc1,"(1, 0)",-1\n')
    code, err = run_cli(["run", "--model", MODEL, "--weights", str(weights), "--data", "digits", "--faults", str(f), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "Bit is -1" in err, err


@pytest.mark.parametrize(
    "extra,expect",
    [
        (["--device", "tpu"], "--device 'tpu': expected cpu, cuda or cuda:N"),
        (["--device", "cuda:99"], "--device 'cuda:99'"),  # no GPU here, or not 100 of them
        (["--max-memory", "nan"], "--max-memory 'nan'"),
        (["--max-memory", "inf"], "--max-memory 'inf'"),
        (["--max-memory", "0.5"], "--max-memory '0.5'"),
        (["--engine", "exact", "--max-memory", "abc"], "--max-memory 'abc'"),
        (["--engine", "foo"], "--engine 'foo': expected fast or exact"),
        (["--limit", "-3"], "--limit -3"),
        (["--tolerance", "-1"], "--tolerance -1.0"),
        (["--split", "foo"], "--split 'foo'"),
    ],
)
def test_bad_options_fail_before_the_store_is_touched(extra, expect, tmp_path, weights, good_faults, capsys):
    out = tmp_path / "camp"
    argv = ["run", "--model", MODEL, "--weights", str(weights), "--data", "digits", "--limit", "20", "--faults", str(good_faults), "--out", str(out)]
    assert run_cli(argv, capsys)[0] == 0
    before = (out / "campaign.sqlite").read_bytes()
    code, err = run_cli(argv + extra, capsys)
    assert code == 2 and expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert (out / "campaign.sqlite").read_bytes() == before  # settings and results alike
    code, err = run_cli(argv[:-1] + [str(tmp_path / "fresh")] + extra, capsys)
    assert code == 2 and not (tmp_path / "fresh").exists()


def test_store_paths_and_foreign_files(tmp_path, weights, good_faults, capsys):
    base = ["--model", MODEL, "--weights", str(weights), "--data", "digits", "--limit", "20", "--faults", str(good_faults)]
    # a directory name with a dot is a directory, not a database file
    code, err = run_cli(["run", *base, "--out", str(tmp_path / "lr_0.5")], capsys)
    assert code == 0, err
    assert (tmp_path / "lr_0.5" / "campaign.sqlite").is_file() and (tmp_path / "lr_0.5" / "report.csv").is_file()
    # a file that is not a database: refused in one line and left as it was
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "campaign.sqlite").write_bytes(b"not a database" * 100)
    for argv in (["report", str(junk)], ["run", *base, "--out", str(junk)]):
        code, err = run_cli(argv, capsys)
        assert code == 2 and "not a readable SQLite database" in err, err
        assert len(err.strip().splitlines()) == 1
    assert (junk / "campaign.sqlite").read_bytes() == b"not a database" * 100
    # another program's SQLite database is not given our tables
    import sqlite3

    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE things (a INTEGER)")
    con.commit()
    con.close()
    before = other.read_bytes()
    code, err = run_cli(["report", str(other)], capsys)
    assert code == 2 and "another kind of SQLite database" in err, err
    assert other.read_bytes() == before
    # --out below a file
    code, err = run_cli(["run", *base, "--out", str(other / "x")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_output_files_are_checked_first(tmp_path, weights, capsys):
    gen = ["faults", "generate", "--model", MODEL, "--n", "5"]
    cases = [
        (gen + ["-o", str(tmp_path)], "is a directory"),
        (gen + ["--n", "0", "-o", str(tmp_path / "a.csv")], "--n 0"),
        (gen + ["--bits", "31-23", "-o", str(tmp_path / "a.csv")], "runs backwards"),
        (gen + ["--bits", "23-40", "-o", str(tmp_path / "a.csv")], "--bits 23-40: bit 40 is beyond"),
        (["plan", "--model", MODEL, "--margin", "0.05", "-o", str(tmp_path)], "is a directory"),
        (["show-activations", "--model", MODEL, "--weights", str(weights), "--fault", "conv2,(3, 1, 2, 2),30", "-o", str(tmp_path / "x.txt")], ".png"),
    ]
    for argv, expect in cases:
        code, err = run_cli(argv, capsys)
        assert code == 2 and expect in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_bad_data_and_models(tmp_path, weights, good_faults, capsys):
    base = ["run", "--faults", str(good_faults), "--out", str(tmp_path / "o")]
    np.savez(tmp_path / "shape.npz", x=np.zeros((5, 3, 9, 9), np.float32), y=np.zeros(5, np.int64))
    np.savez(tmp_path / "labels.npz", x=np.zeros((5, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 3, 12]))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    np.savez(tmp_path / "nox.npz", inputs=np.zeros((5, 1, 8, 8), np.float32))
    m = ["--model", MODEL, "--weights", str(weights)]
    cases = [
        (m + ["--data", str(tmp_path / "shape.npz")], "shape.npz: data of shape"),
        (m + ["--data", str(tmp_path / "labels.npz")], "labels.npz: labels must be 0..9"),
        (m + ["--data", str(tmp_path / "empty.npz")], "empty"),
        (m + ["--data", str(tmp_path / "nox.npz")], "missing array(s) x, y"),
        (m + ["--data", str(tmp_path / "missing.npz")], "no such data file"),
        (m + ["--data", "cifar"], "not a bundled dataset"),
        (["--model", MODEL, "--weights", str(tmp_path / "nope.pt"), "--data", "digits"], "no such file"),
        (["--model", "no_such_pkg.mod:factory", "--data", "digits"], "cannot import no_such_pkg.mod"),
        (["--model", "faultlab.models:nope", "--data", "digits"], "has no attribute 'nope'"),
        (["--model", str(weights), "--data", "digits"], "--trust-pickle"),
    ]
    for argv, expect in cases:
        code, err = run_cli(base + argv, capsys)
        assert code == 2 and expect in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, err = run_cli(["run", *m, "--data", "digits", "--faults", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "none.csv" in err and "no such fault list" in err
    huge = write(tmp_path, "huge.csv", CSV_HEAD + "0,fc1," + "x" * 200_000 + ",3\n")
    for path, expect in ((tmp_path, "is a directory"), (huge, "not a readable CSV fault list")):
        code, err = run_cli(["run", *m, "--data", "digits", "--faults", str(path), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err


def test_failed_run_never_damages_stored_results(tmp_path, weights, good_faults, capsys):
    out = tmp_path / "camp"
    argv = ["run", "--model", MODEL, "--weights", str(weights), "--data", "digits", "--limit", "50", "--faults", str(good_faults), "--out", str(out)]
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    before = db_digest(out)
    bad = write(tmp_path, "bad.csv", CSV_HEAD + '0,fc1,"(99, 0)",3\n')
    other = write(tmp_path, "other.csv", CSV_HEAD + '0,fc1,"(1, 0)",3\n')
    for faults in (bad, other):  # invalid, and valid but a different campaign
        code, err = run_cli(argv[:-4] + ["--faults", str(faults), "--out", str(out)], capsys)
        assert code == 2, err
    assert "holds a different campaign" in err
    assert db_digest(out) == before


def test_real_process_prints_one_line_without_traceback(tmp_path):
    bad = write(tmp_path, "f.csv", CSV_HEAD + '0,conv9,"(0, 0, 0, 0)",3\n')
    r = subprocess.run(
        [sys.executable, "-m", "faultlab.cli", "run", "--model", MODEL, "--data", "digits", "--faults", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "unknown weight layer 'conv9'" in r.stderr and "f.csv" in r.stderr, r.stderr  # the line names the fault and the file


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["faults", "generate", "--model", MODEL, "--n", "abc", "-o", "a.csv"], "Invalid value for '--n'"),
        (["run", "--bogus"], "No such option: --bogus"),
        (["report", ".", "--top", "0"], "Invalid value for '--top'"),
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
    ],
)
def test_option_parsing_errors_are_one_line(argv, expect, capsys):
    """Errors found while parsing options: one line too (not typer's boxed panel), exit status 2."""
    code, err = run_cli(argv, capsys)
    assert code == 2 and expect in err and "--help" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_help_still_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert (e.value.code or 0) == 0
    assert "Example:" in capsys.readouterr().out


def test_labels_per_time_step_are_refused_and_one_hot_labels_read_as_class_ids(tmp_path, weights, good_faults, capsys):
    # integer y of shape (N, T) cannot be scored against one top-1 per input: one line, exit 2, nothing written
    from faultlab.datasets import load_dataset

    ds = load_dataset("digits", split="test")
    x, y = ds.x[:30], ds.y[:30].astype(np.int64)
    np.savez(tmp_path / "seq.npz", x=x, y=np.stack([y, y], 1))
    code, err = run_cli(["run", "--model", MODEL, "--weights", str(weights), "--data", str(tmp_path / "seq.npz"),
                         "--faults", str(good_faults), "--out", str(tmp_path / "r_seq")], capsys)
    assert code == 2 and "shape (30, 2)" in err and "one class id per input" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r_seq").exists()
    # one-hot integer rows are the same labels as their class ids: the same per-fault report
    reports = []
    for name, labels in (("plain", y), ("onehot", np.eye(10, dtype=np.int64)[y]), ("column", y[:, None])):
        np.savez(tmp_path / f"{name}.npz", x=x, y=labels)
        code, _ = run_cli(["run", "--model", MODEL, "--weights", str(weights), "--data", str(tmp_path / f"{name}.npz"),
                           "--faults", str(good_faults), "--out", str(tmp_path / f"r_{name}")], capsys)
        assert code == 0
        reports.append((tmp_path / f"r_{name}" / "report.csv").read_text())
    assert reports[0] == reports[1] == reports[2]
    assert "top_1_correct" in reports[0] and any(int(row.split(",")[5]) > 0 for row in reports[0].splitlines()[1:])
