"""Benchmark: (fault, input) pairs per second of faultlab's engines against tf_injector- and PyTorchFI-style loops.

Run by hand (not a test):  python benchmarks/bench_engines.py [--quick]

On 2 CPU threads, for a CIFAR-shaped ResNet-20 (random init, eval mode, random inputs) and
the demo digits CNN (digits test set), with one fault list drawn uniformly over the weight
bits of every Conv2d/Linear kernel and one drawn uniformly over the elements (and 32 bits) of
every Conv2d/Linear output -- the sites all four tools can hit -- it measures:

(a) faultlab fast engine, (b) faultlab exact engine, (c) a tf_injector-style loop (flip the
element in place with struct, full forward over all inputs, restore; a forward hook for
activations), (d) PyTorchFI 0.6.0's ``fault_injection`` with a float32 bit-flip function
(``declare_weight_fi`` / ``declare_neuron_fi``), plus the clean
inference rate. Slower tools run fewer faults: the metric is a rate. Every time is the best
of three runs (the machine may be shared). Prints a markdown table.

The fast engine makes glibc keep freed memory for reuse (``faultlab.engine.allocator``), a
process-wide setting; the script turns it on before anything runs, so every tool -- the
baselines too -- runs under the same allocator. ``--default-allocator`` leaves glibc's default
(and the fast engine is told not to touch it), for a before/after comparison.
"""
from __future__ import annotations

import argparse
import logging
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

from faultlab.datasets import load_dataset
from faultlab.engine import EvalSet
from faultlab.engine.allocator import tune_allocator
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast import FastEngine
from faultlab.faults import Fault
from faultlab.models import ResNet20, pretrained_digits_cnn
from faultlab.outcomes import classify
from faultlab.targets.torch import TorchTarget

FI_TYPES = (nn.Conv2d, nn.Linear)


def flip_float32(value: float, bit: int) -> float:
    """tf_injector's way: pack, XOR the bit, unpack."""
    (i,) = struct.unpack("<I", struct.pack("<f", value))
    return struct.unpack("<f", struct.pack("<I", i ^ (1 << bit)))[0]


def fault_lists(target: TorchTarget, n: int, seed: int) -> tuple[list[Fault], list[Fault]]:
    """Weight faults uniform over Conv2d/Linear kernel bits; activation faults uniform over their output elements."""
    rng = np.random.default_rng(seed)
    mods = dict(target.model.named_modules())
    out = []
    for kind in ("weight", "activation"):
        sites = [s for s in target.sites() if s.kind == kind and s.name == s.layer and isinstance(mods[s.layer], FI_TYPES)]
        sizes = np.array([s.numel for s in sites], dtype=np.float64)
        faults = []
        for i in range(n):
            s = sites[rng.choice(len(sites), p=sizes / sizes.sum())]
            idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
            faults.append(Fault(i, s.name, idx, (int(rng.integers(32)),), kind))  # type: ignore[arg-type]
        out.append(faults)
    return out[0], out[1]


def forward_all(model: nn.Module, x: torch.Tensor, bs: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + bs]) for i in range(0, len(x), bs)])


def tf_injector_loop(target: TorchTarget, data: EvalSet, faults: list[Fault]) -> np.ndarray:
    """One full forward per fault; weights flipped in place with struct and restored."""
    mods = dict(target.model.named_modules())
    codes = []
    for f in faults:
        mod = mods[f.layer]
        if f.site == "weight":
            arr = mod.weight.data.numpy()
            orig = float(arr[f.index])
            arr[f.index] = flip_float32(orig, f.bits[0])
            try:
                out = forward_all(target.model, data.x)
            finally:
                arr[f.index] = orig
        else:
            def hook(m, i, o, f=f):
                o = o.clone()
                v = o.numpy()
                col = (slice(None),) + f.index
                vals = v[col].astype(np.float32)
                v[col] = np.array([flip_float32(float(e), f.bits[0]) for e in vals], dtype=np.float32)
                return o

            h = mod.register_forward_hook(hook)
            try:
                out = forward_all(target.model, data.x)
            finally:
                h.remove()
        codes.append(classify(data.golden, out).numpy())
    return np.concatenate(codes)


def pytorchfi_loop(target: TorchTarget, data: EvalSet, faults: list[Fault]) -> np.ndarray:
    """PyTorchFI 0.6.0: declare each fault (it deep-copies the model), run the corrupted model."""
    from pytorchfi.core import fault_injection

    model = target.model
    n = data.n
    pfi = fault_injection(model, n, input_shape=list(data.x.shape[1:]), layer_types=list(FI_TYPES), use_cuda=False)
    names = [name for name, m in model.named_modules() if isinstance(m, FI_TYPES)]
    layer_of = {name: i for i, name in enumerate(names)}
    codes = []
    for f in faults:
        bit = f.bits[0]
        if f.site == "weight":
            def wfunc(weight, idx, bit=bit):
                idx = tuple(i for i in idx if i is not None)
                return flip_float32(float(weight[idx]), bit)

            dims = list(f.index) + [None] * (4 - len(f.index))
            corrupted = pfi.declare_weight_fi(
                layer_num=[layer_of[f.layer]], k=[dims[0]], dim1=[dims[1]], dim2=[dims[2]], dim3=[dims[3]], function=wfunc
            )
        else:
            target_layer = layer_of[f.layer]

            def nfunc(module, inp, output, f=f, target_layer=target_layer):
                if pfi.get_current_layer() == target_layer:
                    col = (slice(None),) + f.index
                    ints = output[col].contiguous().view(torch.int32) ^ (1 << f.bits[0] if f.bits[0] < 31 else -(1 << 31))
                    output[col] = ints.view(torch.float32)
                pfi.updateLayer()
                if pfi.get_current_layer() >= pfi.get_total_layers():
                    pfi.reset_current_layer()

            dims = list(f.index) + [None] * (3 - len(f.index))
            corrupted = pfi.declare_neuron_fi(
                batch=[0], layer_num=[target_layer], dim1=[dims[0]], dim2=[dims[1]], dim3=[dims[2]], function=nfunc
            )
        corrupted.eval()
        out = forward_all(corrupted, data.x, bs=n)
        pfi.reset_current_layer()
        codes.append(classify(data.golden, out).numpy())
    return np.concatenate(codes)


