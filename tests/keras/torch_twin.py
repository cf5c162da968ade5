"""A PyTorch twin of InjectTF2-style Keras models (conv2d, max_pooling2d, flatten, dense, dropout, dense_1, softmax).

The twin is written the PyTorch way (nn.Conv2d, nn.Linear, channels-first) and holds the Keras
model's weights with their axes reordered; :meth:`TorchTwin.translate` moves a fault to the twin's
names and axis order. Shared by ``test_keras_vs_torch.py`` and ``benchmarks/keras_vs_torch.py``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from faultlab.faults import Fault

#: Keras layer -> the twin module whose output is that layer's output (activation faults)
ACTIVATION_OF = {"conv2d": "conv2d_relu", "max_pooling2d": "max_pooling2d", "flatten": "flatten", "dense": "dense_relu", "dense_1": "dense_1"}


class TorchTwin(nn.Module):
    """The Keras model's network with the given sizes, channels-first; ``pooled`` is max_pooling2d's (H, W, C)."""

    def __init__(self, in_channels: int, kernel: int, pooled: tuple[int, int, int], hidden: int, classes: int) -> None:
        super().__init__()
        self.pooled = pooled
        h, w, c = pooled
        self.conv2d, self.conv2d_relu = nn.Conv2d(in_channels, c, kernel), nn.ReLU()
        self.max_pooling2d, self.flatten = nn.MaxPool2d(2), nn.Flatten()
        self.dense, self.dense_relu = nn.Linear(h * w * c, hidden), nn.ReLU()
        self.dense_1, self.softmax = nn.Linear(hidden, classes), nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max_pooling2d(self.conv2d_relu(self.conv2d(x)))
        return self.softmax(self.dense_1(self.dense_relu(self.dense(self.flatten(x)))))

    @classmethod
    def of(cls, keras_model) -> "TorchTwin":
        """A twin holding ``keras_model``'s weights (Conv2D kernel (kh, kw, in, out) -> (out, in, kh, kw); Dense kernel transposed)."""
        get = lambda n: [np.asarray(w) for w in keras_model.get_layer(n).get_weights()]  # noqa: E731
        ck, cb = get("conv2d")
        dk, db = get("dense")
        ok, ob = get("dense_1")
        pooled = tuple(int(d) for d in keras_model.get_layer("max_pooling2d").output.shape[1:])
        net = cls(ck.shape[2], ck.shape[0], pooled, dk.shape[1], ok.shape[1]).eval()
        # row j of the twin's dense input (C, H, W order) is Keras' row perm[j] (H, W, C order)
        perm = np.array([net.keras_flat(j) for j in range(dk.shape[0])])
        with torch.no_grad():
            net.conv2d.weight.copy_(torch.from_numpy(ck.transpose(3, 2, 0, 1).copy()))
            net.conv2d.bias.copy_(torch.from_numpy(cb))
            net.dense.weight.copy_(torch.from_numpy(dk[perm].T.copy()))
            net.dense.bias.copy_(torch.from_numpy(db))
            net.dense_1.weight.copy_(torch.from_numpy(ok.T.copy()))
            net.dense_1.bias.copy_(torch.from_numpy(ob))
        return net

    def keras_flat(self, j: int) -> int:
        """The twin's flatten position j (C, H, W order) as Keras' (H, W, C order)."""
        h, w, c = self.pooled
        ci, hi, wi = np.unravel_index(j, (c, h, w))
        return int(np.ravel_multi_index((hi, wi, ci), (h, w, c)))

    def torch_flat(self, k: int) -> int:
        """Keras' flatten position k (H, W, C order) as the twin's (C, H, W order)."""
        h, w, c = self.pooled
        hi, wi, ci = np.unravel_index(k, (h, w, c))
        return int(np.ravel_multi_index((ci, hi, wi), (c, h, w)))

    def scores_with(self, f: Fault, x: torch.Tensor) -> torch.Tensor:
        """The twin's scores with ``f`` applied, independently of faultlab: the bits flipped through
        the float's bytes, in a deep copy (weights) or by a forward hook (activations)."""
        import copy

        def flipped(t: torch.Tensor, index: tuple) -> torch.Tensor:
            t = t.clone()
            raw = int.from_bytes(np.float32(t[index].item()).tobytes(), "little")
            for b in f.bits:
                raw ^= 1 << b
            t[index] = float(np.frombuffer(raw.to_bytes(4, "little"), dtype=np.float32)[0])
            return t

        with torch.no_grad():
            if f.site == "weight":
                net = copy.deepcopy(self)
                p = net.get_parameter(f.layer if "." in f.layer else f.layer + ".weight")
                p.copy_(flipped(p, tuple(f.index)))
                return net(x)
            hook = self.get_submodule(f.layer).register_forward_hook(
                lambda m, i, o: torch.stack([flipped(row, tuple(f.index)) for row in o])
            )
            try:
                return self(x)
            finally:
                hook.remove()

    def translate(self, f: Fault) -> Fault:
        """The same fault in the twin's names and axis order."""
        idx, base = f.index, f.layer.split(".")[0]
        if f.site == "weight":
            name = f.layer
            if f.layer == "conv2d":
                idx = (idx[3], idx[2], idx[0], idx[1])
            elif f.layer == "dense":
                idx = (idx[1], self.torch_flat(idx[0]))
            elif f.layer == "dense_1":
                idx = (idx[1], idx[0])
        else:
            name = ACTIVATION_OF[base]
            if len(idx) == 3:
                idx = (idx[2], idx[0], idx[1])
            elif base == "flatten":
                idx = (self.torch_flat(idx[0]),)
        return Fault(f.id, name, idx, f.bits, f.site, f.model)
