"""Which training samples are behind a set of failures: influence rankings and their evaluation.

Every method returns one *harm score* per training sample: the predicted reduction of
the targets' summed loss when that sample is removed (higher = more suspect), so that
all rankings sort the same way.

* ``kl``: Koh & Liang (2017) influence functions. Removing sample z changes the target
  loss by ``+(1/n) grad L_target^T H^{-1} grad L_z`` (the upweighting influence with
  epsilon = -1/n); the harm score is its negative. RNNRepair ranks with the opposite sign.
* ``sgd``: SGD-influence (Hara et al. 2019), see :mod:`faultlab.rnn.sgd`.
* ``model``: RNNRepair's model-based influence: training samples whose abstract traces
  share transitions ``(s_i, y_i, y_{i+1}, s_{i+1})`` with the targets' traces.
* ``loss``: the per-sample training loss (a mislabelled sample tends to keep a high loss).
* ``random``: a seeded random ranking.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FaultlabError
from .inf_autograd import loss_gradient, objective_hvp, per_sample_dots
from .inf_hessian import inverse_hvp
from .inf_training import per_sample_loss

log = logging.getLogger("faultlab")

METHODS = ("model", "kl", "sgd", "loss", "random")
SCOPES = ("head", "all")


@dataclass(frozen=True)
class InfluenceProblem:
    """A trained model, the data it was trained on and the targets whose loss we explain."""

    model: Any
    x_train: np.ndarray
    y_train: np.ndarray
    x_target: np.ndarray
    y_target: np.ndarray
    weight_decay: float = 0.0
    record: Any = None  # a TrainRecord, for SGD-influence


class InfluenceMethod(ABC):
    """A way to rank training samples; ``scores`` returns one harm score per training sample."""

    name: str = ""

    @abstractmethod
    def scores(self, problem: InfluenceProblem) -> np.ndarray:
        """Harm scores (N_train,): higher means removing the sample helps the targets more."""


# --------------------------------------------------------------------- baselines
class RandomRanking(InfluenceMethod):
    """Uniformly random scores from its own seeded generator."""

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def scores(self, problem: InfluenceProblem) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(problem.x_train))


class TrainingLoss(InfluenceMethod):
    """The per-sample training loss under the trained model (high loss = suspect)."""

    name = "loss"

    def scores(self, problem: InfluenceProblem) -> np.ndarray:
        return per_sample_loss(problem.model, problem.x_train, problem.y_train)


# ------------------------------------------------------------------ Koh & Liang
def head_features(model: Any, x: np.ndarray) -> np.ndarray:
    """The input of the model's linear ``head``: the recurrent layer's last hidden state (N, H)."""
    import torch

    if not (hasattr(model, "rnn") and hasattr(model, "head")):
        raise FaultlabError(f"{type(model).__name__}: scope 'head' needs a model with .rnn and .head (a RecurrentClassifier); use scope 'all'")
    with torch.no_grad():
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if hasattr(model, "embed"):
            xt = model.embed(xt)
        out, _ = model.rnn(xt)
        return out[:, -1].double().numpy()


def _head_loss_fns(n_classes: int, width: int) -> tuple[Callable, Callable]:
    """Per-sample loss and the regularised mean objective of a linear softmax head as functions of flat theta."""
    import torch.nn.functional as F

    def unpack(theta: Any) -> tuple[Any, Any]:
        return theta[: n_classes * width].view(n_classes, width), theta[n_classes * width:]

    def sample_loss(theta: Any, phi: Any, y: Any) -> Any:
        w, b = unpack(theta)
        return F.cross_entropy((phi @ w.T + b)[None], y[None])

    def objective(theta: Any, phi: Any, y: Any, weight_decay: float) -> Any:
        w, b = unpack(theta)
        return F.cross_entropy(phi @ w.T + b, y) + 0.5 * weight_decay * (theta ** 2).sum()

    return sample_loss, objective


def head_theta(model: Any) -> np.ndarray:
    """The head's weight and bias as one float64 vector (weight rows first)."""
    return np.concatenate([model.head.weight.detach().double().numpy().ravel(), model.head.bias.detach().double().numpy()])


