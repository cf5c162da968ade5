"""Benchmark companion: the least work any engine with exact outcomes must do, per (fault, input) pair.

Run by hand (not a test):  python benchmarks/bench_floor.py [--quick]

An engine whose outcome classes are bit-exact (masked means bit-identical scores) cannot know a
changed value without computing it: every Conv2d/Linear output element whose faulty value differs
from the clean one must be computed, and computing it exactly costs its whole dot product (the
rounding of the sum depends on every term). This script runs the same models and fault lists as
``bench_engines.py`` through a plain torch.fx interpreter (no faultlab engine), counts for every
(fault, input) pair the multiply-accumulates (MACs) of the Conv2d/Linear output elements that
changed, and divides by the MACs of one clean forward pass. The mean is a lower bound on the
average pair cost of *any* exact engine, in clean forward passes, even one that knew in advance
which elements change and computed only those at dense-kernel speed (generous: sparse work runs
slower). A tool that pays one forward pass per fault over all inputs (tf_injector, PyTorchFI)
costs about one clean pass per pair, so ``1 / floor`` bounds the speed-up over them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_engines import FI_TYPES, benchmark_models, fault_lists  # noqa: E402

from faultlab.targets.torch import TorchTarget  # noqa: E402


def macs_per_element(mod: nn.Module) -> int:
    """Multiply-accumulates behind one output element of a Conv2d or Linear layer."""
    if isinstance(mod, nn.Conv2d):
        return mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
    return mod.in_features


class Recorder(fx.Interpreter):
    """Runs the traced model, optionally flipping one bit of a module's output, and keeps every Conv/Linear output."""

    def __init__(self, gm: fx.GraphModule, act: tuple[str, tuple[int, ...], int] | None = None) -> None:
        super().__init__(gm)
        self.act = act
        self.outputs: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.op == "call_module":
            if self.act is not None and n.target == self.act[0]:
                out = out.clone()
                col = (slice(None),) + self.act[1]
                bits = out[col].view(torch.int32) ^ torch.tensor(1 << self.act[2], dtype=torch.int64).to(torch.int32)
                out[col] = bits.view(torch.float32)
            if isinstance(self.module.get_submodule(n.target), FI_TYPES):
                self.outputs[n.target] = out
        return out


def floor_costs(model: nn.Module, x: torch.Tensor, faults) -> tuple[np.ndarray, np.ndarray]:
    """Per (fault, input): changed-element MACs / clean-pass MACs, and whether the scores changed at all."""
    gm = fx.symbolic_trace(model)
    mods = dict(model.named_modules())
    with torch.no_grad():
        rec = Recorder(gm)
        clean_out = rec.run(x)
        clean = {k: v.reshape(len(x), -1).view(torch.int32) for k, v in rec.outputs.items()}
        per_input = sum(v.shape[1] * macs_per_element(mods[k]) for k, v in clean.items())
        costs, changed_out = [], []
        for f in faults:
            if f.site == "weight":
                w = mods[f.layer].weight.data
                orig = w[f.index].clone()
                w.view(torch.int32)[f.index] ^= torch.tensor(1 << f.bits[0], dtype=torch.int64).to(torch.int32)
                try:
                    rec = Recorder(gm)
                    out = rec.run(x)
                finally:
                    w[f.index] = orig
            else:
                rec = Recorder(gm, (f.layer, tuple(f.index), f.bits[0]))
                out = rec.run(x)
            macs = torch.zeros(len(x), dtype=torch.float64)
            for k, v in rec.outputs.items():
                diff = v.reshape(len(x), -1).view(torch.int32) != clean[k]
                macs += diff.sum(1).double() * macs_per_element(mods[k])
            costs.append((macs / per_input).numpy())
            changed_out.append((out.reshape(len(x), -1).view(torch.int32) != clean_out.reshape(len(x), -1).view(torch.int32)).any(1).numpy())
    return np.concatenate(costs), np.concatenate(changed_out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few faults only, to check the script runs")
    ap.add_argument("--inputs", type=int, default=64, help="CIFAR-shaped inputs for ResNet-20")
    args = ap.parse_args()
    torch.set_num_threads(2)
    n_faults = 20 if args.quick else 300
    print("| model | faults | pairs | pairs whose scores change | floor: mean pair cost (clean passes) | most an exact engine can gain over one pass per fault |")
    print("|---|---|---|---|---|---|")
    for name, model, x, _ in benchmark_models(args.inputs):
        target = TorchTarget(model, example_input=x[:1])  # the same fault lists as bench_engines.py
        weight, act = fault_lists(target, n_faults, seed=0)
        for kind, faults in (("weight", weight), ("activation", act)):
            costs, changed = floor_costs(model, torch.from_numpy(x), faults)
            floor = float(costs.mean())
            print(f"| {name} | {kind} | {len(costs):,} | {changed.mean():.1%} | {floor:.3f} | {1 / floor:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
