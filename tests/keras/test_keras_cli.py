"""CLI on Keras models: ``faultlab run --config`` (InjectTF2), Lambda refusal, ``faultlab show-activations``."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmodels import predict

CONFIG = """inject_layer:
  layer_name: dense_1
  fault_type: BitFlip
  bit_flip_type: SpecificBit
  bit_number: 31
  probability: 1.0
"""


@pytest.fixture(scope="module")
def app():
    import faultlab.cli.show  # noqa: F401  (registers show-activations; cli/__init__ imports it once merged)
    from faultlab.cli import app as _app

    return _app


def test_run_injecttf2_config_prints_clean_and_faulty_accuracy(app, model_files, seq_model, tmp_path):
    from faultlab.datasets import load_dataset

    cfg = tmp_path / "specific_bit.yml"
    cfg.write_text(CONFIG)
    res = CliRunner().invoke(app, ["run", "--model", str(model_files["seq"]), "--data", "digits", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    m = re.search(r"clean accuracy ([\d.]+)%\s+faulty accuracy ([\d.]+)%", res.output)
    assert m, res.output
    test = load_dataset("digits", "test").channels_last()
    clean = 100 * float((predict(seq_model, test.x).argmax(1) == test.y).mean())
    assert float(m.group(1)) == pytest.approx(clean, abs=0.006)
    assert float(m.group(2)) < float(m.group(1))  # flipping a dense_1 output's sign bit hurts
    # independent: one fault per input (probability 1.0) on a dense_1 output; its sign bit is its sign, and the
    # softmax after dense_1 keeps the argmax, so the faulty class is the argmax of dense_1's outputs with one negated
    from faultlab.store import CampaignStore
    from kmodels import layer_output

    with CampaignStore(tmp_path / "run") as st:
        faults = list(st.faults())
    assert sorted(f.input for f in faults) == list(range(len(test.y)))
    logits = layer_output(seq_model, "dense_1", test.x)
    for f in faults:
        assert f.layer == "dense_1" and f.bits == (31,) and f.site == "activation"
        logits[f.input, f.index[0]] = -logits[f.input, f.index[0]]
    faulty = 100 * float((logits.argmax(1) == test.y).mean())
    assert float(m.group(2)) == pytest.approx(faulty, abs=0.006)


def test_lambda_model_exits_2_with_a_hint(tmp_path, capsys):
    import keras

    from faultlab.cli import main

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Lambda(lambda t: t * 2.0, name="double"), keras.layers.Dense(10)])
    p = tmp_path / "lambda.keras"
    model.save(p)
    with pytest.raises(SystemExit) as e:
        main(["layers", "--model", str(p), "--data", "digits"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--unsafe" in err and "double" in err and "Traceback" not in err


def _png_shape(path: Path) -> tuple:
    import matplotlib.image as mpimg

    return mpimg.imread(path).shape


def test_show_activations_keras(app, model_files, tmp_path):
    out = tmp_path / "fault.png"
    res = CliRunner().invoke(app, ["show-activations", "--model", str(model_files["branchy"]), "--data", "digits", "--fault", "stem,(1, 1, 0, 2),30", "--input", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and len(_png_shape(out)) == 3
    # a stem kernel fault reaches every later layer of the branchy model
    m = re.search(r"(\d+) of (\d+) layers from stem on changed", res.output)
    assert m and m.group(1) == m.group(2) == "12", res.output  # stem and the 11 layers after it


def test_show_activations_torch_activation_fault(app, tmp_path):
    import numpy as np
    import torch

    from faultlab.datasets import load_dataset
    from faultlab.models import pretrained_digits_cnn, pretrained_digits_path

    model = pretrained_digits_cnn()
    out = tmp_path / "torch.png"
    res = CliRunner().invoke(app, ["show-activations", "--model", "faultlab.models:digits_cnn", "--weights", str(pretrained_digits_path()),
                                   "--data", "digits", "--site", "activation", "--fault", "fc2,(2,),31", "--input", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and f"wrote {out}" in " ".join(res.output.split()) and len(_png_shape(out)) == 3
    # independent: the sign bit of logit 2 is its sign; fc2 is the last layer, so only its output changes
    with torch.no_grad():
        logits = model(torch.as_tensor(load_dataset("digits", "test").x[2:3])).numpy()[0]
    faulty = logits.copy()
    faulty[2] = -faulty[2]
    assert logits[2] != 0 and int(np.argmax(faulty)) != int(np.argmax(logits))  # this fault does change the class
    assert "1 of 1 layers from fc2 on changed: fc2" in res.output, res.output
    assert f"top-1 class: golden {int(np.argmax(logits))}, faulty {int(np.argmax(faulty))}" in res.output, res.output


def test_show_activations_bad_fault_spec_exits_2(app, model_files, capsys):
    from faultlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["show-activations", "--model", str(model_files["seq"]), "--fault", "conv2d 31"])
    assert e.value.code == 2
    assert "LAYER,INDEX,BIT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["show-activations", "--model", str(model_files["seq"]), "--fault", "conv2d,(9, 9, 9, 9),31"])
    assert e.value.code == 2
    assert "out of bounds" in capsys.readouterr().err


def test_layers_of_a_keras_model_trace_its_declared_input_shape_or_the_data_given(tmp_path, capsys):
    """A 28x28 Keras model: listed without --data (zeros of its input shape); 8x8 digits given: one line that points at --data."""
    import keras

    from faultlab.cli import main

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="dense")])
    p = tmp_path / "mnist.keras"
    model.save(p)
    for extra in ([], ["--data", "mnist"]):
        with pytest.raises(SystemExit) as e:
            main(["layers", "--model", str(p), *extra])
        out = capsys.readouterr().out
        assert e.value.code == 0, extra
        assert re.search(r"dense\s.*activation.*\(10,\)", out), out
    with pytest.raises(SystemExit) as e:
        main(["faults", "generate", "--model", str(p), "--n", "4", "--site", "activation", "-o", str(tmp_path / "f.csv")])
    assert e.value.code == 0
    assert len((tmp_path / "f.csv").read_text().splitlines()) == 5
    with pytest.raises(SystemExit) as e:
        main(["layers", "--model", str(p), "--data", "digits"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--data digits" in err and "mnist" in err, err
    assert len(err.strip().splitlines()) == 1


def test_make_target_takes_bundled_channels_first_examples():
    """``make_target(keras_model, example_input=data.x[:1])`` with the bundled (N, 1, H, W) digits, as the README shows."""
    import keras
    import numpy as np

    import faultlab as fl
    from faultlab.datasets import load_digits

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(10, name="dense")])
    data = load_digits("test")
    target = fl.make_target(model, example_input=data.x[:1])
    assert {s.name for s in target.sites() if s.kind == "activation"} >= {"conv", "dense"}
    got = target.forward(target.to_tensor(target.prepare(data.x[:4]))).cpu().numpy()
    want = model.predict(data.x[:4].transpose(0, 2, 3, 1), verbose=0)
    np.testing.assert_array_equal(got, want)
