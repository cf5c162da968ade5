"""Measurement: how often a Keras model and a PyTorch model with the same weights give the same outcome.

Run by hand (not a test):  python benchmarks/keras_vs_torch.py [--inputs 200] [--faults 300]

Trains InjectTF2's MNIST model (``examples/injecttf2``: conv2d, max_pooling2d, flatten, dense,
dropout, dense_1, softmax) for two epochs on the torch backend, copies its weights into a plain
PyTorch twin (nn.Conv2d / nn.Linear, axes reordered, the flatten order translated), runs the same
fault lists through faultlab's KerasTarget and TorchTarget with the exact engine, and prints the
share of (fault, input) pairs whose outcome class agrees: over the five classes, with masked and
non-critical merged, and per flipped bit. The residue is the two frameworks' own arithmetic
(nn.Linear adds its bias inside ``addmm``, Keras' Dense after the matmul), not faultlab's.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "injecttf2"))
sys.path.insert(0, str(ROOT / "tests" / "keras"))  # the PyTorch twin the tests use

import numpy as np  # noqa: E402
import torch  # noqa: E402

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--faults", type=int, default=300)
    args = ap.parse_args()
    import keras
    from torch_twin import ACTIVATION_OF, TorchTwin
    from train_model import build_model

    from faultlab.datasets import load_dataset
    from faultlab.engine import EvalSet, ExactEngine
    from faultlab.faults import Fault
    from faultlab.targets.keras import KerasTarget
    from faultlab.targets.torch import TorchTarget

    torch.set_num_threads(2)
    keras.utils.set_random_seed(0)
    train = load_dataset("mnist", "train").channels_last()
    test = load_dataset("mnist", "test").head(args.inputs)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(train.x, train.y, epochs=2, batch_size=128, verbose=0)
    kt = KerasTarget(model)
    kt.trace(kt.prepare(test.x[:1]))
    twin = TorchTwin.of(model)
    tt = TorchTarget(twin, example_input=test.x[:1])
    kd, td = EvalSet.build(kt, test.x, test.y), EvalSet.build(tt, test.x, test.y)
    same = float((kd.golden.numpy() == td.golden.numpy()).mean())
    print(f"clean scores bit-identical: {same:.1%} of elements; same top-1 on {float((kd.golden.argmax(1) == td.golden.argmax(1)).float().mean()):.1%} of inputs\n")
    rng = np.random.default_rng(7)
    sites = [s for s in kt.sites() if s.layer in ACTIVATION_OF]
    sizes = np.array([s.numel for s in sites], dtype=np.float64)
    print("| fault list | pairs | five classes agree | masked+non-critical / SDC-1 / SDC-5 / DUE agree | flipped bits of the disagreements | largest score change where only the twin sees one |")
    print("|---|---|---|---|---|---|")
    for label, p in (("uniform over sites, then elements and bits", None), ("uniform over elements and bits", sizes / sizes.sum())):
        faults = []
        for i in range(args.faults):
            s = sites[int(rng.choice(len(sites), p=p))]
            idx = tuple(int(rng.integers(n)) for n in s.shape)
            faults.append(Fault(i, s.name, idx, (int(rng.integers(32)),), s.kind))
        eng = ExactEngine(batch_size=512)
        kc = np.concatenate([r.codes for r in eng.run(kt, kd, faults)])
        tc = np.concatenate([r.codes for r in eng.run(tt, td, [twin.translate(f) for f in faults])])
        bit = np.repeat([f.bits[0] for f in faults], len(test))
        x = torch.from_numpy(np.ascontiguousarray(test.x))
        moved = [(twin.scores_with(twin.translate(f), x) - td.golden).abs().max(1).values.numpy()[d] for f, d in zip(faults, ((kc == 0) & (tc == 1)).reshape(len(faults), -1)) if d.any()]
        moved_max = float(np.concatenate(moved).max()) if moved else 0.0
        merged = lambda c: np.where(c <= 1, 1, c)  # noqa: E731
        differ = kc != tc
        bits = f"{int(bit[differ].min())}-{int(bit[differ].max())}" if differ.any() else "none"
        print(f"| {label} | {len(kc):,} | {np.mean(~differ):.2%} | {np.mean(merged(kc) == merged(tc)):.2%} | {bits} | {moved_max:.2g} |")


if __name__ == "__main__":
    main()
