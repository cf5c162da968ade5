"""Report figures as PNG bytes (matplotlib, Agg backend): outcomes, per-layer rates, layer x bit, bits.

Each function takes a table from :mod:`faultlab.report.export` and returns a matplotlib
``Figure``; :func:`png_bytes` turns one into PNG bytes so the HTML report can inline it and
``DIR/plots/`` can hold the same file for papers. matplotlib is imported lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .export import ALL_LAYERS, EVENTS

#: Colours per outcome (colour-blind safe, Okabe-Ito), used by every figure and the HTML legend.
OUTCOME_COLORS: dict[str, str] = {
    "masked": "#9e9e9e", "non_critical": "#56B4E9", "sdc1": "#E69F00", "sdc5": "#D55E00", "due": "#000000",
}
OUTCOME_LABELS: dict[str, str] = {
    "masked": "masked", "non_critical": "non-critical", "sdc1": "SDC-1 (golden still in top-5)", "sdc5": "SDC-5", "due": "DUE (NaN/Inf)",
}
EVENT_COLORS: dict[str, str] = {"sdc1": "#E69F00", "sdc5": "#D55E00", "due": "#000000"}
FIELD_COLORS: dict[str, str] = {"sign": "#CC79A7", "exponent": "#0072B2", "mantissa": "#009E73", "magnitude": "#009E73", "?": "#999999"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 110})
    return plt


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes; closes it."""
    import io

    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def outcome_figure(breakdown: pd.DataFrame) -> Any:
    """Stacked horizontal bars: share of (fault, input) pairs and of faults (worst outcome) per outcome."""
    plt = _plt()
    rows = breakdown.to_dict("records")
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.1))
    names = list(OUTCOME_COLORS)
    labels = [f"{r['site']} · {r['unit']}" for r in rows]
    left = np.zeros(len(rows))
    for name in names:
        share = np.array([r[name] / r["total"] if r["total"] else 0.0 for r in rows])
        ax.barh(labels, share, left=left, color=OUTCOME_COLORS[name], label=OUTCOME_LABELS[name], edgecolor="white", linewidth=0.5)
        left += share
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    ax.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False, fontsize=8)
    ax.set_title("Outcome breakdown (faults: worst outcome over their inputs)", loc="left", fontsize=10)
    return fig


def _errorbar_rows(ax: Any, labels: list[str], table: pd.DataFrame, *, unit: str = "fault") -> None:
    x = np.arange(len(labels))
    width = 0.8 / len(EVENTS)
    for i, (e, label) in enumerate(EVENTS.items()):
        rate = table[f"{e}_{unit}_rate"].to_numpy(dtype=float)
        lo = table[f"{e}_{unit}_lo"].to_numpy(dtype=float)
        hi = table[f"{e}_{unit}_hi"].to_numpy(dtype=float)
        yerr = np.vstack([np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)])
        ax.errorbar(x + (i - 1) * width, rate, yerr=yerr, fmt="o", ms=4, capsize=2.5, lw=1, color=EVENT_COLORS[e], label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=35, ha="right")
    ax.yaxis.set_major_formatter(_plt().FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)


def layer_rate_figure(rates: pd.DataFrame, confidence: float) -> Any:
    """Per layer: fraction of faults with SDC-1 / SDC-5 / DUE, with their confidence intervals."""
    plt = _plt()
    kinds = list(dict.fromkeys(rates["site"]))
    fig, axes = plt.subplots(len(kinds), 1, figsize=(7.5, 2.9 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        t = rates[rates["site"] == kind]
        _errorbar_rows(ax, [("all" if l == ALL_LAYERS else l) for l in t["layer"]], t)
        ax.set_title(f"{kind} faults: rate per layer, {100 * confidence:g}% intervals", loc="left", fontsize=10)
        ax.set_ylabel("fraction of faults")
    axes[0, 0].legend(frameon=False, ncol=3, loc="upper right")
    fig.tight_layout()
    return fig


def heatmap_figure(matrix: pd.DataFrame, event: str = "sdc1") -> Any:
    """Layer x bit heat map of the fraction of faults with ``event`` (grey: no fault drawn there)."""
    plt = _plt()
    kinds = list(dict.fromkeys(matrix.index.get_level_values("site")))
    n_rows = [int((matrix.index.get_level_values("site") == k).sum()) for k in kinds]
    fig, axes = plt.subplots(
        len(kinds), 1, figsize=(8.2, 0.32 * sum(n_rows) + 1.3 * len(kinds) + 0.4), squeeze=False,
        gridspec_kw={"height_ratios": [max(r, 1) + 2 for r in n_rows]},
    )
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#eeeeee")
    im = None
    for ax, kind in zip(axes[:, 0], kinds):
        m = matrix.xs(kind, level="site")
        data = np.ma.masked_invalid(m.to_numpy(dtype=float))
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(m.index)))
        ax.set_yticklabels(list(m.index))
        cols = list(m.columns)
        step = 1 if len(cols) <= 16 else 4
        ticks = [i for i, c in enumerate(cols) if int(c) % step == 0 or i == len(cols) - 1]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(cols[i]) for i in ticks])
        ax.set_xlabel("bit position (0 = LSB)")
        ax.set_title(f"{kind} faults: fraction with {EVENTS.get(event, event)} per layer and bit", loc="left", fontsize=10)
        for side in ("top", "right", "left", "bottom"):
            ax.spines[side].set_visible(False)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.02)
        cb.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    return fig