def kl_head_influence(theta: np.ndarray, phi_train: np.ndarray, y_train: np.ndarray, phi_target: np.ndarray,
                      y_target: np.ndarray, *, n_classes: int, weight_decay: float, damping: float = 0.0,
                      solver: str = "exact") -> np.ndarray:
    """Predicted change of the targets' summed loss when each training sample is removed (head scope).

    ``(1/n) grad L_target^T (H + damping I)^{-1} grad L_z`` with ``H`` the exact Hessian of the
    regularised mean cross-entropy of a linear softmax head on fixed features ``phi``.
    """
    import torch
    from torch.func import grad, hessian, vmap

    width = phi_train.shape[1]
    sample_loss, objective = _head_loss_fns(n_classes, width)
    th = torch.as_tensor(theta, dtype=torch.float64)
    ptr, ytr = torch.as_tensor(phi_train, dtype=torch.float64), torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    pta, yta = torch.as_tensor(phi_target, dtype=torch.float64), torch.as_tensor(np.asarray(y_target), dtype=torch.int64)
    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    g_train = per_sample(th, ptr, ytr)  # (n, P)
    g_target = per_sample(th, pta, yta).sum(dim=0)

    def hess() -> np.ndarray:
        return hessian(objective)(th, ptr, ytr, weight_decay).numpy()

    def hvp(v: np.ndarray) -> np.ndarray:
        vt = torch.as_tensor(v, dtype=torch.float64)
        _, out = torch.func.jvp(lambda t: grad(objective)(t, ptr, ytr, weight_decay), (th,), (vt,))
        return out.numpy()

    s = inverse_hvp(g_target.numpy(), solver=solver, hvp=hvp, hessian=hess, damping=damping)
    return (g_train.numpy() @ s) / len(phi_train)


def kl_full_influence(model: Any, x_train: np.ndarray, y_train: np.ndarray, x_target: np.ndarray, y_target: np.ndarray, *,
                      weight_decay: float, damping: float = 0.01, solver: str = "cg",
                      params: Sequence[Any] | None = None) -> np.ndarray:
    """Predicted change of the targets' summed loss when each training sample is removed (all parameters).

    ``H^{-1} grad L_target`` comes from conjugate gradient or LiSSA on Hessian-vector
    products (the explicit Hessian of a GRU is too large); per-sample dot products use
    the double-backward trick.
    """
    params = list(params if params is not None else model.parameters())
    g_target = loss_gradient(model, params, x_target, y_target)

    def hvp(v: np.ndarray) -> np.ndarray:
        return objective_hvp(model, params, x_train, y_train, v, weight_decay=weight_decay)

    s = inverse_hvp(g_target, solver="cg" if solver == "auto" else solver, hvp=hvp, hessian=None, damping=damping)
    return per_sample_dots(model, params, x_train, y_train, s) / len(x_train)


class KohLiang(InfluenceMethod):
    """Koh & Liang influence functions; ``scope='head'`` uses the exact Hessian of the linear head.

    Both scopes solve with ``H + damping I`` (default 0.01, ten times the flip experiments' weight decay).
    """

    name = "kl"

    def __init__(self, *, scope: str = "head", solver: str = "auto", damping: float = 0.01) -> None:
        if scope not in SCOPES:
            raise FaultlabError(f"--scope {scope!r}: expected one of {', '.join(SCOPES)}")
        self.scope = scope
        self.solver = solver
        self.damping = damping

    def removal_effect(self, problem: InfluenceProblem) -> np.ndarray:
        """Predicted change of the targets' summed loss when each training sample is removed."""
        if self.scope == "head":
            n_classes = int(problem.model.head.out_features)
            return kl_head_influence(head_theta(problem.model), head_features(problem.model, problem.x_train), problem.y_train,
                                     head_features(problem.model, problem.x_target), problem.y_target,
                                     n_classes=n_classes, weight_decay=problem.weight_decay, damping=self.damping,
                                     solver=self.solver)
        return kl_full_influence(problem.model, problem.x_train, problem.y_train, problem.x_target, problem.y_target,
                                 weight_decay=problem.weight_decay, damping=self.damping, solver=self.solver)

    def scores(self, problem: InfluenceProblem) -> np.ndarray:
        return -self.removal_effect(problem)


def fit_head(phi: np.ndarray, y: np.ndarray, *, n_classes: int, weight_decay: float, theta0: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> np.ndarray:
    """The exact minimiser of the regularised mean cross-entropy of a linear softmax head on features ``phi``.

    ``weights`` (N,) of 0/1 drops samples (the mean is over the kept ones). Used to check
    influence predictions by refitting.
    """
    import scipy.optimize
    from scipy.special import log_softmax

    keep = np.ones(len(phi), bool) if weights is None else np.asarray(weights) > 0
    p, yk = np.asarray(phi, dtype=np.float64)[keep], np.asarray(y)[keep]
    width, n = phi.shape[1], len(p)
    onehot = np.eye(n_classes)[yk]

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: n_classes * width].reshape(n_classes, width), theta[n_classes * width:]
        logp = log_softmax(p @ w.T + b, axis=1)
        loss = -(logp * onehot).sum() / n + 0.5 * weight_decay * theta @ theta
        d = (np.exp(logp) - onehot) / n
        grad = np.concatenate([(d.T @ p).ravel(), d.sum(axis=0)]) + weight_decay * theta
        return float(loss), grad

    x0 = np.zeros(n_classes * (width + 1)) if theta0 is None else np.asarray(theta0, dtype=np.float64)
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15})
    return res.x


