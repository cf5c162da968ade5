"""Benchmark: faultlab's fast and exact engines on Keras 3 models (torch backend), (fault, input) pairs per second.

Run by hand (not a test):  python benchmarks/bench_keras_engines.py [--quick]

On 2 CPU threads, for InjectTF2's MNIST model (``examples/injecttf2/model.keras``: conv2d,
max_pooling2d, flatten, dense, dropout, dense_1, softmax; 1,000 MNIST test digits) and the
branching Functional model of the Keras tests (residual adds, a concatenation, a depthwise block;
450 digits), with one fault list drawn uniformly over weight bits and one over activation
elements (and 32 bits) of every layer, it measures both engines, prints the ratio and the share of
(fault, input) pairs on which they agree. Every time is the best of three runs; the fast engine's
runs share one engine, as a campaign's chunks do.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "keras"))  # the branching model the tests use

import numpy as np  # noqa: E402
import torch  # noqa: E402

from faultlab.datasets import load_dataset  # noqa: E402
from faultlab.engine import EvalSet  # noqa: E402
from faultlab.engine.exact import ExactEngine  # noqa: E402
from faultlab.engine.fast import FastEngine  # noqa: E402
from faultlab.faults import Fault  # noqa: E402
from faultlab.targets.keras import KerasTarget, load_keras_model  # noqa: E402


def fault_list(target: KerasTarget, kind: str, n: int, seed: int) -> list[Fault]:
    """Faults uniform over the bits of every weight (or every activation element) of the model."""
    rng = np.random.default_rng(seed)
    sites = [s for s in target.sites() if s.kind == kind]
    sizes = np.array([s.numel for s in sites], dtype=np.float64)
    out = []
    for i in range(n):
        s = sites[rng.choice(len(sites), p=sizes / sizes.sum())]
        idx = tuple(int(v) for v in np.unravel_index(int(rng.integers(s.numel)), s.shape))
        out.append(Fault(i, s.name, idx, (int(rng.integers(32)),), kind))  # type: ignore[arg-type]
    return out


def timed(fn, *args) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        res = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, res


def models() -> list[tuple[str, object, np.ndarray, np.ndarray]]:
    from kmodels import branching_cnn, fit_briefly

    mnist = load_dataset("mnist", "test")
    xm = np.array(mnist.channels_last().x[:1000], dtype=np.float32)
    path = ROOT / "examples" / "injecttf2" / "model.keras"
    if not path.exists():
        sys.exit(f"{path} is missing: train it first with  python examples/injecttf2/train_model.py  (under a minute)")
    injecttf2 = load_keras_model(path)
    digits_train, digits_test = load_dataset("digits", "train").channels_last(), load_dataset("digits", "test").channels_last()
    branchy = fit_briefly(branching_cnn(), digits_train.x, digits_train.y)
    return [("InjectTF2 MNIST CNN", injecttf2, xm, mnist.y[:1000]), ("branching CNN", branchy, digits_test.x, digits_test.y)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few faults only, to check the script runs")
    args = ap.parse_args()
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING)
    n_fast, n_exact = (20, 5) if args.quick else (300, 40)
    rows = []
    for name, model, x, y in models():
        target = KerasTarget(model, example_input=x[:1])
        data = EvalSet.build(target, x, y)
        for kind in ("weight", "activation"):
            faults = fault_list(target, kind, n_fast, seed=0)
            fast = FastEngine()
            dt_f, res_f = timed(fast.run, target, data, faults)
            sub = faults[:n_exact]
            dt_e, res_e = timed(ExactEngine().run, target, data, sub)
            fast_codes = np.concatenate([r.codes for r in res_f[:n_exact]])  # type: ignore[index]
            exact_codes = np.concatenate([r.codes for r in res_e])  # type: ignore[union-attr]
            rate_f, rate_e = len(faults) * data.n / dt_f, len(sub) * data.n / dt_e
            rows.append((name, kind, data.n, rate_f, rate_e, float(np.mean(fast_codes == exact_codes)), dict(fast.stats)))
            print(f"  {name} {kind}: done", file=sys.stderr, flush=True)
    print(f"keras backend torch, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | faults | inputs | fast pairs/s | exact pairs/s | fast / exact | agreement |")
    print("|---|---|---|---|---|---|---|")
    for name, kind, n, rf, re_, agree, _ in rows:
        print(f"| {name} | {kind} | {n} | {rf:,.0f} | {re_:,.0f} | {rf / re_:.1f}x | {agree:.4f} |")
    print()
    for name, kind, *_, stats in rows:
        print(f"- {name} / {kind}: fast engine {stats}")


if __name__ == "__main__":
    main()
