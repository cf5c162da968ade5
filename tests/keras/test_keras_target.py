"""KerasTarget on the torch backend: sites, weight and activation faults checked against independent computations."""
from __future__ import annotations

import numpy as np
import pytest

from kmodels import layer_output, model_with_replacement, predict, replaced

from faultlab.errors import FaultSpecError
from faultlab.faults import Fault


def _target(model, x):
    from faultlab.targets.keras import KerasTarget

    t = KerasTarget(model)
    t.trace(x[:1])
    return t


def test_sites_use_keras_names_and_axis_order(seq_model, digits):
    t = _target(seq_model, digits[0].x)
    w = {s.name: s for s in t.sites() if s.kind == "weight"}
    a = [s.name for s in t.sites() if s.kind == "activation"]
    assert w["conv2d"].shape == tuple(seq_model.get_layer("conv2d").kernel.shape) == (3, 3, 1, 4)
    assert w["dense_1"].shape == (16, 10) and w["dense_1.bias"].shape == (10,)
    assert a == ["conv2d", "max_pooling2d", "flatten", "dense", "dropout", "dense_1", "softmax"]
    assert {s.name: s.shape for s in t.sites() if s.kind == "activation"}["conv2d"] == (6, 6, 4)
    # aliases a tf_injector list may use
    assert t.site("dense_1/bias", "weight") is w["dense_1.bias"]
    assert t.site("conv2d.kernel", "weight") is w["conv2d"]
    with pytest.raises(FaultSpecError, match="unknown weight layer 'nope'"):
        t.site("nope", "weight")


@pytest.mark.parametrize("which", ["seq_model", "branchy_model"])
def test_weight_fault_matches_set_weights_and_restores_bit_exactly(which, digits, request):
    model = request.getfixturevalue(which)
    x = digits[1].channels_last().x[:40]
    t = _target(model, x)
    before = [np.array(v.numpy(), copy=True) for v in model.weights]
    rng = np.random.default_rng(1)
    for site in [s for s in t.sites() if s.kind == "weight"][:6]:
        idx = tuple(int(rng.integers(n)) for n in site.shape)
        bit = int(rng.integers(20, 32))
        fault = Fault(0, site.name, idx, (bit,))
        with t.inject([(fault, None)]):
            got = t.forward(x).numpy()
        # independent: write the flipped element with set_weights, predict, put the weights back
        layer = model.get_layer(site.layer)
        ws = layer.get_weights()
        k = [v.path for v in layer.weights].index(t._variables[site.name].path)
        ws2 = list(ws)
        ws2[k] = replaced(ws[k], idx, (bit,))
        layer.set_weights(ws2)
        want = predict(model, x)
        layer.set_weights(ws)
        np.testing.assert_array_equal(got.view(np.int32), want.reshape(len(x), -1).view(np.int32))
    for v, b in zip(model.weights, before):
        assert np.array_equal(v.numpy().view(np.int32), b.view(np.int32))


def test_weight_restored_even_when_the_block_raises(seq_model, digits):
    t = _target(seq_model, digits[0].x)
    k = seq_model.get_layer("dense").kernel
    before = np.array(k.numpy(), copy=True)
    with pytest.raises(RuntimeError):
        with t.inject([(Fault(0, "dense", None, (30,)), None)]):
            assert not np.array_equal(k.numpy(), before)
            raise RuntimeError("boom")
    assert np.array_equal(k.numpy().view(np.int32), before.view(np.int32))


@pytest.mark.parametrize(
    "which,layers",
    [("seq_model", ["conv2d", "flatten", "dense", "dense_1"]), ("branchy_model", ["stem", "res_add", "concat", "depthwise", "ir_add", "gap"])],
)
def test_activation_faults_per_row_match_an_independent_replacement(which, layers, digits, request):
    """Several faults in one batch, each on its own rows, equal a separately built model per fault."""
    model = request.getfixturevalue(which)
    x = digits[1].channels_last().x[:6]
    t = _target(model, x)
    golden = t.forward(x).numpy()
    shapes = {s.name: s.shape for s in t.sites() if s.kind == "activation"}
    rng = np.random.default_rng(2)
    faults = []
    for j, name in enumerate(layers):
        idx = tuple(int(rng.integers(n)) for n in shapes[name])
        faults.append(Fault(j, name, idx, (int(rng.integers(22, 32)),), "activation"))
    # batch = every (fault, input) pair; fault j on rows j*6 .. j*6+5
    xb = np.concatenate([x] * len(faults))
    assignments = [(f, slice(6 * j, 6 * j + 6)) for j, f in enumerate(faults)]
    with t.inject(assignments):
        got = t.forward(xb).numpy()
    np.testing.assert_array_equal(t.forward(x).numpy(), golden)  # plan cleared on exit
    for j, f in enumerate(faults):
        act = layer_output(model, f.layer, x)
        for i in range(len(x)):
            value = replaced(act[i], f.index, f.bits)[f.index]
            want = predict(model_with_replacement(model, f.layer, f.index, float(value)), x[i : i + 1])
            # batch size changes kernel choice (and so rounding) -- compare to float32 precision
            np.testing.assert_allclose(got[6 * j + i], want.reshape(-1), rtol=1e-5, atol=1e-6, err_msg=f.describe())
            changed = not np.allclose(want.reshape(-1), golden[i], rtol=1e-4, atol=1e-5)
            assert changed == (not np.allclose(got[6 * j + i], golden[i], rtol=1e-4, atol=1e-5))


def test_instrumented_once_for_the_whole_campaign(branchy_model, digits, tmp_path, monkeypatch):
    import faultlab.targets.keras as kt
    from faultlab.datasets import load_dataset
    from faultlab.engine.campaign import Campaign
    from faultlab.faults import FaultList

    calls = []
    real = kt.instrument
    monkeypatch.setattr(kt, "instrument", lambda *a, **k: calls.append(1) or real(*a, **k))
    t = kt.KerasTarget(branchy_model)
    ds = load_dataset("digits", "test").head(20)
    faults = FaultList.of([Fault(i, ["stem", "concat", "expand", "gap"][i % 4], None if i % 4 == 3 else (1, 1, i % 3), (30 - i % 5,), "activation") for i in range(12)])
    Campaign(target=t, data=ds, faults=faults, out=tmp_path / "c", chunk_size=3).run()
    assert len(calls) == 1


def test_subclassed_model_weight_faults_work_activation_faults_explain(digits):
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.fc = keras.layers.Dense(10, name="fc")

        def call(self, x):
            return self.fc(self.flat(x))

    from faultlab.targets.keras import KerasTarget

    net = Net()
    x = digits[0].x[:4]
    net(x)
    t = KerasTarget(net)
    t.trace(x)
    g = t.forward(x)
    with t.inject([(Fault(0, "fc", (3, 2), (31,)), None)]):
        assert not np.array_equal(t.forward(x).numpy(), g.numpy())
    np.testing.assert_array_equal(t.forward(x).numpy(), g.numpy())
    with pytest.raises(FaultSpecError, match="activation layer .fc.: activation faults need a Functional or Sequential .* subclassed model"):
        with t.inject([(Fault(1, "fc", (0,), (31,), "activation"), None)]):
            pass
