"""Profiling: the hidden state and the prediction of a recurrent classifier at every step.

Models of the form recurrent layer(s) -> dense head are profiled directly (torch and
Keras); any other architecture plugs in through a :data:`ProfileFunction`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import DataError, FaultlabError
from ..targets.keras_loading import import_keras

#: ``fn(model, x) -> (hidden (N, T, H), step_proba (N, T, C))``: a user-supplied profiler
#: for architectures this module does not understand; ``step_proba`` are class
#: probabilities of the prediction the model would make if the sequence ended at step t.
ProfileFunction = Callable[[Any, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class Profile:
    """Per-step hidden states ``(N, T, H)``, predicted labels ``(N, T)`` and class probabilities ``(N, T, C)``."""

    hidden: np.ndarray
    step_pred: np.ndarray
    step_proba: np.ndarray

    def __post_init__(self) -> None:
        n, t = self.hidden.shape[:2] if self.hidden.ndim == 3 else (-1, -1)
        if self.hidden.ndim != 3 or self.step_pred.shape != (n, t) or self.step_proba.shape[:2] != (n, t):
            raise DataError(
                f"profile: expected hidden (N, T, H), step_pred (N, T), step_proba (N, T, C); got "
                f"{self.hidden.shape}, {self.step_pred.shape}, {self.step_proba.shape}")

    def __len__(self) -> int:
        return len(self.hidden)

    @property
    def pred(self) -> np.ndarray:
        """The model's prediction: the label at the last step (N,)."""
        return self.step_pred[:, -1]

    @property
    def n_classes(self) -> int:
        return int(self.step_proba.shape[2])

    def subset(self, index: np.ndarray) -> "Profile":
        """The rows selected by ``index`` (a boolean mask or integer indices)."""
        return Profile(self.hidden[index], self.step_pred[index], self.step_proba[index])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _as_proba(scores: np.ndarray) -> np.ndarray:
    """Scores that already are probabilities pass through; logits go through a softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.min() >= 0 and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-4):
        return scores.astype(np.float32)
    return _softmax(scores).astype(np.float32)


def profile_model(model: Any, x: np.ndarray, *, profile_fn: ProfileFunction | None = None, batch_size: int = 512) -> Profile:
    """Profile ``model`` on sequences ``x`` (N, T, F): hidden state and head output at every step.

    Supported without ``profile_fn``: torch modules with a ``steps(x)`` method (the
    :class:`~faultlab.rnn._torch_models.RecurrentClassifier`), torch modules whose
    children are one batch-first ``nn.LSTM``/``nn.GRU``/``nn.RNN`` followed by
    ``nn.Linear`` layers, and Keras models whose last recurrent layer is followed only
    by per-step layers (Dense, Dropout, Activation).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise DataError(f"profiling needs sequences (N, T, F), got shape {x.shape}; use a -seq dataset")
    if len(x) == 0:
        raise DataError("profiling needs at least one input sequence, got 0")
    if profile_fn is not None:
        hidden, proba = profile_fn(model, x)
    elif type(model).__module__.split(".")[0] == "keras" or _is_keras(model):
        hidden, proba = _profile_keras(model, x, batch_size)
    elif hasattr(model, "named_parameters"):
        hidden, proba = _profile_torch(model, x, batch_size)
    else:
        raise FaultlabError(f"cannot profile a {type(model).__name__}: pass profile_fn=fn(model, x) -> (hidden, step_proba)")
    hidden = np.asarray(hidden, dtype=np.float32)
    proba = _as_proba(proba)
    return Profile(hidden=hidden, step_pred=proba.argmax(axis=-1).astype(np.int64), step_proba=proba)


def _is_keras(model: Any) -> bool:
    return any(c.__module__.split(".")[0] == "keras" for c in type(model).__mro__)


def _profile_torch(model: Any, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn as nn

    if hasattr(model, "steps"):
        step = model.steps
    else:
        children = list(model.children())
        rnns = [i for i, c in enumerate(children) if isinstance(c, nn.RNNBase)]
        if len(rnns) != 1 or not all(isinstance(c, (nn.Linear, nn.Dropout, nn.ReLU, nn.Tanh)) for c in children[rnns[0] + 1:]):
            raise FaultlabError(
                f"{type(model).__name__}: expected one recurrent child followed by Linear layers; "
                "pass profile_fn=fn(model, x) -> (hidden, step_proba) for other architectures")
        rnn = children[rnns[0]]
        if not rnn.batch_first:
            raise FaultlabError(f"{type(model).__name__}: its recurrent layer must be batch_first=True, or pass profile_fn")
        pre, head = children[:rnns[0]], nn.Sequential(*children[rnns[0] + 1:])

        def step(inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            for layer in pre:
                inp = layer(inp)
            out, _ = rnn(inp)
            return out, head(out)

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    hs, ps = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                h, logits = step(torch.as_tensor(x[start:start + batch_size], device=device))
                hs.append(h.float().cpu().numpy())
                ps.append(logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(hs), np.concatenate(ps)


_KERAS_STEPWISE = ("Dense", "Dropout", "Activation", "Softmax")


def _profile_keras(model: Any, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    keras = import_keras()

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    rec = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.RNN)]
    if not rec:
        raise FaultlabError(f"Keras model {model.name!r} has no recurrent layer; pass profile_fn=fn(model, x) -> (hidden, step_proba)")
    last = rec[-1]
    after = layers[last + 1:]
    if not all(type(layer).__name__ in _KERAS_STEPWISE for layer in after):
        names = ", ".join(type(layer).__name__ for layer in after)
        raise FaultlabError(f"Keras model {model.name!r}: layers after the recurrent one ({names}) are not per-step; pass profile_fn")
    rnn = layers[last]
    config = {**rnn.get_config(), "return_sequences": True, "return_state": False, "name": rnn.name + "_steps"}
    seq_rnn = type(rnn).from_config(config)
    inp = keras.Input(shape=x.shape[1:])
    h = inp
    for layer in layers[:last]:
        h = layer(h)
    hidden = seq_rnn(h)
    seq_rnn.set_weights(rnn.get_weights())
    out = hidden
    for layer in after:
        out = layer(out)
    stepper = keras.Model(inp, [hidden, out])
    hs, ps = stepper.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(hs), np.asarray(ps)


__all__ = ["Profile", "ProfileFunction", "profile_model"]
