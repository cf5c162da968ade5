"""Compare two campaigns run on the same fault list (e.g. a model and its quantised or hardened version).

Outcomes are paired by fault: a fault is *SDC* in a campaign if any of its inputs had a top-1
change there. Per layer (and per site kind over all layers) :func:`compare_campaigns` gives
both SDC rates over faults, their difference with Newcombe's paired interval
(:func:`faultlab.stats.rate_difference_interval`, finite-population corrected when the layer's
population is known) and McNemar's test on the discordant faults
(:func:`faultlab.stats.mcnemar_test`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import FaultlabError
from .export import ALL_LAYERS, SiteMap, population, prepare_results


@dataclass
class Comparison:
    """Two campaigns' paired SDC outcomes, summarised per layer (``table``) with notes."""

    label_a: str
    label_b: str
    confidence: float
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # definitions, the same for every comparison
    warnings: list[str] = field(default_factory=list)  # about these two campaigns (missing faults, other data)


def _load(directory: Path) -> tuple[pd.DataFrame, dict, dict]:
    from ..store import CampaignStore

    with CampaignStore.open_existing(directory) as store:
        return store.results_frame(), store.get_meta("identity") or {}, store.settings()


def check_same_faults(a: pd.DataFrame, b: pd.DataFrame, ident_a: dict, ident_b: dict, label_a: str, label_b: str) -> None:
    """Raise a one-line :class:`FaultlabError` unless both campaigns ran the same fault list."""
    fa, fb = ident_a.get("faults"), ident_b.get("faults")
    if fa != fb:
        raise FaultlabError(
            f"{label_a} and {label_b} ran different fault lists (fingerprints {fa} vs {fb}); compare campaigns run with the same --faults file"
        )
    cols = ["fault_id", "layer", "idx", "bits", "site", "model"]
    common = a[cols].merge(b[cols], on="fault_id", suffixes=("_a", "_b"))
    for c in cols[1:]:
        bad = common[common[f"{c}_a"].astype(str) != common[f"{c}_b"].astype(str)]
        if len(bad):
            fid = int(bad["fault_id"].iloc[0])
            raise FaultlabError(f"{label_a} and {label_b}: fault {fid} differs in {c}; compare campaigns run with the same --faults file")


def compare_frames(
    a: pd.DataFrame, b: pd.DataFrame, *, confidence: float = 0.95, sites: SiteMap | None = None, event: str = "sdc1"
) -> pd.DataFrame:
    """Per (site kind, layer) and per kind over all layers: paired SDC rates, difference and McNemar.

    Columns: ``site, layer, faults, a_events, b_events, rate_a, rate_b, difference, diff_lo,
    diff_hi, only_a, only_b, statistic, p_value, test`` (``exact`` binomial or ``chi2``
    with continuity correction), ``population``.
    """
    from ..stats import MCNEMAR_EXACT_BELOW, mcnemar_test, rate_difference_interval

    pa = prepare_results(a)
    pb = prepare_results(b)[["fault_id", f"any_{event}"]]
    m = pa.merge(pb, on="fault_id", suffixes=("_a", "_b"))
    rows = []

    def row(kind: str, layer: str, g: pd.DataFrame, pop_size: int | None) -> dict:
        xa = g[f"any_{event}_a"].to_numpy(dtype=bool)
        xb = g[f"any_{event}_b"].to_numpy(dtype=bool)
        d = rate_difference_interval(xa, xb, confidence, pop_size)
        t = mcnemar_test(xa, xb)
        n = len(g)
        return {
            "site": kind, "layer": layer, "faults": n, "a_events": int(xa.sum()), "b_events": int(xb.sum()),
            "rate_a": xa.mean() if n else float("nan"), "rate_b": xb.mean() if n else float("nan"),
            "difference": d.difference, "diff_lo": d.low, "diff_hi": d.high,
            "only_a": t.b, "only_b": t.c, "statistic": t.statistic, "p_value": t.p_value,
            "test": "exact" if t.b + t.c < MCNEMAR_EXACT_BELOW else "chi2", "population": pop_size,
        }

    for kind, gk in m.groupby("site", sort=False):
        for layer, g in gk.groupby("layer", sort=False):
            rows.append(row(kind, layer, g, population(g, sites).size))
        pop = population(gk, sites)
        proportional = pop.cells is not None and len({round(c / pop.cells[k], 12) for k, c in gk.groupby(["site", "layer"], sort=False).size().items()}) == 1
        rows.append(row(kind, ALL_LAYERS, gk, pop.size if proportional else None))
    return pd.DataFrame(rows)


