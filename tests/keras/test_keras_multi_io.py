"""Keras models with several inputs or several outputs: faultlab feeds one input array and classifies one (N, C)
output, so such models are refused with one line (exit status 2) naming the inputs or outputs, never run on one
output silently."""
from __future__ import annotations

import numpy as np
import pytest

from faultlab.errors import ModelLoadError


def _two_inputs():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    a, b = keras.Input((8,), name="left"), keras.Input((4,), name="right")
    x = layers.Dense(6, name="d")(layers.Concatenate(name="cat")([a, b]))
    return keras.Model([a, b], layers.Dense(3, name="out")(x))


def _two_heads(as_dict: bool):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    h = layers.Dense(8, name="d")(layers.Flatten(name="flat")(i))
    heads = [layers.Dense(10, name="digit_head")(h), layers.Dense(2, name="parity_head")(h)]
    return keras.Model(i, {"digit": heads[0], "parity": heads[1]} if as_dict else heads)


def _cli(args, capsys):
    from faultlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("which", ["two_inputs", "two_heads", "two_heads_dict"])
def test_cli_refuses_in_one_line_and_leaves_the_output_dir_alone(which, tmp_path, capsys):
    model = {"two_inputs": _two_inputs, "two_heads": lambda: _two_heads(False), "two_heads_dict": lambda: _two_heads(True)}[which]()
    p = tmp_path / f"{which}.keras"
    model.save(p)
    data = "digits"
    if which == "two_inputs":
        data = str(tmp_path / "x.npz")
        np.savez(data, x=np.zeros((5, 12), np.float32), y=np.zeros(5, np.int64))
    faults = tmp_path / "f.csv"
    faults.write_text('Injection,Layer,TensorIndex,Bit\n0,d,"(0, 0)",30\n')
    out = tmp_path / "run"
    for args in (["layers", "--model", str(p), "--data", data],
                 ["run", "--model", str(p), "--data", data, "--faults", str(faults), "--out", str(out)]):
        code, err = _cli(args, capsys)
        assert code == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        if which == "two_inputs":
            assert "2 inputs (left, right)" in err and "one input" in err, err
        else:
            assert "2 outputs" in err and "digit_head" in err and "parity_head" in err and "one output" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_library_raises_model_load_error_for_several_outputs_and_inputs():
    from faultlab.targets.keras import KerasTarget

    with pytest.raises(ModelLoadError, match=r"2 outputs \(digit_head, parity_head\)"):
        KerasTarget(_two_heads(False))
    with pytest.raises(ModelLoadError, match=r"2 inputs \(left, right\)"):
        KerasTarget(_two_inputs())


def test_subclassed_model_returning_two_tensors_is_refused_at_its_first_forward(digits):
    import keras

    class TwoHeads(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.a = keras.layers.Dense(10, name="a")
            self.b = keras.layers.Dense(3, name="b")

        def call(self, x):
            h = self.flat(x)
            return self.a(h), self.b(h)

    from faultlab.targets.keras import KerasTarget

    net = TwoHeads()
    x = digits[0].x[:4]
    net(x)
    t = KerasTarget(net)
    with pytest.raises(ModelLoadError, match="returns 2 tensors"):
        t.forward(x)


def test_one_output_in_a_list_still_runs(digits):
    """``keras.Model(inp, [out])``: one output, wrapped in a list, is the (N, C) scores as before."""
    import keras
    from keras import layers

    from faultlab.faults import Fault
    from faultlab.targets.keras import KerasTarget

    keras.utils.set_random_seed(1)
    i = keras.Input((8, 8, 1))
    model = keras.Model(i, [layers.Dense(10, name="out")(layers.Flatten(name="flat")(i))])
    x = digits[1].channels_last().x[:6]
    t = KerasTarget(model)
    want = np.asarray(keras.ops.convert_to_numpy(keras.tree.flatten(model(x))[0]))
    np.testing.assert_array_equal(t.forward(x).numpy(), want)
    with t.inject([(Fault(0, "out", (3, 2), (31,)), None)]):
        got = t.forward(x).numpy()
    w = model.get_layer("out").kernel.numpy()
    h = x.reshape(len(x), -1)
    assert not np.array_equal(got, want)  # the sign flip of one weight moves column 2 only
    np.testing.assert_array_equal(got[:, [0, 1, 3, 4, 5, 6, 7, 8, 9]], want[:, [0, 1, 3, 4, 5, 6, 7, 8, 9]])
    np.testing.assert_allclose(got[:, 2] - want[:, 2], -2 * h[:, 3] * w[3, 2], rtol=1e-4, atol=1e-5)
