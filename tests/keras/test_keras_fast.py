"""The fast engine on Keras models (torch backend): same per-(fault, input) outcomes as the exact engine, or a fallback."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast import FastEngine
from faultlab.faults import Fault


def _target(model, x):
    from faultlab.targets.keras import KerasTarget

    t = KerasTarget(model)
    t.trace(x[:1])
    return t


def _faults(target, kind: str, n: int, seed: int) -> list[Fault]:
    """Faults spread over every site of one kind: bit flips (one and two bits), stuck-at, some on a single input."""
    rng = np.random.default_rng(seed)
    sites = [s for s in target.sites() if s.kind == kind]
    out = []
    for i in range(n):
        s = sites[i % len(sites)]
        idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
        model = ("flip", "flip", "stuck0", "stuck1")[i % 4]
        bits = (int(rng.integers(32)),) if i % 5 else (int(rng.integers(16)), int(rng.integers(16, 32)))
        out.append(Fault(i, s.name, idx, tuple(sorted(set(bits))), kind, model, input=int(rng.integers(60)) if i % 7 == 3 else None))
    return out


def _compare(target, x, y, faults):
    data = EvalSet.build(target, x, y)
    fast = FastEngine()
    a = fast.run(target, data, faults)
    b = ExactEngine().run(target, data, faults)
    for p, q in zip(a, b):
        assert p.fault_id == q.fault_id
        np.testing.assert_array_equal(p.codes, q.codes)
        assert (p.masked, p.non_critical, p.sdc1, p.sdc5, p.due, p.top1_correct, p.top5_correct, p.top1_robust, p.top5_robust) == (
            q.masked, q.non_critical, q.sdc1, q.sdc5, q.due, q.top1_correct, q.top5_correct, q.top1_robust, q.top5_robust)
    return fast, a


@pytest.mark.parametrize("which", ["seq_model", "branchy_model"])
@pytest.mark.parametrize("kind", ["weight", "activation"])
def test_fast_equals_exact_on_keras_models(which, kind, digits, request):
    model = request.getfixturevalue(which)
    test = digits[1].channels_last()
    x, y = test.x[:60], test.y[:60]
    t = _target(model, x)
    faults = _faults(t, kind, 60, seed=3)
    before = [np.array(v.numpy(), copy=True) for v in model.weights]  # taken before either engine runs
    fast, res = _compare(t, x, y, faults)
    one_input = sum(f.input is not None for f in faults)  # compared with a one-row golden pass: the exact engine's
    assert one_input and fast.stats["exact"] == one_input and fast.stats["redone"] == 0
    assert fast.stats["node" if kind == "weight" else "act"] == len(faults) - one_input
    assert fast.stats["early_exit_rows"] > 0
    assert len({(r.masked, r.sdc1) for r in res}) > 2  # the faults do not all end alike
    assert len(before) == len(model.weights) > 0
    for v, b in zip(model.weights, before):  # every weight is back, bit for bit
        assert np.array_equal(v.numpy().view(np.int32), b.view(np.int32))


def test_control_rows_send_a_pass_that_rounds_apart_to_the_exact_engine(branchy_model, digits, monkeypatch):
    """A downstream layer call off by one ulp in replay only: control rows see it, those faults are redone exactly."""
    import torch

    from faultlab.engine import fast_keras

    test = digits[1].channels_last()
    x, y = test.x[:60], test.y[:60]
    t = _target(branchy_model, x)
    call = fast_keras.KerasGraph.call
    in_replay = {"on": False}

    def off_by_ulp(self, n, values):
        out = call(self, n, values)
        if in_replay["on"] and n.operation.name == "logits":
            out = [(o.view(torch.int32) ^ 1).view(torch.float32) for o in out]
        return out

    replay = fast_keras.KerasGraph.replay

    def spy(self, *a, **k):
        in_replay["on"] = True
        try:
            return replay(self, *a, **k)
        finally:
            in_replay["on"] = False

    monkeypatch.setattr(fast_keras.KerasGraph, "call", off_by_ulp)
    monkeypatch.setattr(fast_keras.KerasGraph, "replay", spy)
    faults = [f for f in _faults(t, "activation", 40, seed=4) if f.layer != "logits"]
    fast, _ = _compare(t, x, y, faults)
    one_input = sum(f.input is not None for f in faults)
    assert fast.stats["redone"] > 0 and fast.stats["exact"] == fast.stats["redone"] + one_input


def test_keras_models_without_a_graph_or_with_shared_layers_fall_back(digits, caplog):
    import keras

    test = digits[1].channels_last()
    x, y = test.x[:20], test.y[:20]
    shared = keras.layers.Dense(16, activation="relu", name="shared")
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(16, name="first")(h)
    h = shared(shared(h))  # one layer applied twice: its weight acts non-linearly
    model = keras.Model(inp, keras.layers.Dense(10, name="out")(h))
    t = _target(model, x)
    faults = [Fault(0, "shared", (1, 2), (30,)), Fault(1, "out", (3, 4), (29,))]
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        fast, _ = _compare(t, x, y, faults)
    assert fast.stats["exact"] == 2 and "called more than once" in caplog.text


def test_a_big_pass_that_rounds_apart_is_retried_in_block_sized_passes(seq_model, digits, monkeypatch):
    """Kernels that block their sums by batch size: a big pass fails its control rows, is rerun in passes no bigger
    than a block, and nothing goes to the exact engine."""
    import torch

    from faultlab.engine import fast_keras

    test = digits[1].channels_last()
    x, y = test.x[:60], test.y[:60]
    t = _target(seq_model, x)
    call = fast_keras.KerasGraph.call
    seen = []

    def big_batches_round_apart(self, n, values):
        out = call(self, n, values)
        if n.operation.name == "dense_1" and int(out[0].shape[0]) > 200:
            seen.append(int(out[0].shape[0]))
            out = [(o.view(torch.int32) ^ 1).view(torch.float32) for o in out]
        return out

    monkeypatch.setattr(fast_keras.KerasGraph, "call", big_batches_round_apart)
    faults = [f for f in _faults(t, "weight", 40, seed=5) if f.input is None and f.layer.startswith("conv2d")]
    fast, _ = _compare(t, x, y, faults)
    assert seen  # a big pass reached dense_1, rounded apart, and was not used
    assert fast.stats["redone"] == 0 and fast.stats["exact"] == 0 and fast.stats["node"] == len(faults)


def _round_rows_by_place(layer, period: int, monkeypatch) -> None:
    """Make ``layer`` round a row by its position in the batch modulo ``period`` (one ulp off where ``pos % period == 1``),
    as MKL's matmul does by parity on AVX-512 CPUs -- golden, exact and fast runs all see it."""
    import torch

    call = layer.call

    def by_place(*a, **k):
        out = call(*a, **k)
        pos = torch.arange(out.shape[0], device=out.device) % period == 1
        bits = out.view(torch.int32)
        return torch.where(pos.view(-1, *([1] * (out.dim() - 1))), bits ^ 1, bits).view(torch.float32)

    monkeypatch.setattr(layer, "call", by_place)


