"""Autograd helpers shared by Koh & Liang and SGD-influence: gradients, HVPs, per-sample dot products.

Everything works on a torch classifier ``model(x) -> logits`` and a chosen list of its
parameters (flattened in order). Per-sample gradient dot products use the
double-backward trick (``J v`` from ``J^T u``), which works for ``nn.GRU`` where
``torch.func.vmap`` does not.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _flat(tensors: Sequence[Any]) -> Any:
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def _split(vec: Any, params: Sequence[Any]) -> list[Any]:
    out, offset = [], 0
    for p in params:
        out.append(vec[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


def sample_losses(model: Any, x: Any, y: Any) -> Any:
    """Per-sample cross-entropy (B,) as a torch tensor with graph."""
    import torch.nn.functional as F

    return F.cross_entropy(model(x), y, reduction="none")


def loss_gradient(model: Any, params: Sequence[Any], x: np.ndarray, y: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """Gradient of the summed loss over ``(x, y)`` with respect to ``params`` (float64 vector)."""
    import torch

    total = None
    for start in range(0, len(x), chunk):
        xb = torch.as_tensor(np.asarray(x[start:start + chunk], dtype=np.float32))
        yb = torch.as_tensor(np.asarray(y[start:start + chunk], dtype=np.int64))
        g = _flat(torch.autograd.grad(sample_losses(model, xb, yb).sum(), params)).double()
        total = g if total is None else total + g
    return total.numpy()


def objective_hvp(model: Any, params: Sequence[Any], x: np.ndarray, y: np.ndarray, v: np.ndarray, *,
                  weight_decay: float, chunk: int = 512) -> np.ndarray:
    """``H v`` for the objective ``mean_i L_i + weight_decay/2 |params|^2`` over ``(x, y)``."""
    import torch

    vt = torch.as_tensor(v, dtype=torch.float32)
    vs = _split(vt, params)
    out = torch.zeros(len(v), dtype=torch.float64)
    n = len(x)
    for start in range(0, n, chunk):
        xb = torch.as_tensor(np.asarray(x[start:start + chunk], dtype=np.float32))
        yb = torch.as_tensor(np.asarray(y[start:start + chunk], dtype=np.int64))
        grads = torch.autograd.grad(sample_losses(model, xb, yb).sum() / n, params, create_graph=True)
        dot = sum((g * w).sum() for g, w in zip(grads, vs))
        out += _flat(torch.autograd.grad(dot, params)).double()
    return out.numpy() + weight_decay * v


def per_sample_dots(model: Any, params: Sequence[Any], x: np.ndarray, y: np.ndarray, v: np.ndarray, *,
                    chunk: int = 512) -> np.ndarray:
    """``<grad L_i, v>`` for every sample i of ``(x, y)`` (float64, (N,)), without per-sample backward passes."""
    import torch

    vs = _split(torch.as_tensor(v, dtype=torch.float32), params)
    out = []
    for start in range(0, len(x), chunk):
        xb = torch.as_tensor(np.asarray(x[start:start + chunk], dtype=np.float32))
        yb = torch.as_tensor(np.asarray(y[start:start + chunk], dtype=np.int64))
        losses = sample_losses(model, xb, yb)
        u = torch.zeros_like(losses, requires_grad=True)
        grads = torch.autograd.grad(losses, params, grad_outputs=u, create_graph=True)
        dot = sum((g * w).sum() for g, w in zip(grads, vs))
        out.append(torch.autograd.grad(dot, u)[0].detach().double().numpy())
    return np.concatenate(out) if out else np.zeros(0)




def hvp_and_dots(model: Any, params: Sequence[Any], x: np.ndarray, y: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For one batch, in one double-backward pass: ``H_mean v`` (Hessian of the batch *mean* loss) and ``<grad L_i, v>`` per sample."""
    import torch

    vs = _split(torch.as_tensor(v, dtype=torch.float32), params)
    xb = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yb = torch.as_tensor(np.asarray(y, dtype=np.int64))
    losses = sample_losses(model, xb, yb)
    u = torch.ones_like(losses, requires_grad=True)  # at u = 1, J^T u is the gradient of the summed loss
    grads = torch.autograd.grad(losses, params, grad_outputs=u, create_graph=True)
    dot = sum((g * w).sum() for g, w in zip(grads, vs))
    out = torch.autograd.grad(dot, [*params, u])
    return (_flat(out[:-1]).double() / len(x)).numpy(), out[-1].detach().double().numpy()


__all__ = ["sample_losses", "loss_gradient", "objective_hvp", "per_sample_dots", "hvp_and_dots"]
