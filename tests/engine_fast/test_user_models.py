"""User models whose forward the fast engine's shortcuts must not change: in-place ops, hooks, layer subclasses.

Each test compares the fast engine pair by pair with a plain loop written here: write the fault, run
``target.forward`` on every input, classify against the golden outputs (independent of both engines).
"""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast import FastEngine
from faultlab.errors import FaultSpecError
from faultlab.faults import Fault
from faultlab.targets.torch import TorchTarget
from _helpers import plain_codes

BITS = (30, 29, 31, 23, 28, 26)


def _assert_same_as_plain(target: TorchTarget, data: EvalSet, faults: list[Fault], eng: FastEngine | None = None) -> FastEngine:
    eng = eng or FastEngine()
    got = eng.run(target, data, faults)
    want = plain_codes(target, data, faults)
    bad = [(f, int((r.codes != w).sum())) for f, r, w in zip(faults, got, want) if (r.codes != w).any()]
    assert not bad, f"{sum(n for _, n in bad)} pairs differ from the plain loop, e.g. {bad[:3]}"
    return eng


def _faults(layer: str, site: str, indices: list[tuple[int, ...]], start: int = 0) -> list[Fault]:
    return [Fault(start + i, layer, idx, (BITS[i % len(BITS)],), site) for i, idx in enumerate(indices)]  # type: ignore[arg-type]


class TwoLinear(nn.Module):
    """fc1 (64 -> 32) and fc2 (32 -> 10); subclasses write the forward under test."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)


class ClampInPlace(TwoLinear):
    """``h.clamp_(...)`` as a statement: the graph's later readers of ``h`` read the clamped tensor in the real model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1))
        h.clamp_(-20, 20)  # a no-op on clean values: the golden check cannot see it
        return self.fc2(torch.relu(h))


def test_value_changed_in_place_and_read_again_falls_back(digits, caplog):
    with caplog.at_level(logging.WARNING, logger="faultlab"):
        _fc1_faults_fall_back(ClampInPlace(), digits)
    assert "changes fc1 in place" in caplog.text


def _fc1_faults_fall_back(model: TwoLinear, digits) -> None:
    """12 fc1 weight and 12 fc1 activation faults all run exact, with the plain loop's outcomes."""
    x, y = digits
    torch.manual_seed(0)
    model.load_state_dict(TwoLinear().state_dict())
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = _faults("fc1", "weight", [(i % 32, 5 * i % 64) for i in range(12)])
    faults += _faults("fc1", "activation", [(3 * i % 32,) for i in range(12)], start=12)
    eng = _assert_same_as_plain(target, data, faults)
    assert eng.stats["exact"] == len(faults)


def test_augmented_assignment_through_another_name_falls_back(digits):
    """``g = h; g *= mask`` changes ``h`` too; fx alone records ``g = g * mask`` and the graph's ``h`` stays as it was."""

    class Net(TwoLinear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x.flatten(1))
            g = h
            g *= (g.abs() < 20).float()  # zero out-of-range values: a no-op on clean ones
            return self.fc2(torch.relu(h))

    _fc1_faults_fall_back(Net(), digits)


def test_in_place_ops_whose_result_is_used_stay_fast(digits):
    """``h = h.clamp_(...)``, an in-place ReLU module and ``out += identity`` (ResNet) keep the fast path."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.conv1(x))
            out = self.conv2(h)
            out += h
            out = out.clamp_(-20, 20)
            return self.fc(out.flatten(1))

    x, y = digits
    torch.manual_seed(0)
    target = TorchTarget(Net(), example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = _faults("conv2", "weight", [(i % 8, i % 8, i % 3, i // 3 % 3) for i in range(12)])
    faults += _faults("relu", "activation", [(i % 8, 3 * i % 8, 5 * i % 8) for i in range(12)], start=12)
    eng = _assert_same_as_plain(target, data, faults)
    assert eng.stats["exact"] == 0 and eng.stats["stacked"] == 12 and eng.stats["act"] == 12


class Hooked(nn.Module):
    """A small CNN; :func:`_protect` adds range-restricting forward hooks, as Ranger-style protections do."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.r2 = nn.ReLU()
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.mp = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 16, 16)
        self.r3 = nn.ReLU()
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.r2(self.c2(self.r1(self.c1(x))))
        h = self.mp(self.bn(self.c3(h)))
        return self.fc2(self.r3(self.fc1(h.flatten(1))))


def _protect(model: nn.Module, x: torch.Tensor, name: str) -> None:
    """Clamp module ``name``'s output to 1.5x its largest clean magnitude on ``x``: a no-op on clean values."""
    mod = getattr(model, name)
    seen: list[torch.Tensor] = []
    h = mod.register_forward_hook(lambda m, i, o: seen.append(o.detach().abs().max()))
    with torch.no_grad():
        model(x)
    h.remove()
    bound = 1.5 * float(seen[0])
    mod.register_forward_hook(lambda m, i, o: o.clamp(-bound, bound))


