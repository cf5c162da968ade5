"""A PyTorch training function: an MLP on scikit-learn's digits, returning ``(model, history dict)``.

It takes ``x_train, y_train`` (faultlab feeds them from :func:`load_training_data`), so
DeepCrime's data operators (change_label, delete_training_data, unbalance_train_data,
add_noise, make_output_classes_overlap) and disable_batching apply too. ``validation_split``
of the training data drives early stopping; ``test_accuracy`` is measured on the held-out
digits from :func:`evaluation_data`.

    faultlab mutate run --models-file examples/torch_mlp_digits.py --model MLP \\
        --operator change_label --operator learning_rate --runs 5 --metric test_accuracy --logs-dir runs/mlp
"""
from __future__ import annotations

import numpy as np


def load_training_data():
    """Flattened training digits (N, 64) float32 and integer labels."""
    from faultlab.datasets import load_dataset

    ds = load_dataset("digits", split="train")
    return ds.x.reshape(len(ds), -1), ds.y


def evaluation_data():
    """Flattened held-out digits (N, 64) and labels."""
    from faultlab.datasets import load_dataset

    ds = load_dataset("digits", split="test")
    return ds.x.reshape(len(ds), -1), ds.y


_ACTIVATIONS = {
    "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "hard_sigmoid": "hardsigmoid", "softplus": "softplus",
    "softsign": "softsign", "elu": "elu", "selu": "selu", "exponential": "exp", "linear": None, "swish": "silu",
    "gelu": "gelu",
}


def _activation(name: str):
    import torch

    fn = _ACTIVATIONS[name]
    if fn is None:
        return lambda t: t
    return getattr(torch, fn, None) or getattr(torch.nn.functional, fn)


def train_mlp(x_train, y_train, epochs=5, batch_size=32, learning_rate=1e-2, hidden=32, activation="relu",
              weight_init="kaiming_uniform", use_bias=True, dropout=0.0, optimizer="adam", loss="cross_entropy",
              patience=3, clip_norm=None, validation_split=0.1):
    """Train a one-hidden-layer MLP; returns ``(model, history)`` with per-epoch losses and accuracies."""
    import torch
    from torch import nn

    x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    n_val = int(round(len(x) * validation_split))
    perm = torch.randperm(len(x))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    act = _activation(activation)

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(x.shape[1], hidden, bias=use_bias)
            self.fc2 = nn.Linear(hidden, 10, bias=use_bias)
            self.drop = nn.Dropout(dropout)

        def forward(self, t):
            return self.fc2(self.drop(act(self.fc1(t))))

    model = MLP()
    for layer in (model.fc1, model.fc2):
        getattr(nn.init, weight_init + "_")(layer.weight)
    opt_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop,
               "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta, "adamax": torch.optim.Adamax,
               "nadam": torch.optim.NAdam}[optimizer]
    opt = opt_cls(model.parameters(), lr=learning_rate)
    loss_fn = {"cross_entropy": nn.CrossEntropyLoss(), "multi_margin": nn.MultiMarginLoss(), "nll": nn.NLLLoss()}[loss]
    x_te, y_te = (torch.as_tensor(a) for a in evaluation_data())
    history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy")}
    best, waited = float("inf"), 0
    for _ in range(epochs):
        model.train()
        order = tr_idx[torch.randperm(len(tr_idx))]
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out = model(x[idx])
            batch_loss = loss_fn(out, y[idx])
            opt.zero_grad()
            batch_loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            total += batch_loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
            seen += len(idx)
        history["loss"].append(total / seen)
        history["accuracy"].append(correct / seen)
        model.eval()
        with torch.no_grad():
            history["test_accuracy"].append(float((model(x_te).argmax(1) == y_te).float().mean()))
            if n_val:
                out = model(x[val_idx])
                v_loss = float(loss_fn(out, y[val_idx]))
                history["val_loss"].append(v_loss)
                history["val_accuracy"].append(float((out.argmax(1) == y[val_idx]).float().mean()))
        if n_val:
            if v_loss < best:
                best, waited = v_loss, 0
            else:
                waited += 1
                if waited > patience:
                    break
    return model, {k: v for k, v in history.items() if v}


MODEL_TYPES = {"MLP": train_mlp}