@pytest.mark.parametrize("kind", ["weight", "activation"])
def test_rows_rounded_by_their_place_keep_their_residue_in_replays(seq_model, digits, monkeypatch, kind):
    """A layer that rounds rows by position parity: the fast engine finds period 2, keeps every row's position
    modulo 2 through its replays (also across early-exit compaction), and still gives the exact engine's outcomes."""
    from faultlab.engine import fast_keras

    _round_rows_by_place(seq_model.get_layer("dense"), 2, monkeypatch)
    test = digits[1].channels_last()
    x, y = test.x[:60], test.y[:60]
    t = _target(seq_model, x)
    faults = [f for f in _faults(t, kind, 60, seed=8) if f.input is None]
    graphs = []
    init = fast_keras.KerasGraph.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        graphs.append(self)

    monkeypatch.setattr(fast_keras.KerasGraph, "__init__", spy)
    fast, _ = _compare(t, x, y, faults)
    assert [g.period for g in graphs] == [2]
    assert fast.stats["exact"] == 0 and fast.stats["redone"] == 0
    assert fast.stats["node" if kind == "weight" else "act"] == len(faults) and fast.stats["early_exit_rows"] > 0


def test_rows_rounded_by_a_place_no_period_keeps_go_to_the_exact_engine(seq_model, digits, monkeypatch, caplog):
    """Rounding by position modulo 3 defeats every power-of-two period: the whole model runs exact, said in the log.

    64 inputs, not 60: reversing 60 rows sends position j to 59 - j, which has remainder 1 modulo 3 exactly when j has,
    so on a CPU whose own kernels round no row by its place (not AVX-512 MKL's parity) the period-1 check passed."""
    _round_rows_by_place(seq_model.get_layer("dense"), 3, monkeypatch)
    test = digits[1].channels_last()
    x, y = test.x[:64], test.y[:64]
    t = _target(seq_model, x)
    faults = [f for f in _faults(t, "weight", 12, seed=9) if f.input is None]
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        fast, _ = _compare(t, x, y, faults)
    assert fast.stats["exact"] == len(faults) and "dense computes a row apart by its place in the batch" in caplog.text