@pytest.mark.parametrize(
    "hooked,layer,site,indices",
    [
        ("c2", "c2", "weight", [(i % 4, i % 4, i % 3, i // 3 % 3) for i in range(12)]),  # stacked kernels skipped c2's hook
        ("fc1", "fc1", "weight", [(i, 5 * i % 64) for i in range(12)]),  # ... and fc1's
        ("c2", "r1", "activation", [(i % 4, 3 * i % 8, 5 * i % 8) for i in range(12)]),  # windows ran c2 as F.conv2d
        ("bn", "c3", "weight", [(i % 4, i % 4, i % 3, i // 3 % 3) for i in range(12)]),  # blocks ran bn as F.batch_norm
    ],
)
def test_forward_hooks_run_on_every_path(digits, hooked, layer, site, indices):
    x, y = digits
    torch.manual_seed(0)
    model = Hooked().eval()
    _protect(model, torch.as_tensor(x), hooked)
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    _assert_same_as_plain(target, data, _faults(layer, site, indices))


def test_hooks_on_modules_fx_inlines_fall_back(digits):
    """A hook on the model itself (or on any module fx traces through) is not in the graph at all."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    x, y = digits
    torch.manual_seed(0)
    model = Net()
    model.register_forward_hook(lambda m, i, o: torch.nan_to_num(o))  # no Inf/NaN scores: a no-op on clean ones
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    # every exponent bit of an fc1 output stuck at 1: Inf or NaN, which the hook turns into finite scores
    faults = [Fault(i, "fc1", (i,), tuple(range(23, 31)), "activation", "stuck1") for i in range(16)]
    eng = _assert_same_as_plain(target, data, faults)
    assert eng.stats["exact"] == len(faults)


def test_weight_computed_by_a_pre_hook_is_never_stale(digits):
    """``weight_norm`` computes ``weight`` in a forward pre-hook: a ``weight_g`` fault leaves the faulty weight behind
    after its call, which the stacked kernels of a later ``bias`` fault must not read (the campaign's second chunk)."""
    x, y = digits
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.fc1 = torch.nn.utils.weight_norm(nn.Linear(64, 32))
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    target = TorchTarget(Net(), example_input=x[:1])
    data = EvalSet.build(target, x, y)
    bias = _faults("fc1.bias", "weight", [(i,) for i in range(8)])
    eng = FastEngine()
    _assert_same_as_plain(target, data, bias, eng)  # chunk 1
    gain = _faults("fc1.weight_g", "weight", [(i, 0) for i in range(3)], start=100)
    _assert_same_as_plain(target, data, gain + [Fault(200 + f.id, f.layer, f.index, f.bits, f.site) for f in bias], eng)  # chunk 2


def test_layer_subclass_with_its_own_forward_is_not_stacked(digits):
    """A quantisation-aware Linear fake-quantises its weight in forward (a no-op on weights on the grid, not on faulty ones)."""
    import torch.ao.nn.qat as nnqat
    import torch.ao.quantization as tq

    x, y = digits
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nnqat.Linear(64, 32, qconfig=tq.get_default_qat_qconfig("fbgemm"))
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    model = Net()
    fq = model.fc1.weight_fake_quant
    with torch.no_grad():
        fq(model.fc1.weight)  # observe the weight range once
        fq.disable_observer()
        model.fc1.weight.copy_(fq(model.fc1.weight))  # weights on the grid: clean outputs as a plain Linear's
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = _faults("fc1", "weight", [(i % 32, 7 * i % 64) for i in range(24)])
    eng = _assert_same_as_plain(target, data, faults)
    assert eng.stats["stacked"] == 0


def test_module_reused_on_other_shapes_gives_a_clear_error(digits):
    """One ReLU module used after a conv and after a linear layer: an element index of its first output names nothing in the second."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.fc1 = nn.Linear(4 * 64, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(self.act(self.c1(x)).flatten(1))))

    x, y = digits
    torch.manual_seed(0)
    target = TorchTarget(Net(), example_input=x[:1])
    data = EvalSet.build(target, x, y)
    faults = [Fault(0, "act", (1, 2, 3), (30,), "activation")]
    for eng in (FastEngine(), ExactEngine()):
        with pytest.raises(FaultSpecError, match="'act' is called 2 times per forward pass"):
            eng.run(target, data, faults)
    # its outputs are two tensors: not an activation site, so planners never draw it; the layers around it are sites
    acts = {s.name for s in target.sites() if s.kind == "activation"}
    assert target.reused_modules == {"act": 2} and "act" not in acts and {"c1", "fc1", "fc2"} <= acts


def test_module_reused_on_the_same_shape_is_not_an_activation_site(digits):
    """One ReLU after two same-width linear layers: a hook on it would flip the element in both outputs, two faults."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc3(self.act(self.fc2(self.act(self.fc1(x.flatten(1))))))

    x, _ = digits
    target = TorchTarget(Net(), example_input=x[:1])
    assert target.reused_modules == {"act": 2}
    assert [s.name for s in target.sites() if s.kind == "activation"] == ["fc1", "fc2", "fc3"]
    with pytest.raises(FaultSpecError, match="'act' is called 2 times"):
        target.check_fault(Fault(0, "act", (3,), (30,), "activation"))
