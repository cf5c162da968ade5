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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "injecttf2"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

H, W, C = 13, 13, 8  # max_pooling2d's output


class Twin(nn.Module):
    """The same network written the PyTorch way."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d, self.conv2d_relu = nn.Conv2d(1, C, 3), nn.ReLU()
        self.max_pooling2d, self.flatten = nn.MaxPool2d(2), nn.Flatten()
        self.dense, self.dense_relu = nn.Linear(H * W * C, 64), nn.ReLU()
        self.dense_1, self.softmax = nn.Linear(64, 10), nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max_pooling2d(self.conv2d_relu(self.conv2d(x)))
        return self.softmax(self.dense_1(self.dense_relu(self.dense(self.flatten(x)))))


def nhwc_to_nchw(k: int) -> int:
    """Keras' flatten position k (H, W, C order) as PyTorch's (C, H, W order)."""
    h, w, c = np.unravel_index(k, (H, W, C))
    return int(np.ravel_multi_index((c, h, w), (C, H, W)))


def twin_of(model) -> Twin:
    net = Twin().eval()
    perm = np.array([np.ravel_multi_index(np.unravel_index(j, (C, H, W))[1:] + (np.unravel_index(j, (C, H, W))[0],), (H, W, C)) for j in range(H * W * C)])
    ck, cb = (np.asarray(v) for v in model.get_layer("conv2d").get_weights())
    dk, db = (np.asarray(v) for v in model.get_layer("dense").get_weights())
    ok, ob = (np.asarray(v) for v in model.get_layer("dense_1").get_weights())
    with torch.no_grad():
        net.conv2d.weight.copy_(torch.from_numpy(ck.transpose(3, 2, 0, 1).copy()))
        net.conv2d.bias.copy_(torch.from_numpy(cb))
        net.dense.weight.copy_(torch.from_numpy(dk[perm].T.copy()))
        net.dense.bias.copy_(torch.from_numpy(db))
        net.dense_1.weight.copy_(torch.from_numpy(ok.T.copy()))
        net.dense_1.bias.copy_(torch.from_numpy(ob))
    return net


ACT = {"conv2d": "conv2d_relu", "max_pooling2d": "max_pooling2d", "flatten": "flatten", "dense": "dense_relu", "dense_1": "dense_1"}


def translate(f):
    """The same fault in the twin's names and axis order."""
    from faultlab.faults import Fault

    idx, base = f.index, f.layer.split(".")[0]
    if f.site == "weight":
        name = f.layer
        if f.layer == "conv2d":
            idx = (idx[3], idx[2], idx[0], idx[1])
        elif f.layer == "dense":
            idx = (idx[1], nhwc_to_nchw(idx[0]))
        elif f.layer == "dense_1":
            idx = (idx[1], idx[0])
    else:
        name = ACT[base]
        if len(idx) == 3:
            idx = (idx[2], idx[0], idx[1])
        elif base == "flatten":
            idx = (nhwc_to_nchw(idx[0]),)
    return Fault(f.id, name, idx, f.bits, f.site, f.model)


def score_change(net: nn.Module, f, x: torch.Tensor, golden: torch.Tensor) -> np.ndarray:
    """Per input, the largest change of the twin's scores under ``f`` (flip in place or by a hook, then restore)."""
    flip = lambda t: t.view(torch.int32).__ixor__(torch.tensor(1 << f.bits[0]).to(torch.int32))  # noqa: E731
    with torch.no_grad():
        if f.site == "weight":
            p = net.get_parameter(f.layer if "." in f.layer else f.layer + ".weight")
            orig = p[f.index].clone()
            flip(p.data[f.index].reshape(1))
            try:
                out = net(x)
            finally:
                p.data[f.index] = orig
        else:
            def hook(m, i, o):
                o = o.clone()
                flip(o[(slice(None),) + tuple(f.index)])
                return o

            h = net.get_submodule(f.layer).register_forward_hook(hook)
            try:
                out = net(x)
            finally:
                h.remove()
    return (out - golden).abs().max(1).values.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--faults", type=int, default=300)
    args = ap.parse_args()
    import keras
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
    tt = TorchTarget(twin_of(model), example_input=test.x[:1])
    kd, td = EvalSet.build(kt, test.x, test.y), EvalSet.build(tt, test.x, test.y)
    same = float((kd.golden.numpy() == td.golden.numpy()).mean())
    print(f"clean scores bit-identical: {same:.1%} of elements; same top-1 on {float((kd.golden.argmax(1) == td.golden.argmax(1)).float().mean()):.1%} of inputs\n")
    rng = np.random.default_rng(7)
    sites = [s for s in kt.sites() if s.layer in ACT]
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
        tc = np.concatenate([r.codes for r in eng.run(tt, td, [translate(f) for f in faults])])
        bit = np.repeat([f.bits[0] for f in faults], len(test))
        x = torch.from_numpy(np.ascontiguousarray(test.x))
        moved = [score_change(tt.model, translate(f), x, td.golden)[d] for f, d in zip(faults, ((kc == 0) & (tc == 1)).reshape(len(faults), -1)) if d.any()]
        moved_max = float(np.concatenate(moved).max()) if moved else 0.0
        merged = lambda c: np.where(c <= 1, 1, c)  # noqa: E731
        differ = kc != tc
        bits = f"{int(bit[differ].min())}-{int(bit[differ].max())}" if differ.any() else "none"
        print(f"| {label} | {len(kc):,} | {np.mean(~differ):.2%} | {np.mean(merged(kc) == merged(tc)):.2%} | {bits} | {moved_max:.2g} |")


if __name__ == "__main__":
    main()