def compare_campaigns(
    dir_a: str | Path, dir_b: str | Path, *, confidence: float = 0.95, sites: SiteMap | None = None
) -> Comparison:
    """Load two campaign directories, check they share their fault list, and compare them per layer."""
    da, db = Path(dir_a), Path(dir_b)
    a, ident_a, _ = _load(da)
    b, ident_b, _ = _load(db)
    label_a, label_b = str(da), str(db)
    if label_a == label_b:
        label_a, label_b = f"{da} (A)", f"{db} (B)"
    check_same_faults(a, b, ident_a, ident_b, label_a, label_b)
    notes = [
        "A fault is SDC in a campaign if any of its inputs had a top-1 change there; rates are over faults.",
        "Difference: rate(A) - rate(B) with Newcombe's paired score interval (finite-population corrected per layer when the layer's (element, bit) population is known).",
        "McNemar's test uses the discordant faults only (SDC in A only vs in B only): exact binomial below 25 of them, else chi-square with continuity correction.",
        "All-layers rows pool the faults as drawn (not weighted by layer size); they compare A and B on this fault list.",
    ]
    warnings: list[str] = []
    common = set(a["fault_id"]) & set(b["fault_id"])
    missing = len(set(a["fault_id"]) | set(b["fault_id"])) - len(common)
    if missing:
        warnings.append(f"{missing} faults finished in only one campaign are left out; the comparison pairs {len(common)} faults.")
    if ident_a.get("data") != ident_b.get("data"):
        warnings.append("The two campaigns evaluated different data (fingerprints differ); per-fault outcomes are paired by fault only.")
    if not common:
        raise FaultlabError(f"{label_a} and {label_b} have no finished fault in common; run both campaigns first")
    table = compare_frames(a, b, confidence=confidence, sites=sites)
    return Comparison(label_a, label_b, confidence, table, notes, warnings)


def comparison_section(comp: Comparison, *, with_figure: bool = True) -> str:
    """The comparison as an HTML ``<section id="compare">`` (table, figure, notes) for a report page."""
    from .html import _e, _table, fmt_pct, img_tag, rate_cell
    from .plots import comparison_figure, png_bytes

    conf = f"{100 * comp.confidence:g}%"
    heads = [("site", "l"), ("layer", "l"), ("faults", ""), ("SDC A", ""), ("SDC B", ""), (f"A − B [{conf}]", ""),
             ("A only", ""), ("B only", ""), ("McNemar", ""), ("p-value", "")]
    rows = []
    for _, r in comp.table.iterrows():
        total = r["layer"] == ALL_LAYERS
        stat = f'{r["statistic"]:.3g} <span class="ci">({r["test"]})</span>'
        rows.append(
            f'<tr class="{"total" if total else "layer"}" data-site="{_e(r["site"])}" data-layer="{_e(r["layer"])}" '
            f'data-b="{r["only_a"]}" data-c="{r["only_b"]}" data-statistic="{r["statistic"]!r}" data-p="{r["p_value"]!r}">'
            f'<td class="l">{_e(r["site"])}</td><td class="l">{_e("all layers" if total else r["layer"])}</td><td>{r["faults"]:,}</td>'
            f'<td data-rate="{r["rate_a"]!r}">{fmt_pct(r["rate_a"])}</td><td data-rate="{r["rate_b"]!r}">{fmt_pct(r["rate_b"])}</td>'
            + rate_cell(r["difference"], r["diff_lo"], r["diff_hi"], cls="diff")
            + f'<td>{r["only_a"]}</td><td>{r["only_b"]}</td><td>{stat}</td><td>{r["p_value"]:.3g}</td></tr>'
        )
    parts = [
        '<section id="compare"><h2>Comparison of two campaigns on the same faults</h2>',
        f"<p>A = <code>{_e(comp.label_a)}</code>, B = <code>{_e(comp.label_b)}</code>.</p>",
        _table(heads, rows, table_id="compare-table"),
    ]
    if with_figure and len(comp.table):
        png = png_bytes(comparison_figure(comp.table, "A", "B", comp.confidence))
        parts.append(img_tag(png, "SDC rate difference per layer (A minus B)", "compare", in_plots=False))
    parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in comp.warnings + comp.notes) + "</ul></section>")
    return "\n".join(parts)


def write_comparison_html(comp: Comparison, path: str | Path) -> Path:
    """A self-contained HTML page holding :func:`comparison_section`."""
    from .html import render_page

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    page = render_page(f"faultlab compare: {comp.label_a} vs {comp.label_b}", f"<h1>faultlab compare</h1>\n{comparison_section(comp)}")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(p)
    return p


__all__ = ["Comparison", "check_same_faults", "compare_frames", "compare_campaigns", "comparison_section", "write_comparison_html"]
