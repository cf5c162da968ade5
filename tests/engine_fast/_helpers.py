"""Shared helpers for the fast-engine tests: random fault lists and engine comparison."""
from __future__ import annotations

import numpy as np
import torch

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.faults import Fault
from faultlab.outcomes import classify
from faultlab.targets.torch import TorchTarget


def random_faults(target: TorchTarget, kind: str, n: int, seed: int, *, start: int = 0, models=("flip",)) -> list[Fault]:
    """``n`` faults drawn uniformly over the elements of every ``kind`` site, bits over all 32."""
    rng = np.random.default_rng(seed)
    sites = [s for s in target.sites() if s.kind == kind]
    sizes = np.array([s.numel for s in sites], dtype=np.float64)
    out = []
    for i in range(n):
        s = sites[rng.choice(len(sites), p=sizes / sizes.sum())]
        idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
        model = str(rng.choice(models))
        out.append(Fault(start + i, s.name, idx, (int(rng.integers(32)),), kind, model))  # type: ignore[arg-type]
    return out


def plain_codes(target: TorchTarget, data: EvalSet, faults: list[Fault]) -> list[np.ndarray]:
    """One real forward of every input per fault, the fault written in (weights) or hooked in (activations), classified against the golden outputs."""
    out = []
    for f in faults:
        with target.inject([(f, None)]):
            faulty = target.forward(data.x)
        out.append(classify(data.golden, faulty).cpu().numpy())
    return out


def compare(engine, target: TorchTarget, x: np.ndarray, y: np.ndarray | None, faults: list[Fault]) -> tuple[int, int, list]:
    """(differing pairs, total pairs, per-fault results) of ``engine`` against the exact engine."""
    data = EvalSet.build(target, x, y)
    fast = engine.run(target, data, faults)
    exact = ExactEngine().run(target, data, faults)
    diff = total = 0
    for a, b in zip(fast, exact):
        assert a.fault_id == b.fault_id
        assert len(a.codes) == len(b.codes)
        diff += int((a.codes != b.codes).sum())
        total += len(a.codes)
    return diff, total, list(zip(fast, exact))


def reorders_channels(target: TorchTarget, layer: str, x: np.ndarray) -> bool:
    """Whether this CPU's kernel for Conv/Linear ``layer`` (on its clean inputs from ``x``) gives its output channels
    bit for bit with its weight rows permuted -- the permutation the fast engine tries before it stacks the layer's
    weight faults. MKL on AVX-512 CPUs rounds a 10-wide Linear's columns by their place, and such a layer's faults
    recompute the layer instead ("node"); on AVX2 CPUs every layer here reorders exactly."""
    from torch import nn

    mod = dict(target.model.named_modules())[layer]
    if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return False
    seen: dict = {}
    h = mod.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    try:
        with torch.no_grad():
            target.model(torch.as_tensor(x))
    finally:
        h.remove()
    w, b = mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
    perm = torch.randint(0, w.shape[0], (w.shape[0],), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wp, bp = w[perm], None if b is None else b[perm]
        got = torch.nn.functional.linear(seen["x"], wp, bp) if isinstance(mod, nn.Linear) else mod._conv_forward(seen["x"], wp, bp)
    want = seen["y"][:, perm]
    return bool(torch.equal(got.contiguous().view(torch.int32), want.contiguous().view(torch.int32)))


def stackable_count(target: TorchTarget, faults: list[Fault], x: np.ndarray) -> int:
    """How many of the whole-set weight ``faults`` sit on a kernel or bias of a layer that :func:`reorders_channels`."""
    mods = dict(target.model.named_modules())
    ok: dict[str, bool] = {}
    n = 0
    for f in faults:
        layer = f.layer[: -len(".bias")] if f.layer.endswith(".bias") else f.layer
        layer = layer[: -len(".weight")] if layer.endswith(".weight") else layer
        if f.site != "weight" or f.input is not None or layer not in mods:
            continue
        if layer not in ok:
            ok[layer] = reorders_channels(target, layer, x)
        n += ok[layer]
    return n
