"""Reports of an analysis: the results CSV, the per-run CSV and a self-contained HTML page with box plots."""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from .analysis import Analysis, format_value, metric_samples, runs_table
from .store import MutationStore

CSV_COLUMNS = ("operator", "value", "setting", "runs_original", "runs_mutant", "mean_original", "mean_mutant",
               "std_original", "std_mutant", "p_value", "effect_size", "power", "killed", "triviality")
RUNS_COLUMNS = ("operator", "value", "setting", "run", "seed", "status", "metric", "error")


def _num(v: float) -> str:
    """Full precision (repr), empty for NaN: p-values are never rounded."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def result_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """One dict per mutant with exactly :data:`CSV_COLUMNS`."""
    rows = []
    for m in analysis.mutants:
        c = m.comparison
        rows.append({
            "operator": m.operator, "value": format_value(m.value), "setting": m.setting, "runs_original": c.runs_original,
            "runs_mutant": c.runs_mutant, "mean_original": _num(c.mean_original), "mean_mutant": _num(c.mean_mutant),
            "std_original": _num(c.std_original), "std_mutant": _num(c.std_mutant), "p_value": _num(c.p_value),
            "effect_size": _num(c.effect_size), "power": _num(c.power),
            "killed": "" if c.killed is None else str(c.killed), "triviality": _num(m.triviality),
        })
    return rows


def write_csv(analysis: Analysis, path: str | Path) -> Path:
    p = Path(path)
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(result_rows(analysis))
    return p


def write_runs_csv(store: MutationStore, analysis: Analysis, path: str | Path) -> Path:
    p = Path(path)
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUNS_COLUMNS)
        w.writeheader()
        w.writerows(runs_table(store, analysis))
    return p


def _box_plot_png(title: str, samples: dict[str, Any], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = list(samples)
    data = [[v for v in samples[k] if math.isfinite(v)] or [math.nan] for k in labels]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.2))
    ax.boxplot(data, tick_labels=labels) if _has_tick_labels() else ax.boxplot(data, labels=labels)
    ax.set_title(title)
    ax.set_ylabel(metric)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _has_tick_labels() -> bool:
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return (major, minor) >= (3, 9)


def write_html(store: MutationStore, analysis: Analysis, path: str | Path) -> Path:
    """One HTML file (images inlined as base64): the results table, killability and a box plot per operator."""
    rows = result_rows(analysis)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>faultlab mutation report: {esc(analysis.model)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.k{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>Mutation report: {esc(analysis.model)}</h1>",
        f"<p>metric <b>{esc(analysis.metric)}</b> ({esc(analysis.direction)} is better), test {esc(analysis.test)}; "
        f"mutation score vs training metric {esc(str(analysis.train_metric))}: {esc(_num(analysis.mutation_score) or 'n/a')}</p>",
        "<table><tr>" + "".join(f"<th>{c}</th>" for c in CSV_COLUMNS) + "</tr>",
    ]
    for r, m in zip(rows, analysis.mutants):
        cls = " class='k'" if r["killed"] == "True" else ""
        cells = {**r, "triviality": "" if math.isnan(m.triviality) else f"{m.triviality:.3f}"}
        parts.append("<tr>" + "".join(f"<td{cls if c == 'killed' else ''}>{esc(str(cells[c]))}</td>" for c in CSV_COLUMNS)
                     + "</tr>")
    parts.append("</table><h2>Killability per operator</h2><table><tr><th>operator</th><th>killability</th></tr>")
    for op, k in analysis.killability.items():
        parts.append(f"<tr><td>{esc(op)}</td><td>{k:.3f}</td></tr>")
    parts.append("</table><h2>Box plots</h2>")
    for op, samples in metric_samples(store, analysis).items():
        png = _box_plot_png(op, samples, analysis.metric)
        parts.append(f"<h3>{esc(op)}</h3><img alt='box plot {esc(op)}' src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    p = Path(path)
    p.write_text("\n".join(parts), encoding="utf-8")
    return p


__all__ = ["CSV_COLUMNS", "RUNS_COLUMNS", "result_rows", "write_csv", "write_runs_csv", "write_html"]