REPEATS = 3


def timed(fn, *args) -> tuple[float, object]:
    """Best of REPEATS runs: the machine is shared, and the minimum is the least disturbed time."""
    best, res = float("inf"), None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        res = fn(*args)
        best = min(best, time.perf_counter() - t0)
    print(f"    {getattr(fn, '__qualname__', fn)}: {best:.1f} s (best of {REPEATS})", file=sys.stderr, flush=True)
    return best, res


def bench_model(name: str, model: nn.Module, x: np.ndarray, y: np.ndarray | None, counts: dict[str, int], tune: bool = True) -> list[dict]:
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    n = data.n
    reps = 3
    forward_all(target.model, data.x)  # warm-up: kernel set-up for this batch shape
    t_clean, _ = timed(lambda: [forward_all(target.model, data.x) for _ in range(reps)])
    clean_rate = reps * n / t_clean
    weight, act = fault_lists(target, counts["fast"], seed=0)
    rows = []
    for kind, faults in (("weight", weight), ("activation", act)):
        row = {"model": name, "faults": kind, "inputs": n, "clean inputs/s": clean_rate}
        fast = FastEngine(tune_allocator=tune)
        dt, res = timed(fast.run, target, data, faults)
        row["fast"] = len(faults) * n / dt
        fast_codes = np.concatenate([r.codes for r in res])
        sub = faults[: counts["exact"]]
        dt, res = timed(ExactEngine().run, target, data, sub)
        row["exact"] = len(sub) * n / dt
        exact_codes = np.concatenate([r.codes for r in res])
        sub = faults[: counts["baseline"]]
        dt, tfi = timed(tf_injector_loop, target, data, sub)
        row["tf_injector-style"] = len(sub) * n / dt
        dt, pfi = timed(pytorchfi_loop, target, data, sub)
        row["PyTorchFI"] = len(sub) * n / dt
        m = len(sub) * n
        row["agree"] = (
            f"exact {np.mean(exact_codes == fast_codes[: len(exact_codes)]):.4f}, "
            f"tf_inj {np.mean(tfi == fast_codes[:m]):.4f}, pfi {np.mean(pfi == fast_codes[:m]):.4f}"
        )
        row["fast stats"] = dict(fast.stats)
        rows.append(row)
        print(f"  {name} {kind}: done", file=sys.stderr, flush=True)
    return rows


def benchmark_models(inputs: int) -> list[tuple[str, nn.Module, np.ndarray, np.ndarray | None]]:
    """(name, model, inputs, labels): a random-init ResNet-20 on ``inputs`` random CIFAR-shaped images, and the demo CNN on the digits test set."""
    torch.manual_seed(0)
    resnet = ResNet20().eval()
    xr = torch.rand(inputs, 3, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()
    ds = load_dataset("digits", split="test")
    return [("ResNet-20 (CIFAR shape)", resnet, xr, None), ("digits CNN", pretrained_digits_cnn(), np.array(ds.x, copy=True, order="C"), ds.y)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few faults only, to check the script runs")
    ap.add_argument("--inputs", type=int, default=256, help="CIFAR-shaped inputs for ResNet-20")
    ap.add_argument("--default-allocator", action="store_true", help="leave glibc's allocator as it is (no tune_allocator)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tune = not args.default_allocator
    tuned = tune and tune_allocator()
    logging.basicConfig(level=logging.WARNING)
    import os

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    scale = 0.1 if args.quick else 1.0
    (rn, resnet, xr, _), (dn, digits, xd, yd) = benchmark_models(args.inputs)
    rows = []
    rows += bench_model(rn, resnet, xr, None, {"fast": int(96 * scale) or 4, "exact": int(3 * scale) or 2, "baseline": int(3 * scale) or 2}, tune)
    rows += bench_model(dn, digits, xd, yd, {"fast": int(300 * scale) or 20, "exact": int(30 * scale) or 5, "baseline": int(30 * scale) or 5}, tune)
    cols = ["fast", "exact", "tf_injector-style", "PyTorchFI"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPU cores, load average {load0:.1f} at start, {load:.1f} at end, "
          f"glibc keeps freed memory (tune_allocator) for every tool: {'yes' if tuned else 'no'}\n")
    print("| model | faults | inputs | clean inputs/s | " + " | ".join(f"{c} pairs/s" for c in cols) + " | fast / tf_injector | fast / PyTorchFI | fast pair cost (clean passes) |")
    print("|---|---|---|---|" + "---|" * len(cols) + "---|---|---|")
    for r in rows:
        vals = " | ".join(f"{r[c]:,.0f}" for c in cols)
        print(
            f"| {r['model']} | {r['faults']} | {r['inputs']} | {r['clean inputs/s']:,.0f} | {vals} | "
            f"{r['fast'] / r['tf_injector-style']:.1f}x | {r['fast'] / r['PyTorchFI']:.1f}x | {r['clean inputs/s'] / r['fast']:.3f} |"
        )
    print()
    for r in rows:
        print(f"- {r['model']} / {r['faults']}: outcome agreement with fast on common pairs: {r['agree']}; fast engine: {r['fast stats']}")


if __name__ == "__main__":
    main()
