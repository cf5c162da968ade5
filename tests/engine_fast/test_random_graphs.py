"""Random branching models (convolutions, batch norms, ReLUs, adds, values read once or several times) against a plain loop.

The fast engine replays a fault's cone node by node, on windows, blocks or whole rows, runs some nodes
in place on values it owns and finishes rows early. Each drawn model is checked pair by pair against a
plain loop written here: the bit XOR-ed into the weight's storage (then XOR-ed back), or XOR-ed into the
module's output by this file's own forward hook, one real forward of every input, classified against the
golden outputs. The engine must also leave every parameter and buffer bit-identical.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import faultlab.engine.fast_graph as fg
from faultlab.engine import EvalSet
from faultlab.engine.fast import FastEngine
from faultlab.outcomes import classify
from faultlab.targets.torch import TorchTarget
from faultlab.faults import Fault

C, H = 4, 6


class Program(nn.Module):
    """Value 0 is the stem's output (two convolutions); op k reads earlier values and appends value k + 1; the head reads the last."""

    def __init__(self, ops: list[tuple[str, int, int]], seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.ops = ops
        self.stem = nn.Conv2d(1, C, 3, padding=1)
        self.pre = nn.Conv2d(C, C, 3, padding=1)  # a stem weight fault's rows are whole after it: the ops below replay on whole rows
        self.layers = nn.ModuleList()
        g = torch.Generator().manual_seed(seed)
        for kind, _, _ in ops:
            if kind == "conv":
                self.layers.append(nn.Conv2d(C, C, 3, padding=1))
            elif kind == "bn":
                bn = nn.BatchNorm2d(C)
                bn.running_mean.copy_(torch.randn(C, generator=g) * 0.2)
                bn.running_var.copy_(torch.rand(C, generator=g) + 0.5)
                bn.weight.data.copy_(torch.rand(C, generator=g) + 0.5)
                bn.bias.data.copy_(torch.randn(C, generator=g) * 0.2)
                self.layers.append(bn)
            elif kind == "relu":
                self.layers.append(nn.ReLU())
            else:
                self.layers.append(nn.Identity())  # adds use torch functions; a placeholder keeps indices aligned
        self.fc = nn.Linear(C * H * H, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals = [self.pre(torch.relu(self.stem(x)))]
        for (kind, i, j), layer in zip(self.ops, self.layers):
            if kind == "add":
                vals.append(vals[i] + vals[j])
            elif kind == "relu_fn":
                vals.append(torch.relu(vals[i]))
            else:
                vals.append(layer(vals[i]))
        return self.fc(torch.flatten(vals[-1], 1))


@st.composite
def programs(draw):
    n = draw(st.integers(3, 9))
    ops = []
    for k in range(n):
        kind = draw(st.sampled_from(["conv", "bn", "relu", "relu_fn", "add"]))
        # mostly the newest value (chains), sometimes an older one (a value read twice)
        i = draw(st.one_of(st.just(k), st.integers(0, k)))
        j = draw(st.integers(0, k))
        ops.append((kind, i, j))
    return ops


def _faults(target: TorchTarget, seed: int, n: int = 12) -> list[Fault]:
    """``n`` weight and ``n`` activation faults, the layer drawn uniformly (not by size: the head would take most), bits that matter."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("weight", "activation"):
        sites = [s for s in target.sites() if s.kind == kind and not s.name.startswith("fc")]
        for _ in range(n):
            s = sites[int(rng.integers(len(sites)))]
            idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
            out.append(Fault(len(out), s.name, idx, (int(rng.choice([31, 30, 29, 26, 23, 22, 12, 0])),), kind))  # type: ignore[arg-type]
    return out


def _plain_codes(model: nn.Module, x: torch.Tensor, golden: torch.Tensor, faults) -> list[np.ndarray]:
    mods = dict(model.named_modules())
    out = []
    for f in faults:
        handle = None
        if f.site == "weight":
            name, pname = f.layer.rsplit(".", 1) if "." in f.layer and f.layer.rsplit(".", 1)[1] in ("weight", "bias") else (f.layer, "weight")
            p = getattr(mods[name], pname)
            view = p.detach().numpy().view(np.uint32)
            view[f.index] ^= np.uint32(1 << f.bits[0])
        else:
            def hook(m, i, o, f=f):
                o = o.clone()
                o.numpy().view(np.uint32)[(slice(None),) + tuple(f.index)] ^= np.uint32(1 << f.bits[0])
                return o
            handle = mods[f.layer].register_forward_hook(hook)
        try:
            with torch.no_grad():
                faulty = model(x)
        finally:
            if f.site == "weight":
                view[f.index] ^= np.uint32(1 << f.bits[0])
            else:
                handle.remove()
        out.append(classify(golden, faulty).numpy())
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=programs(), seed=st.integers(0, 1000))
def test_random_branching_models_match_a_plain_loop(ops, seed):
    model = Program(ops, seed).eval()
    x = torch.randn(48, 1, H, H, generator=torch.Generator().manual_seed(seed))
    target = TorchTarget(model, example_input=x[:1].numpy())
    data = EvalSet.build(target, x.numpy(), None)
    faults = _faults(target, seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eng = FastEngine()
    got = eng.run(target, data, faults)
    # running nodes in place changes no path: a value overwritten while still read would turn the control rows
    # wrong and send faults to the exact engine (outcomes right, speed lost), so the paths taken are compared too
    fg.REUSE = False
    try:
        plain = FastEngine()
        plain.run(target, data, faults)
    finally:
        fg.REUSE = True
    assert eng.stats == plain.stats
    for k, v in model.state_dict().items():
        assert torch.equal(v.view(torch.int32) if v.dtype == torch.float32 else v, state[k].view(torch.int32) if v.dtype == torch.float32 else state[k]), k
    with torch.no_grad():
        golden = model(x)
    for f, r, want in zip(faults, got, _plain_codes(model, x, golden, faults)):
        np.testing.assert_array_equal(r.codes, want, err_msg=f"{f} in {ops}")
