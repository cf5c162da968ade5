"""The fast engine's per-(fault, input) outcome classes equal the exact engine's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import compare, random_faults, stackable_count
from faultlab.datasets import load_dataset
from faultlab.engine import EvalSet, make_engine
from faultlab.engine.fast import FastEngine
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast_graph import MIN_ROWS
from faultlab.faults import Fault
from faultlab.models import BranchyCNN, pretrained_digits_cnn
from faultlab.outcomes import classify
from faultlab.targets.torch import TorchTarget


class TinyResNet(nn.Module):
    """A small ResNet-like model: BN after every conv, identity and projection shortcuts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.b1_conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b1_bn1 = nn.BatchNorm2d(8)
        self.b1_relu = nn.ReLU()
        self.b1_conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b1_bn2 = nn.BatchNorm2d(8)
        self.b1_out = nn.ReLU()
        self.b2_conv1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.b2_bn1 = nn.BatchNorm2d(16)
        self.b2_relu = nn.ReLU()
        self.b2_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.b2_bn2 = nn.BatchNorm2d(16)
        self.b2_short = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.b2_out = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.b1_out(h + self.b1_bn2(self.b1_conv2(self.b1_relu(self.b1_bn1(self.b1_conv1(h))))))
        h = self.b2_out(self.b2_short(h) + self.b2_bn2(self.b2_conv2(self.b2_relu(self.b2_bn1(self.b2_conv1(h))))))
        return self.fc(torch.flatten(self.pool(h), 1))


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "digits":
        return pretrained_digits_cnn()
    if name == "branchy":
        return _randomize_bn(BranchyCNN(), 1)
    return _randomize_bn(TinyResNet(), 2)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits", "branchy", "resnet"])
@pytest.mark.parametrize("kind", ["weight", "activation"])
def test_codes_equal_exact(model, kind, digits):
    x, y = digits
    target = TorchTarget(_model(model), example_input=x[:1])
    models = ("flip",) if kind == "weight" else ("flip", "stuck0", "stuck1")
    faults = random_faults(target, kind, 60, seed=7, models=models)
    eng = FastEngine()
    diff, total, pairs = compare(eng, target, x, y, faults)
    assert total == 60 * len(x)
    assert diff == 0, f"{diff} of {total} pairs differ"
    for a, b in pairs:  # the aggregated counts match too
        assert (a.masked, a.non_critical, a.sdc1, a.sdc5, a.due, a.top1_correct) == (b.masked, b.non_critical, b.sdc1, b.sdc5, b.due, b.top1_correct)
    # the fault list exercised every outcome kind the fast path shortcuts, including Inf/NaN
    codes = np.concatenate([a.codes for a, _ in pairs])
    assert (codes == 0).any() and (codes != 0).any()
    assert eng.stats["exact"] == 0 and eng.stats["early_exit_rows"] > 0


def test_exponent_bits_and_bias_faults(digits):
    x, y = digits
    target = TorchTarget(_model("branchy"), example_input=x[:1])
    faults = []
    for i, (layer, idx) in enumerate([("stem", (3, 0, 1, 1)), ("res_conv", (2, 5, 0, 2)), ("fc", (4, 17)), ("branch_b", (1, 7, 2, 2))]):
        for j, bit in enumerate((30, 29, 31, 23, 0)):
            faults.append(Fault(10 * i + j, layer, idx, (bit,), "weight"))
    faults += [Fault(100, "stem.bias", (2,), (30,), "weight"), Fault(101, "fc.bias", (3,), (30,), "weight"), Fault(102, "bn.weight", (1,), (30,), "weight")]
    eng = FastEngine()
    diff, total, pairs = compare(eng, target, x, y, faults)
    assert diff == 0
    assert any(a.due > 0 for a, _ in pairs)  # exponent bit 30 makes Inf/NaN
    # stacked: the faults of every Conv/Linear whose kernel reproduces its channels reordered (all four on AVX2 CPUs;
    # not the 10-wide fc under MKL on AVX-512); the rest (bn.weight always) recompute their layer
    want = stackable_count(target, faults, x)
    assert want >= 16 and eng.stats["stacked"] == want and eng.stats["node"] == len(faults) - want


def test_matches_brute_force_forward_on_raw_layout():
    """Independent of the exact engine: one real forward per fault on the dataset as loaded."""
    ds = load_dataset("digits", split="test")
    x, y = ds.x[:64], ds.y[:64]
    target = TorchTarget(_model("branchy"), example_input=x[:1])
    faults = random_faults(target, "activation", 8, seed=3) + random_faults(target, "weight", 8, seed=4, start=8)
    data = EvalSet.build(target, x, y)
    results = FastEngine().run(target, data, faults)
    for f, r in zip(faults, results):
        with target.inject([(f, None)]):
            out = target.forward(data.x)
        want = classify(data.golden, out).cpu().numpy()
        np.testing.assert_array_equal(r.codes, want, err_msg=str(f))


def test_per_input_faults_and_order(digits):
    x, y = digits
    target = TorchTarget(_model("digits"), example_input=x[:1])
    base = random_faults(target, "activation", 30, seed=5) + random_faults(target, "weight", 30, seed=6, start=30)
    faults = [Fault(f.id, f.layer, f.index, f.bits, f.site, f.model, f.value, input=int(i % len(x))) for i, f in enumerate(base)]
    faults = faults[::-1]  # results come back in the order asked for
    mixed = faults + random_faults(target, "weight", 10, seed=7, start=60)
    eng = FastEngine()
    diff, total, pairs = compare(eng, target, x, y, mixed)
    assert total == len(faults) + 10 * len(x) and diff == 0
    assert [a.fault_id for a, _ in pairs] == [f.id for f in mixed]
    # one-input faults run exact (a one-row pass rounds apart from a batch); the others fast
    want = stackable_count(target, mixed[len(faults):], x)
    assert eng.stats["exact"] == len(faults) and want > 0 and eng.stats["stacked"] == want and eng.stats["node"] == 10 - want


