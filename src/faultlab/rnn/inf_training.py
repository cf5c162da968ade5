"""Plain minibatch SGD for the small torch classifiers of the influence and repair experiments.

Plain SGD (no momentum, no Adam) on purpose: SGD-influence (Hara et al. 2019) replays the
exact update ``theta <- theta - lr * (mean batch gradient + weight_decay * theta)``, so the
trainer can record the parameters before every minibatch together with the batch's
sample indices. Flat parameter vectors follow ``model.parameters()`` order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger("faultlab")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_sgd`; ``seed`` fixes the initial weights and the batch order."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 0.5
    weight_decay: float = 1e-3
    seed: int = 0


@dataclass
class TrainRecord:
    """What SGD did: parameters before each step (S, P), each step's batch indices and learning rate."""

    params: list[np.ndarray] = field(default_factory=list)
    batches: list[np.ndarray] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    weight_decay: float = 0.0


def flat_params(model: Any) -> np.ndarray:
    """All parameters of ``model`` as one float64 vector (``model.parameters()`` order)."""
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in model.parameters()]).astype(np.float64)


def set_flat_params(model: Any, flat: np.ndarray) -> None:
    """Write the vector ``flat`` (as returned by :func:`flat_params`) back into ``model``."""
    import torch

    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.as_tensor(flat[offset:offset + n], dtype=p.dtype).view_as(p))
            offset += n


def train_sgd(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: TrainConfig,
    record: bool = False,
    sample_weight: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainRecord | None:
    """Train ``model`` in place with plain minibatch SGD on the mean cross-entropy + L2.

    ``sample_weight`` (N,) of 0/1 removes samples without changing the batch order of
    the others (a removed sample keeps its slot in the shuffled order but adds nothing,
    and the batch mean still divides by the full batch size, as SGD-influence assumes).
    With ``record`` the parameters before every step are kept for :mod:`faultlab.rnn.sgd`.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(config.seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    w = torch.ones(len(xt)) if sample_weight is None else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
    rec = TrainRecord(weight_decay=config.weight_decay) if record else None
    params = list(model.parameters())
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), config.batch_size):
            idx = order[start:start + config.batch_size]
            if rec is not None:
                rec.params.append(flat_params(model))
                rec.batches.append(idx.numpy().copy())
                rec.learning_rates.append(config.learning_rate)
            losses = F.cross_entropy(model(xt[idx]), yt[idx], reduction="none")
            loss = (losses * w[idx]).sum() / len(idx)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(config.learning_rate * (g + config.weight_decay * p))
        if progress:
            progress(epoch + 1, config.epochs)
    model.eval()
    return rec


def per_sample_loss(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of every sample under ``model`` (N,), float64."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        return F.cross_entropy(logits, torch.as_tensor(np.asarray(y, dtype=np.int64)), reduction="none").double().numpy()


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    """Last-step predicted labels (N,)."""
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(x, dtype=np.float32))).argmax(dim=1).numpy()


__all__ = ["TrainConfig", "TrainRecord", "train_sgd", "flat_params", "set_flat_params", "per_sample_loss", "predict"]
