"""Fault localisation by nearest training traces.

For each target (a failed or a benign test input) the training inputs whose normalised
state traces are closest in mean absolute difference are its neighbours. If a failed
input's neighbours carry its predicted (wrong) label rather than its true one, the
training data in that region of the abstract model is a suspect for the failure.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, FaultlabError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CURVE_COLUMNS = ("k", "targets", "truth_fraction", "truth_count_mean", "truth_distance_mean",
                 "pred_fraction", "pred_count_mean", "pred_distance_mean")


def normalise_traces(traces: np.ndarray, *, n_states: int) -> np.ndarray:
    """State traces (N, T+1) scaled to [0, 1] by ``n_states - 1`` (float32)."""
    return (np.asarray(traces, dtype=np.float32) / max(n_states - 1, 1)).astype(np.float32)


def nearest_traces(targets: np.ndarray, references: np.ndarray, *, k: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest references of each target by mean absolute difference.

    Returns ``(index (N, k), distance (N, k))``, nearest first; ties go to the lower index.
    Distances that differ by less than float32 rounding (1e-6 times the largest absolute
    value in the traces) count as equal: the states / (n_states - 1) of
    :func:`normalise_traces` are not exact binary fractions, and equal distances must tie
    by index, not by rounding noise.
    """
    targets = np.asarray(targets, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    if targets.ndim != 2 or references.ndim != 2 or targets.shape[1] != references.shape[1]:
        raise DataError(f"targets {targets.shape} and references {references.shape} must be (N, L) traces of the same length")
    if not 1 <= k <= len(references):
        raise FaultlabError(f"-k {k}: must be between 1 and the number of training traces {len(references)}")
    idx = np.empty((len(targets), k), dtype=np.int64)
    dist = np.empty((len(targets), k), dtype=np.float64)
    tol = 1e-6 * max(float(np.abs(targets).max(initial=0.0)), float(np.abs(references).max(initial=0.0)), 1e-30)
    for start in range(0, len(targets), batch_size):
        d = np.abs(targets[start:start + batch_size, None, :] - references[None]).mean(axis=2)
        order = np.argsort(d, axis=1, kind="stable")
        ds = np.take_along_axis(d, order, axis=1)
        # groups of distances equal up to rounding, then the lower index first within each group
        group = np.concatenate([np.zeros((len(d), 1), np.int64), np.cumsum(np.diff(ds, axis=1) > tol, axis=1)], axis=1)
        order = np.take_along_axis(order, np.lexsort((order, group), axis=1), axis=1)[:, :k]
        idx[start:start + batch_size] = order
        dist[start:start + batch_size] = np.take_along_axis(d, order, axis=1)
    return idx, dist


def localisation_curves(
    neighbour_index: np.ndarray,
    neighbour_distance: np.ndarray,
    *,
    reference_labels: np.ndarray,
    target_truth: np.ndarray,
    target_pred: np.ndarray,
) -> "pd.DataFrame":
    """For k = 1..K: the fraction of targets with a neighbour of their true (predicted) label
    among the k nearest, the mean count of such neighbours and their mean distance.

    A mean distance is NaN (an empty CSV cell) when no target has such a neighbour.
    """
    import pandas as pd

    ref = np.asarray(reference_labels)[neighbour_index]  # (N, K)
    max_k = neighbour_index.shape[1]
    rows = []
    for k in range(1, max_k + 1):
        row: dict[str, float] = {"k": k, "targets": len(ref)}
        for name, label in (("truth", target_truth), ("pred", target_pred)):
            match = ref[:, :k] == np.asarray(label)[:, None]
            count = match.sum(axis=1)
            row[f"{name}_fraction"] = float(np.mean(count > 0)) if len(ref) else 0.0
            row[f"{name}_count_mean"] = float(count.mean()) if len(ref) else 0.0
            row[f"{name}_distance_mean"] = float(neighbour_distance[:, :k][match].mean()) if match.any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def neighbour_table(target_ids: np.ndarray, neighbour_index: np.ndarray, neighbour_distance: np.ndarray,
                    *, reference_labels: np.ndarray, target_truth: np.ndarray, target_pred: np.ndarray) -> "pd.DataFrame":
    """One row per (target, rank): the target's test index, its labels, the neighbour's training index, label and distance."""
    import pandas as pd

    n, k = neighbour_index.shape
    return pd.DataFrame({
        "target": np.repeat(np.asarray(target_ids), k),
        "truth": np.repeat(np.asarray(target_truth), k),
        "pred": np.repeat(np.asarray(target_pred), k),
        "rank": np.tile(np.arange(1, k + 1), n),
        "neighbour": neighbour_index.ravel(),
        "neighbour_label": np.asarray(reference_labels)[neighbour_index].ravel(),
        "distance": neighbour_distance.ravel(),
    })


def plot_localisation(benign: "pd.DataFrame", failed: "pd.DataFrame", path: str | Path, *, title: str = "") -> Path:
    """PNG of the curves benign-truth, fault-truth and fault-pred (fraction of targets vs k)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.plot(benign["k"], benign["truth_fraction"], marker="o", label=f"benign-truth (n={int(benign['targets'].iloc[0]) if len(benign) else 0})")
        ax.plot(failed["k"], failed["truth_fraction"], marker="s", label=f"fault-truth (n={int(failed['targets'].iloc[0]) if len(failed) else 0})")
        ax.plot(failed["k"], failed["pred_fraction"], marker="^", label="fault-pred")
        ax.set_xlabel("k nearest training traces")
        ax.set_ylabel("fraction of targets with a neighbour of the label")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(p, dpi=110)
    finally:
        plt.close(fig)
    return p


__all__ = ["CURVE_COLUMNS", "normalise_traces", "nearest_traces", "localisation_curves", "neighbour_table", "plot_localisation"]
