"""Tabular reports: tf_injector's per-fault ``report.csv`` and the per-layer outcome table."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

REPORT_COLUMNS = [
    "inj_id", "target_layer", "site", "bit_pos", "n_injections",
    "top_1_correct", "top_5_correct", "top_1_robust", "top_5_robust",
    "masked", "non_critical", "critical", "sdc5", "due", "criterion",
]


def report_frame(results: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """One row per fault with tf_injector's columns (``critical`` = top-1 changed) plus sdc5, due."""
    df = pd.DataFrame(
        {
            "inj_id": results["fault_id"],
            "target_layer": results["layer"],
            "site": results["site"],
            "bit_pos": [int(b.split(";")[0]) if b else -1 for b in results["bits"]],
            "n_injections": results["n"],
            "top_1_correct": results["top1_correct"],
            "top_5_correct": results["top5_correct"],
            "top_1_robust": results["top1_robust"],
            "top_5_robust": results["top5_robust"],
            "masked": results["masked"],
            "non_critical": results["non_critical"],
            "critical": results["sdc1"],
            "sdc5": results["sdc5"],
            "due": results["due"],
            "criterion": criterion,
        }
    )
    return df[REPORT_COLUMNS]


def write_report_csv(results: pd.DataFrame | Iterable[pd.DataFrame], path: str | Path, criterion: str) -> Path:
    """tf_injector's ``report.csv`` from a results frame, or from chunks of one (e.g. ``CampaignStore.result_chunks()``) written as they come."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    chunks = [results] if isinstance(results, pd.DataFrame) else results
    with p.open("w", newline="") as fh:
        first = True
        for chunk in chunks:
            report_frame(chunk, criterion).to_csv(fh, index=False, header=first)
            first = False
        if first:  # no results: the header alone
            pd.DataFrame(columns=REPORT_COLUMNS).to_csv(fh, index=False)
    return p


def layer_table(results: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (site kind, layer): faults, (fault, input) pairs, and the rate of each outcome over pairs.

    Each rate comes with a Wilson interval (``<rate>_lo``/``<rate>_hi``) at ``confidence`` that counts
    faults, not pairs, as the sampled units (:func:`faultlab.stats.pair_rate_interval`): pairs sharing
    a fault are correlated, so an interval over pairs as if independent would be far too narrow.
    ``results`` is a results frame (one row per fault), or per-layer sums with ``faults`` and ``n_nn``
    columns (``CampaignStore.layer_sums()``, which keeps a long campaign out of memory).
    """
    if results.empty:
        return pd.DataFrame(columns=["site", "layer", "faults", "pairs"])
    cols = ["n", *OUTCOMES]
    if "faults" in results.columns:
        agg = results[["site", "layer", "faults", *cols, "n_nn"]].copy()
    else:
        df = results.assign(n_nn=results["n"].astype("int64") ** 2)
        g = df.groupby(["site", "layer"], sort=False)
        agg = g[cols + ["n_nn"]].sum()
        agg.insert(0, "faults", g.size())
        agg = agg.reset_index()
    return _with_rates(agg.rename(columns={"n": "pairs"}), confidence)


OUTCOMES = ("masked", "non_critical", "sdc1", "sdc5", "due")


def _with_rates(agg: pd.DataFrame, confidence: float) -> pd.DataFrame:
    from ..stats import pair_rate_interval

    agg = agg.reset_index(drop=True)
    n, nn = agg["pairs"].to_numpy(), agg.pop("n_nn").to_numpy()
    for col in OUTCOMES:
        k = agg[col].to_numpy()
        agg[f"{col}_rate"] = k / n
        lo, hi = pair_rate_interval(k, n, nn, confidence)
        agg[f"{col}_lo"], agg[f"{col}_hi"] = lo, hi
    return agg


__all__ = ["REPORT_COLUMNS", "report_frame", "write_report_csv", "layer_table"]
