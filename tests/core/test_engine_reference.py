"""The exact engine against a plain copy-flip-forward loop written without faultlab's engine."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from faultlab.engine import EvalSet, ExactEngine
from faultlab.faults import Fault
from faultlab.targets import make_target


def plain_codes(golden: np.ndarray, faulty: np.ndarray, k: int = 5) -> np.ndarray:
    """Outcome codes computed with numpy only: 0 masked, 1 non-critical, 2 SDC-1, 3 SDC-5, 4 DUE."""
    codes = np.empty(len(golden), np.uint8)
    for i, (g, f) in enumerate(zip(golden, faulty)):
        if g.tobytes() == f.tobytes():
            codes[i] = 0
        elif not np.isfinite(f).all():
            codes[i] = 4
        elif np.argmax(f) == np.argmax(g):
            codes[i] = 1
        else:
            top = np.argsort(-f, kind="stable")[:k]
            codes[i] = 2 if np.argmax(g) in top else 3
    return codes


def flip_np(value: np.float32, bit: int) -> np.float32:
    a = np.array([value], dtype=np.float32).view(np.uint32)
    a ^= np.uint32(1 << bit)
    return a.view(np.float32)[0]


def checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode() + t.detach().numpy().tobytes())
    return h.hexdigest()


def plain_weight_campaign(model, x, faults):
    with torch.no_grad():
        golden = model(torch.from_numpy(x)).numpy()
    out = {}
    for f in faults:
        m = copy.deepcopy(model)
        params = dict(m.named_parameters())
        name = f.layer if f.layer in params else f"{f.layer}.weight"
        arr = params[name].data.numpy()  # shares memory with the copy
        arr[f.index] = flip_np(arr[f.index], f.bits[0])
        with torch.no_grad():
            out[f.id] = plain_codes(golden, m(torch.from_numpy(x)).numpy())
    return out


def plain_activation_campaign(model, x, faults):
    with torch.no_grad():
        golden = model(torch.from_numpy(x)).numpy()
    modules = dict(model.named_modules())
    out = {}
    for f in faults:
        def hook(mod, inp, o, f=f):
            a = o.detach().clone()  # same memory format as the clean run
            for r in range(a.shape[0]):
                a[(r,) + f.index] = float(flip_np(np.float32(a[(r,) + f.index].item()), f.bits[0]))
            return a

        h = modules[f.layer].register_forward_hook(hook)
        with torch.no_grad():
            out[f.id] = plain_codes(golden, model(torch.from_numpy(x)).numpy())
        h.remove()
    return out


@pytest.mark.parametrize("model_name", ["trained_cnn", "branchy"])
def test_weight_campaign_matches_plain_loop(request, model_name, digits_test, random_faults):
    model = request.getfixturevalue(model_name)
    x = digits_test.x[:120]
    target = make_target(model, example_input=x[:1])
    faults = random_faults(target, "weight", 60, seed=1)
    before = checksum(model)
    data = EvalSet.build(target, x, digits_test.y[:120])
    results = ExactEngine(batch_size=64).run(target, data, faults)
    assert checksum(model) == before, "weights were not restored bit-exactly"
    want = plain_weight_campaign(model, x, faults)
    for r in results:
        np.testing.assert_array_equal(r.codes, want[r.fault_id])
        counts = np.bincount(want[r.fault_id], minlength=5)
        assert (r.masked, r.non_critical, r.sdc1, r.sdc5, r.due) == (counts[0], counts[1], counts[2] + counts[3], counts[3], counts[4])
    # the campaign must find some of every common class, or the comparison proves little
    all_codes = np.concatenate([r.codes for r in results])
    assert {0, 1}.issubset(set(np.unique(all_codes)))


@pytest.mark.parametrize("model_name", ["trained_cnn", "branchy"])
def test_activation_campaign_matches_plain_loop(request, model_name, digits_test, random_faults):
    model = request.getfixturevalue(model_name)
    x = digits_test.x[:80]
    target = make_target(model, example_input=x[:1])
    faults = random_faults(target, "activation", 40, seed=2, bits=[20, 23, 27, 30, 31])
    data = EvalSet.build(target, x, digits_test.y[:80])
    # a batch size that is not a multiple of the inputs, so faults straddle batches
    results = ExactEngine(batch_size=57).run(target, data, faults)
    want = plain_activation_campaign(model, x, faults)
    for r in results:
        np.testing.assert_array_equal(r.codes, want[r.fault_id])


def test_rows_carry_different_faults_in_one_pass(trained_cnn, digits_test):
    x = digits_test.x[:4]
    target = make_target(trained_cnn, example_input=x[:1])
    f1 = Fault(1, "fc1", (3,), (30,), "activation")
    f2 = Fault(2, "conv2", (5, 2, 2), (31,), "activation")
    batch = torch.from_numpy(np.concatenate([x, x]))
    with target.inject([(f1, slice(0, 4)), (f2, slice(4, 8))]):
        both = target.forward(batch)
    with target.inject([(f1, None)]):
        only1 = target.forward(torch.from_numpy(x))
    with target.inject([(f2, None)]):
        only2 = target.forward(torch.from_numpy(x))
    # kernels may round differently for other batch shapes: compare with a same-shape clean batch
    torch.testing.assert_close(both[:4], only1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[4:], only2, rtol=1e-5, atol=1e-5)
    clean = target.forward(batch)
    assert not torch.equal(both[:4], clean[:4]) and not torch.equal(both[4:], clean[4:])
    assert not torch.equal(only1, target.forward(torch.from_numpy(x)))


def test_weights_restored_even_on_error(trained_cnn):
    target = make_target(trained_cnn)
    before = checksum(trained_cnn)
    with pytest.raises(RuntimeError):
        with target.inject([(Fault(0, "conv1", (0, 0, 1, 1), (30,)), None)]):
            assert checksum(trained_cnn) != before
            raise RuntimeError("boom")
    assert checksum(trained_cnn) == before


def test_input_specific_faults(trained_cnn, digits_test):
    x = digits_test.x[:10]
    target = make_target(trained_cnn, example_input=x[:1])
    data = EvalSet.build(target, x, digits_test.y[:10])
    # faults whose outcome depends on the input, so running them on another input than the one named would show
    faults = [Fault(0, "fc2", (3,), (29,), "activation", input=7), Fault(1, "fc1", (3, 5), (30,), "weight", input=2)]
    res = ExactEngine().run(target, data, faults)
    assert [r.n for r in res] == [1, 1]
    want_act = plain_activation_campaign(trained_cnn, x[7:8], [faults[0]])
    np.testing.assert_array_equal(res[0].codes, want_act[0])
    want_w = plain_weight_campaign(trained_cnn, x[2:3], [faults[1]])  # the weight fault too, on its own input only
    np.testing.assert_array_equal(res[1].codes, want_w[1])
    every_act = plain_activation_campaign(trained_cnn, x, [faults[0]])[0]  # the same faults on all ten inputs
    every_w = plain_weight_campaign(trained_cnn, x, [faults[1]])[1]
    assert (every_act != want_act[0][0]).any() and (every_w != want_w[1][0]).any()


def test_exact_activation_faults_run_on_the_golden_batches():
    """Every faulty forward has the golden run's batch size, even when several faults would fit in one batch.

    Kernels round by batch size; packing 2 faults x 200 inputs into 400 rows changed masked counts on a
    branching Keras model against a plain flip-and-forward loop on the user's batches.
    """
    import torch
    from torch import nn

    from faultlab.engine import EvalSet
    from faultlab.engine.exact import ExactEngine
    from faultlab.faults import Fault
    from faultlab.targets.torch import TorchTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(50, 6).numpy()
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, None, batch_size=512)
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, a: sizes.append(int(a[0].shape[0])))
    try:
        faults = [Fault(i, "0", (i % 8,), (30,), "activation") for i in range(5)]
        res = ExactEngine(batch_size=512).run(target, data, faults)
    finally:
        handle.remove()
    assert len(res) == 5 and sizes and set(sizes) == {50}, sizes
    # and the outcomes are those of a plain hook-and-forward loop on the same batch
    golden = model(torch.as_tensor(x)).detach()
    for f, r in zip(faults, res):
        def hook(m, a, out, f=f):
            out = out.clone()
            v = out[:, f.index[0]].clone()
            out[:, f.index[0]] = (v.view(torch.int32) ^ (1 << 30)).view(torch.float32)
            return out
        h = model[0].register_forward_hook(hook)
        try:
            faulty = model(torch.as_tensor(x)).detach()
        finally:
            h.remove()
        masked = int((faulty == golden).all(dim=1).sum())
        assert r.masked == masked


def test_single_input_activation_faults_run_alone():
    """A fault on one input runs in a single-row pass against that input's single-row golden pass.

    Packing faults of different inputs into one batch made a bit-0 flip masked inside a 60-fault list and
    non-critical alone (a plain loop says non-critical): kernels round by batch size.
    """
    import torch
    from torch import nn

    from faultlab.engine import EvalSet
    from faultlab.engine.exact import ExactEngine
    from faultlab.faults import Fault
    from faultlab.targets.torch import TorchTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(20, 6).numpy()
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, None)
    faults = [Fault(i, "0", (i % 8,), (30 if i % 2 else 0,), "activation", input=(7 * i) % 20) for i in range(12)]
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, a: sizes.append(int(a[0].shape[0])))
    try:
        together = ExactEngine(batch_size=64).run(target, data, faults)
    finally:
        handle.remove()
    assert sizes and set(sizes) == {1}, sizes
    for f, r in zip(faults, together):  # the same as each fault run on its own, and as a plain single-row loop
        alone = ExactEngine(batch_size=64).run(target, data, [f])[0]
        assert r.n == 1 and np.array_equal(r.codes, alone.codes)
        xs = torch.as_tensor(x[f.input : f.input + 1])
        golden = model(xs).detach()

        def hook(m, a, out, f=f):
            out = out.clone()
            v = out[:, f.index[0]].clone()
            out[:, f.index[0]] = (v.view(torch.int32) ^ (1 << f.bits[0])).view(torch.float32)
            return out

        h = model[0].register_forward_hook(hook)
        try:
            faulty = model(xs).detach()
        finally:
            h.remove()
        assert bool((faulty == golden).all()) == bool(r.masked == 1)