def head_losses(theta: np.ndarray, phi: np.ndarray, y: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Per-sample cross-entropy of a linear softmax head ``theta`` on features ``phi``."""
    from scipy.special import logsumexp

    width = phi.shape[1]
    w, b = theta[: n_classes * width].reshape(n_classes, width), theta[n_classes * width:]
    z = phi @ w.T + b
    return logsumexp(z, axis=1) - z[np.arange(len(y)), np.asarray(y)]


# ------------------------------------------------------------------ model-based
def transitions(traces: np.ndarray, step_pred: np.ndarray) -> list[set[tuple[int, int, int, int]]]:
    """Per input, the set of abstract transitions ``(s_i, y_i, y_{i+1}, s_{i+1})``.

    ``traces`` (N, T+1) start with the virtual state 0, whose label is -1; ``step_pred`` (N, T).
    """
    n, t = step_pred.shape
    labels = np.concatenate([np.full((n, 1), -1, dtype=np.int64), np.asarray(step_pred, dtype=np.int64)], axis=1)
    return [set(zip(traces[i, :-1].tolist(), labels[i, :-1].tolist(), labels[i, 1:].tolist(), traces[i, 1:].tolist()))
            for i in range(n)]


def transition_overlap_scores(train_sets: list[set], target_sets: list[set], *, train_labels: np.ndarray | None = None,
                              target_pred: np.ndarray | None = None) -> np.ndarray:
    """Sum over targets of the fraction of the target's transitions that each training sample shares.

    With ``train_labels`` and ``target_pred`` a training sample counts for a target only
    when its training label is the target's (wrong) prediction: only such samples can
    have taught the model that prediction.
    """
    scores = np.zeros(len(train_sets))
    for k, tset in enumerate(target_sets):
        if not tset:
            continue
        for i, s in enumerate(train_sets):
            if train_labels is not None and target_pred is not None and train_labels[i] != target_pred[k]:
                continue
            scores[i] += len(s & tset) / len(tset)
    return scores


class ModelBased(InfluenceMethod):
    """RNNRepair's model-based influence on #7's abstraction (PCA + GMM states)."""

    name = "model"

    def __init__(self, *, pca_dims: int = 5, components: int = 20, seed: int = 0, label_filter: bool = True) -> None:
        self.pca_dims = pca_dims
        self.components = components
        self.seed = seed
        self.label_filter = label_filter

    def scores(self, problem: InfluenceProblem) -> np.ndarray:
        from .abstraction import Abstraction
        from .profile import profile_model

        prof_train = profile_model(problem.model, problem.x_train)
        prof_target = profile_model(problem.model, problem.x_target)
        abst = Abstraction(pca_dims=self.pca_dims, components=self.components, seed=self.seed).fit(prof_train.hidden)
        train_sets = transitions(abst.traces(prof_train.hidden), prof_train.step_pred)
        target_sets = transitions(abst.traces(prof_target.hidden), prof_target.step_pred)
        if self.label_filter:
            return transition_overlap_scores(train_sets, target_sets, train_labels=problem.y_train, target_pred=prof_target.pred)
        return transition_overlap_scores(train_sets, target_sets)


def make_method(name: str, *, seed: int = 0, scope: str = "head", solver: str = "auto", pca_dims: int = 5,
                components: int = 20) -> InfluenceMethod:
    """The influence method called ``name`` (one of :data:`METHODS`)."""
    if name == "random":
        return RandomRanking(seed=seed)
    if name == "loss":
        return TrainingLoss()
    if name == "kl":
        return KohLiang(scope=scope, solver=solver)
    if name == "model":
        return ModelBased(pca_dims=pca_dims, components=components, seed=seed)
    if name == "sgd":
        from .sgd import SGDInfluence

        return SGDInfluence()
    raise FaultlabError(f"--method {name!r}: expected one of {', '.join(METHODS)}")


# --------------------------------------------------------------------- evaluation
def ranking(scores: np.ndarray) -> np.ndarray:
    """Training indices from most to least suspect (stable: ties keep index order)."""
    return np.argsort(-np.asarray(scores), kind="stable")


def top_fraction(scores: np.ndarray, percent: float) -> np.ndarray:
    """Indices of the top ``percent`` % most suspect samples (at least one)."""
    k = max(1, int(np.ceil(len(scores) * percent / 100.0)))
    return ranking(scores)[:k]


def recall_at(scores: np.ndarray, relevant: np.ndarray, percents: Sequence[float]) -> dict[float, float]:
    """Fraction of the ``relevant`` samples (e.g. the flipped ones) in the top p % of the ranking, per p."""
    rel = set(np.asarray(relevant).tolist())
    if not rel:
        raise FaultlabError("recall needs at least one relevant (flipped) sample")
    return {p: len(rel.intersection(top_fraction(scores, p).tolist())) / len(rel) for p in percents}


__all__ = ["METHODS", "SCOPES", "InfluenceProblem", "InfluenceMethod", "RandomRanking", "TrainingLoss", "KohLiang",
           "ModelBased", "make_method", "kl_head_influence", "kl_full_influence", "fit_head", "head_losses",
           "head_features", "head_theta", "transitions", "transition_overlap_scores", "ranking", "top_fraction", "recall_at"]