def test_small_max_memory_gives_identical_results(digits):
    x, y = digits
    target = TorchTarget(_model("resnet"), example_input=x[:1])
    faults = random_faults(target, "weight", 15, seed=8) + random_faults(target, "activation", 15, seed=9, start=15)
    data = EvalSet.build(target, x, y)
    big = FastEngine().run(target, data, faults)
    small_eng = FastEngine(max_memory=200_000)
    tm = small_eng._trace(target)
    rows_seen: list[int] = []
    resume = tm.resume  # every replay, full or on windows, ends in resume()

    def spy(start, env, first, ids, *args, **kwargs):
        rows_seen.append(int(ids.shape[0]))
        return resume(start, env, first, ids, *args, **kwargs)

    tm.resume = spy  # type: ignore[method-assign]
    small = small_eng.run(target, data, faults)
    for a, b in zip(big, small):
        np.testing.assert_array_equal(a.codes, b.codes)
    # a 200 kB budget forces small replay passes: the pass size
    # is set by the budget (never below MIN_ROWS rows plus controls), not by the fault count
    assert 200_000 // tm.cache_row_bytes() < len(x)
    assert max(rows_seen) <= 3 * MIN_ROWS and len(rows_seen) > len(faults)


def test_passes_near_the_output_hold_more_rows_in_the_same_memory(digits):
    """Pass sizes follow the faulted node's cone: fc1's cone carries 32 + 32 + 10 floats per row, conv1's whole maps."""
    x, y = digits
    target = TorchTarget(_model("digits"), example_input=x[:1])
    data = EvalSet.build(target, x, y)
    eng = FastEngine(max_memory=8_000_000)
    tm = eng._trace(target)
    tm.clean(data.x[:MIN_ROWS])
    fc1, conv1 = tm.module_nodes["fc1"][0], tm.module_nodes["conv1"][0]
    # fc1's output and relu3's are alive together, then relu3's and fc2's (10 outputs); x3, plus the outcome's share
    assert tm.replay_row_bytes(fc1) == 3 * (2 * 32 * 4) + 4 * 10 * 4 + 64
    assert tm.replay_row_bytes(conv1) <= tm.replay_row_bytes()
    bits = [30, 23, 31, 5, 26]
    faults = [Fault(i, "fc1", (i % 32, 7 * i % 256), (bits[i % 5],), "weight") for i in range(20)]
    faults += [Fault(20 + i, "conv1", (i % 8, 0, i % 3, i // 3 % 3), (bits[i % 5],), "weight") for i in range(20)]
    rows: dict[str, int] = {}
    one_pass = eng._pass

    def spy(target, tm, data, cache, s, node, mode, pname, faults, cf, *args):
        rows[node.name] = max(rows.get(node.name, 0), len(cf))
        return one_pass(target, tm, data, cache, s, node, mode, pname, faults, cf, *args)

    eng._pass = spy  # type: ignore[method-assign]
    got = eng.run(target, data, faults)
    want = ExactEngine().run(target, data, faults)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.codes, b.codes)
    # fc1's 20 x 64 pairs fit one pass; conv1's need several under the same budget
    assert rows["fc1"] == 20 * len(x) and rows["conv1"] < 20 * len(x)
    for name, n in rows.items():
        assert (n + 1) * tm.replay_row_bytes(tm.module_nodes[name][0]) <= eng.max_memory


def test_make_engine_builds_fast():
    eng = make_engine("fast", batch_size=64, max_memory=1 << 20)
    assert isinstance(eng, FastEngine) and eng.name == "fast" and eng.max_memory == 1 << 20



def test_clean_cache_is_kept_between_runs_until_the_model_is_written(digits):
    """A campaign calls run() once per chunk: the clean pass is done once, and again only after a parameter changes."""
    x, y = digits
    target = TorchTarget(_model("digits"), example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = random_faults(target, "weight", 20, seed=31) + random_faults(target, "activation", 20, seed=32, start=20)
    eng = FastEngine()
    eng.run(target, data, faults[:1])  # traces, checks and caches
    tm = eng._trace(target)
    cleans: list[int] = []
    clean = tm.clean
    tm.clean = lambda xb: cleans.append(len(xb)) or clean(xb)  # type: ignore[method-assign]
    first = eng.run(target, data, faults[:20]) + eng.run(target, data, faults[20:])
    assert cleans == []
    # a write to any parameter (here: one weight changed and put back) invalidates the kept cache
    w = target.model.fc1.weight
    with torch.no_grad():
        old = w[0, 0].clone()
        w[0, 0] = old + 1
        w[0, 0] = old
    old_copies = [hit[0] for w in eng._window_of.values() for hit in w.tables._tables.values()]
    again = eng.run(target, data, faults)
    assert cleans == [len(x)]
    # copies of the old block's maps went with it
    assert old_copies and not any(c is hit[0] for c in old_copies for w in eng._window_of.values() for hit in w.tables._tables.values())
    exact = ExactEngine().run(target, data, faults)
    for a, b, c in zip(first, again, exact):
        np.testing.assert_array_equal(a.codes, c.codes)
        np.testing.assert_array_equal(b.codes, c.codes)
        assert (a.top1_correct, a.top5_correct) == (c.top1_correct, c.top5_correct)
    eng.release()
    eng.run(target, data, faults[:5])
    assert cleans == [len(x), len(x)]