def bit_figure(bits: pd.DataFrame, fields: pd.DataFrame, confidence: float) -> Any:
    """SDC-1 rate over faults by bit position (coloured by field) and by sign/exponent/mantissa field."""
    plt = _plt()
    kinds = list(dict.fromkeys(bits["site"]))
    fig, axes = plt.subplots(len(kinds), 2, figsize=(9, 2.8 * len(kinds)), squeeze=False, gridspec_kw={"width_ratios": [3, 1]})
    for row, kind in enumerate(kinds):
        ax = axes[row, 0]
        t = bits[bits["site"] == kind]
        for fld, g in t.groupby("field", sort=False):
            rate, lo, hi = (g[c].to_numpy(dtype=float) for c in ("sdc1_fault_rate", "sdc1_fault_lo", "sdc1_fault_hi"))
            ax.errorbar(g["bit"], rate, yerr=np.vstack([np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)]),
                        fmt="o", ms=3.5, capsize=2, lw=0.9, color=FIELD_COLORS.get(fld, "#999999"), label=fld)
        ax.set_xlabel("bit position (0 = LSB)")
        ax.set_ylabel("fraction of faults")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{kind}: SDC-1 rate by bit, {100 * confidence:g}% intervals", loc="left", fontsize=10)
        ax.legend(frameon=False, loc="upper left")
        ax2 = axes[row, 1]
        f = fields[fields["site"] == kind] if not fields.empty else fields
        if not f.empty:
            rate, lo, hi = (f[c].to_numpy(dtype=float) for c in ("sdc1_fault_rate", "sdc1_fault_lo", "sdc1_fault_hi"))
            x = np.arange(len(f))
            ax2.bar(x, rate, color=[FIELD_COLORS.get(v, "#999999") for v in f["field"]], width=0.6,
                    yerr=np.vstack([np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)]), capsize=3, ecolor="#333333")
            ax2.set_xticks(x)
            ax2.set_xticklabels(list(f["field"]))
            ax2.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
            ax2.set_ylim(bottom=0)
            ax2.grid(axis="y", alpha=0.3)
        ax2.set_title("by field", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def comparison_figure(table: pd.DataFrame, label_a: str, label_b: str, confidence: float) -> Any:
    """Per layer: SDC rate of A minus B with its paired interval (left of 0: B worse)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(table) + 1.2))
    labels = [f"{s} · {'all layers' if l == ALL_LAYERS else l}" for s, l in zip(table["site"], table["layer"])]
    d, lo, hi = (table[c].to_numpy(dtype=float) for c in ("difference", "diff_lo", "diff_hi"))
    y = np.arange(len(labels))
    ax.errorbar(d, y, xerr=np.vstack([np.clip(d - lo, 0, None), np.clip(hi - d, 0, None)]), fmt="o", ms=4, capsize=2.5, color="#0072B2")
    ax.axvline(0, color="#555555", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:+.0f}%"))
    ax.set_xlabel(f"SDC rate over faults: {label_a} minus {label_b}")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Paired difference per layer, {100 * confidence:g}% intervals", loc="left", fontsize=10)
    return fig


def write_pngs(images: dict[str, bytes], directory: str | Path) -> list[Path]:
    """Write ``{name: png bytes}`` as ``directory/name.png``; returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in images.items():
        p = d / f"{name}.png"
        p.write_bytes(data)
        out.append(p)
    return out


__all__ = [
    "OUTCOME_COLORS", "OUTCOME_LABELS", "png_bytes", "outcome_figure", "layer_rate_figure", "heatmap_figure",
    "bit_figure", "comparison_figure", "write_pngs",
]
