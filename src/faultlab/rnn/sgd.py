"""SGD-influence (Hara, Nitanda & Maehara, NeurIPS 2019): replay the stored SGD run backwards.

Training step t updates ``theta_{t+1} = theta_t - eta_t (1/|S_t| sum_{i in S_t} grad L_i(theta_t) + wd theta_t)``.
Leaving sample j out of that run (its batch still divided by |S_t|) moves the final
parameters by ``u_T = sum_{t: j in S_t} Z_{T-1} ... Z_{t+1} (eta_t/|S_t|) grad L_j(theta_t)`` with
``Z_t = I - eta_t (H_{S_t}(theta_t) + wd I)`` and ``H_{S_t}`` the Hessian of the batch *mean*
loss. The change of the targets' loss is ``<g, u_T>``; Algorithm 2 of the paper computes it
for all j at once by carrying ``v_t = Z_t^T v_{t+1}`` backwards from ``v_T = g``.
The batch size divides exactly once (RNNRepair divides twice).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import FaultlabError
from .inf_autograd import hvp_and_dots, loss_gradient
from .inf_training import TrainRecord, flat_params, set_flat_params
from .influence import InfluenceMethod, InfluenceProblem


def sgd_removal_effect(model: Any, record: TrainRecord, x_train: np.ndarray, y_train: np.ndarray,
                       x_target: np.ndarray, y_target: np.ndarray, *,
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Predicted change of the targets' summed loss (at the final model) when each training sample is removed."""
    import copy

    if record is None or not record.params:
        raise FaultlabError("SGD-influence needs the stored per-minibatch parameters; train with train_sgd(..., record=True)")
    work = copy.deepcopy(model)  # one copy, reloaded with each stored parameter vector
    params = list(work.parameters())
    v = loss_gradient(model, list(model.parameters()), x_target, y_target)
    effect = np.zeros(len(x_train))
    steps = len(record.params)
    saved = flat_params(work)
    try:
        for k, t in enumerate(range(steps - 1, -1, -1)):
            set_flat_params(work, record.params[t])
            batch = record.batches[t]
            eta, size = record.learning_rates[t], len(batch)
            xb, yb = x_train[batch], y_train[batch]
            hv, dots = hvp_and_dots(work, params, xb, yb, v)
            effect[batch] += (eta / size) * dots
            # v_t = Z_t v_{t+1}; hv is the Hessian of the batch *mean* (|S_t| divides once)
            v = v - eta * (hv + record.weight_decay * v)
            if progress:
                progress(k + 1, steps)
    finally:
        set_flat_params(work, saved)
    return effect


class SGDInfluence(InfluenceMethod):
    """Harm score = minus the SGD-influence estimate of removing each sample from the recorded run."""

    name = "sgd"

    def scores(self, problem: InfluenceProblem) -> np.ndarray:
        return -sgd_removal_effect(problem.model, problem.record, problem.x_train, problem.y_train,
                                   problem.x_target, problem.y_target)


__all__ = ["SGDInfluence", "sgd_removal_effect"]
