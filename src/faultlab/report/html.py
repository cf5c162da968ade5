"""The campaign report: one self-contained HTML page (PNG plots inlined as data URIs) plus ``plots/*.png``.

:func:`build_report` reads a campaign directory's store, computes every table with
:mod:`faultlab.report.export`, draws the figures with :mod:`faultlab.report.plots` and writes
``DIR/report.html`` and ``DIR/plots/``. The page needs nothing from the network: no scripts,
no external CSS, no fonts. Every number it shows is also in a ``data-*`` attribute at full
precision, so tests and scripts can read them back.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from ..faults import Site
from .export import (
    ALL_LAYERS, EVENTS, SiteMap, bit_table, critical_faults, field_table, layer_bit_matrix, outcome_breakdown, rate_table,
    write_per_input_parquet,
)

log = logging.getLogger("faultlab")

ProgressFn = Callable[[int, int], None]

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"
PER_INPUT_NAME = "outcomes.parquet"


# ----------------------------------------------------------------------------- inputs
def package_versions() -> dict[str, str]:
    """Versions of python, faultlab, torch, numpy and keras in this environment (without importing keras)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("faultlab", "torch", "numpy", "keras"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sites_from_settings(settings: Mapping[str, Any]) -> SiteMap | None:
    """Sites recorded in a campaign's settings (``settings['sites']``: dicts with name, kind, shape, dtype), if any."""
    raw = settings.get("sites")
    if not raw:
        return None
    try:
        sites = [Site(d["name"], d["kind"], d.get("layer", d["name"]), d.get("layer_type", ""), tuple(d["shape"]), d["dtype"]) for d in raw]
    except (KeyError, TypeError):
        return None
    return {(s.kind, s.name): s for s in sites}


def sites_from_model(model: str, data: str | None = None, *, weights: str | None = None) -> SiteMap:
    """Sites of a model reference (shapes only; activation shapes traced on ``data``'s first sample)."""
    from ..datasets import load_dataset
    from ..targets import load_target

    target = load_target(model, weights=weights)
    if hasattr(target, "trace") and data:
        name = data.split("[", 1)[0]
        split = "test"
        for s in ("-test", "-train", "-all"):
            if name.endswith(s):
                name, split = name[: -len(s)], s[1:]
        try:
            ds = load_dataset(name, split=split)  # type: ignore[arg-type]
            target.trace(target.prepare(ds.x[:1]))
        except Exception as e:  # activation shapes stay unknown; weight sites still work
            log.warning("report: could not trace activation shapes on %s (%s)", data, e)
    return {(s.kind, s.name): s for s in target.sites()}


def resolve_sites(settings: Mapping[str, Any], *, model: str | None = None, data: str | None = None) -> tuple[SiteMap | None, str]:
    """The campaign's sites (for populations / FPC) and a sentence saying where they came from.

    Order: sites recorded in the settings; the ``model`` the user names; the campaign's own
    model only when it is one of faultlab's bundled ``faultlab.*`` factories (a report never
    imports user code the user did not name).
    """
    recorded = sites_from_settings(settings)
    if recorded is not None:
        return recorded, "site shapes recorded in the campaign's settings"
    data = data or settings.get("data")
    if model:
        return sites_from_model(model, data), f"site shapes from --model {model}"
    stored = str(settings.get("model") or "")
    if stored.startswith("faultlab.") and ":" in stored:
        try:
            return sites_from_model(stored, data), f"site shapes from the campaign's model {stored}"
        except Exception as e:  # a report must still be written
            return None, f"site shapes unknown ({stored} did not load: {e})"
    return None, "site shapes unknown: pass --model to 'faultlab report' to enable the finite-population correction"


PLAN_SUFFIX = ".plan.json"


def plan_sidecar(faults_csv: str | Path) -> Path:
    """Where ``faultlab plan -o faults.csv`` records its plan (margin, confidence, strata): ``faults.plan.json``."""
    p = Path(faults_csv)
    return p.with_name(p.stem + PLAN_SUFFIX)


def recorded_plan(settings: Mapping[str, Any], identity: Mapping[str, Any], directory: str | Path | None = None) -> dict[str, Any]:
    """Margin, confidence and plan of the campaign, from the plan file beside its fault list.

    Looks for ``faults.plan.json`` next to ``settings['fault_source']`` (as given, then inside
    the campaign ``directory``) and uses it only when its fault fingerprint matches the
    campaign's. Empty when the settings already hold a margin or no matching plan is found.
    """
    if "margin" in settings:
        return {}
    src = settings.get("fault_source")
    if not src or src == "None":
        return {}
    candidates = [plan_sidecar(src)]
    if directory is not None:
        candidates.append(plan_sidecar(Path(directory) / Path(src).name))
    for side in candidates:
        try:
            rec = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("faults_fingerprint") and rec.get("faults_fingerprint") == identity.get("faults"):
            return {"margin": rec.get("margin"), "confidence": rec.get("confidence"), "plan": {k: rec.get(k) for k in ("by", "p", "t", "seed", "total")}}
    return {}


# ----------------------------------------------------------------------------- formatting
def _count(x: Any) -> str:
    return "–" if x is None or pd.isna(x) else f"{int(x):,}"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt_pct(x: float) -> str:
    """A rate as a percentage with enough digits for small rates (``2.13%``, ``0.041%``)."""
    if x != x:  # NaN
        return "–"
    v = 100.0 * x
    if v == 0:
        return "0%"
    if abs(v) < 0.001:
        return "<0.001%" if v > 0 else "-<0.001%"
    if abs(v) < 0.1:
        return f"{v:.3f}%"
    return f"{v:.2f}%"


def rate_cell(rate: float, lo: float, hi: float, *, k: int | None = None, n: Any = None, cls: str = "rate") -> str:
    """``<td>`` with ``rate [lo, hi]`` and the exact numbers in data attributes."""
    attrs = f' data-rate="{rate!r}" data-lo="{lo!r}" data-hi="{hi!r}"'
    if k is not None:
        attrs += f' data-k="{k}"'
    if n is not None:
        attrs += f' data-n="{n}"'
    return f'<td class="{cls}"{attrs}>{fmt_pct(rate)} <span class="ci">[{fmt_pct(lo)}, {fmt_pct(hi)}]</span></td>'


def img_tag(png: bytes, alt: str, name: str, *, in_plots: bool = True) -> str:
    """An ``<img>`` with the PNG inline as a base64 data URI (captioned with its ``plots/`` file when it has one)."""
    data = base64.b64encode(png).decode("ascii")
    where = f" · <code>plots/{_e(name)}.png</code>" if in_plots else ""
    return f'<figure><img id="img-{_e(name)}" src="data:image/png;base64,{data}" alt="{_e(alt)}"><figcaption>{_e(alt)}{where}</figcaption></figure>'


CSS = """
:root { --fg:#1d2329; --muted:#5f6b76; --line:#dde3e8; --bg:#ffffff; --band:#f6f8fa; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 1120px; margin: 0 auto; padding: 28px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
p, li { max-width: 80ch; } .muted, figcaption { color: var(--muted); font-size: 12.5px; }
nav { margin: 10px 0 0; font-size: 13px; } nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:18px 0 6px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:150px; background:var(--band); }
.card .v { font-size:20px; font-weight:600; } .card .l { color:var(--muted); font-size:12px; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; vertical-align: top; }
th { background: var(--band); font-weight: 600; position: sticky; top: 0; }
td.l, th.l { text-align: left; } tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
tbody tr:nth-child(even) td { background: #fbfcfd; }
.ci { color: var(--muted); font-size: 12px; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 14px 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
code { font-size: 12.5px; background: var(--band); padding: 1px 4px; border-radius: 3px; }
dl.kv { display:grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 13px; } dl.kv dt { color: var(--muted); } dl.kv dd { margin:0; word-break: break-all; }
.note { border-left: 3px solid var(--accent); background: var(--band); padding: 8px 12px; margin: 10px 0; }
"""


def render_page(title: str, body: str) -> str:
    """A complete, self-contained HTML document (inline CSS, no scripts)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )


def _table(headers: Iterable[tuple[str, str]], rows: Iterable[str], *, table_id: str) -> str:
    head = "".join(f'<th class="{c}">{h}</th>' for h, c in headers)
    return f'<div class="scroll"><table id="{_e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _kv(items: Mapping[str, Any]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items.items()) + "</dl>"


# ----------------------------------------------------------------------------- the report
def adaptive_savings(settings: Mapping[str, Any], faults_run: int) -> tuple[int, int] | None:
    """``(fixed-plan faults, faults saved)`` for an adaptive campaign, from ``settings['adaptive']``.

    Reads ``fixed_plan_faults`` (or ``fixed_faults``) and, when present, ``faults_saved``; the
    saving defaults to the fixed plan minus the faults actually run.
    """
    ad = settings.get("adaptive")
    if not isinstance(ad, Mapping):
        return None
    fixed = ad.get("fixed_plan_faults", ad.get("fixed_faults"))
    if not isinstance(fixed, (int, float)):
        return None
    saved = ad.get("faults_saved", int(fixed) - faults_run)
    return int(fixed), int(saved)


def _strata_section(results: pd.DataFrame, settings: Mapping[str, Any], confidence: float) -> str:
    """Per-stratum SDC-1 rates (faults with a stored stratum, e.g. adaptive rounds) and the adaptive saving."""
    from ..stats import wilson_interval

    saving = adaptive_savings(settings, len(results))
    have = results["stratum"].notna() if "stratum" in results else pd.Series(False, index=results.index)
    if not have.any() and saving is None:
        return ""
    parts = ['<section id="strata"><h2>Strata</h2>']
    if saving is not None:
        fixed, saved = saving
        parts.append(
            f'<p class="note" id="adaptive" data-fixed="{fixed}" data-run="{len(results)}" data-saved="{saved}">Adaptive campaign: '
            f"{len(results):,} faults run; the fixed plan (p = 0.5) would have run {fixed:,}: {saved:,} faults saved"
            f" ({fmt_pct(saved / fixed) if fixed else '–'}).</p>"
        )
    if have.any():
        ad = settings.get("adaptive")
        pops = ad.get("populations", {}) if isinstance(ad, Mapping) else {}
        rows = []
        for name, g in results[have].groupby("stratum", sort=False):
            big_n = pops.get(name)
            k, n = int((g["sdc1"] > 0).sum()), len(g)
            lo, hi = wilson_interval(k, n, confidence, big_n)
            rows.append(
                f'<tr data-stratum="{_e(name)}"><td class="l">{_e(name)}</td><td>{_count(big_n)}</td><td>{n:,}</td>'
                + rate_cell(k / n, lo, hi, k=k, n=n, cls="rate fault sdc1")
                + f"<td>±{fmt_pct((hi - lo) / 2)}</td></tr>"
            )
        heads = [("stratum", "l"), ("N", ""), ("faults", ""), (f"SDC-1 over faults [{100 * confidence:g}%]", ""), ("achieved ±", "")]
        parts.append(_table(heads, rows, table_id="strata-table"))
    parts.append("</section>")
    return "\n".join(parts)


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote, and the tables it computed (for the CLI and tests)."""

    html: Path
    plots: list[Path]
    per_input: Path | None = None
    rates: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    notes: list[str] = field(default_factory=list)


def _layer_rows(rates: pd.DataFrame, asked: float | None, unit: str) -> list[str]:
    """Rows of the per-layer rate table, ``unit`` ``fault`` (with the achieved margin) or ``pair``."""
    rows = []
    for _, r in rates.iterrows():
        total = r["layer"] == ALL_LAYERS
        count = "faults" if unit == "fault" else "pairs"
        cells = [
            f'<td class="l">{_e(r["site"])}</td>',
            f'<td class="l">{_e("all layers" if total else r["layer"])}</td>',
            f'<td data-{count}="{r[count]}">{r[count]:,}</td>',
        ]
        if unit == "fault":
            cells.append(f"<td>{_count(r['population'])}</td>")
        for e in EVENTS:
            cells.append(rate_cell(r[f"{e}_{unit}_rate"], r[f"{e}_{unit}_lo"], r[f"{e}_{unit}_hi"], k=r[f"{e}_{count}"], n=r[count], cls=f"rate {unit} {e}"))
        if unit == "fault":
            ok = "" if asked is None else (" ✓" if r["margin"] <= asked + 1e-12 else " ✗")
            cells.append(f'<td class="margin" data-margin="{r["margin"]!r}">±{fmt_pct(r["margin"])}{ok}</td>')
        attrs = f' data-site="{_e(r["site"])}" data-layer="{_e(r["layer"])}"'
        rows.append(f'<tr class="{"total" if total else "layer"}"{attrs}>{"".join(cells)}</tr>')
    return rows


def _rate_group_rows(t: pd.DataFrame, key: str) -> list[str]:
    rows = []
    for _, r in t.iterrows():
        cells = [f'<td class="l">{_e(r["site"])}</td>', f'<td class="l">{_e(r[key])}</td>', f"<td>{r['faults']:,}</td>"]
        cells.append(f"<td>{_count(r['population'])}</td>")
        for e in EVENTS:
            cells.append(rate_cell(r[f"{e}_fault_rate"], r[f"{e}_fault_lo"], r[f"{e}_fault_hi"], k=r[f"{e}_faults"], n=r["faults"], cls=f"rate fault {e}"))
        rows.append(f'<tr data-site="{_e(r["site"])}" data-{key}="{_e(r[key])}">{"".join(cells)}</tr>')
    return rows


def build_report(
    directory: str | Path,
    *,
    confidence: float = 0.95,
    sites: SiteMap | None = None,
    sites_note: str = "",
    fpc: bool = True,
    top: int = 20,
    per_input: bool = False,
    progress: ProgressFn | None = None,
    extra_settings: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """Write ``DIR/report.html`` and ``DIR/plots/*.png`` (and ``DIR/outcomes.parquet`` with ``per_input``).

    ``sites`` gives each layer's population (elements x bit width) for the finite-population
    correction; without it intervals are plain Wilson intervals and the page says so.
    ``extra_settings`` (e.g. :func:`recorded_plan`'s margin and confidence) are shown with the
    stored settings.
    """
    from ..stats import normal_quantile
    from ..store import CampaignStore
    from . import plots

    normal_quantile(confidence)  # validates: a fraction in (0, 1)
    d = Path(directory)
    steps = 6 + int(per_input)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, steps)

    with CampaignStore.open_existing(d) as store:
        results = store.results_frame(with_codes=per_input)
        settings = store.settings()
        identity = store.get_meta("identity") or {}
        clean_top1 = store.get_meta("clean_top1")
        n_planned = len(store.faults())
    settings = {**settings, **(extra_settings or {})}
    if results.empty:
        from ..errors import FaultlabError

        raise FaultlabError(f"{d}: the campaign has no results yet; run it ('faultlab run --out {d}') before reporting")
    step()
    notes: list[str] = []
    plan = settings.get("plan") if isinstance(settings.get("plan"), Mapping) else {}
    by_field = plan.get("by", settings.get("by")) == "bit-field"
    rates = rate_table(results, confidence=confidence, sites=sites, fpc=fpc, by_field=by_field)
    bits = bit_table(results, confidence=confidence, sites=sites, fpc=fpc)
    fields = field_table(results, confidence=confidence, sites=sites, fpc=fpc)
    matrix = layer_bit_matrix(results)
    breakdown = outcome_breakdown(results)
    critical = critical_faults(results, top)
    step()

    images: dict[str, bytes] = {"outcomes": plots.png_bytes(plots.outcome_figure(breakdown))}
    images["layer_rates"] = plots.png_bytes(plots.layer_rate_figure(rates, confidence))
    step()
    if not matrix.empty:
        images["layer_bit_heatmap"] = plots.png_bytes(plots.heatmap_figure(matrix))
    step()
    if not bits.empty:
        images["bit_position"] = plots.png_bytes(plots.bit_figure(bits, fields, confidence))
    step()
    plot_paths = plots.write_pngs(images, d / PLOTS_DIR)

    # ---- assumptions, in words
    conf_pct = f"{100 * confidence:g}%"
    notes.append(
        f"Rates over faults: the fraction of faults whose event happened on at least one input (a fault is SDC-1 if any input's top-1 changed). "
        f"Faults are the sampled units, so their Wilson {conf_pct} interval is the statistically sound one for a sampled fault list."
    )
    notes.append(
        "Rates over (fault, input) pairs: the fraction of all evaluated pairs with the event. Pairs that share a fault are correlated, "
        "so their interval counts faults, not pairs, as the sampled units: Wilson's on the effective sample size (sum of inputs per fault)^2 / "
        "(sum of squares), the number of faults when every fault saw the same inputs (each fault's own rate varies at most like a Bernoulli draw); "
        "no finite-population correction."
    )
    if sites is not None and fpc:
        notes.append(
            "Finite-population correction: each layer's population is its number of elements x the bit width of its dtype (every bit of every element could be drawn), "
            "and faults are taken as drawn without replacement (no fault repeats). If the list was restricted (e.g. --bits), the true population is smaller and the "
            "true intervals are a little narrower than shown (the correction shown is conservative)."
        )
        notes.append(
            "Per-layer rates assume the layer's faults are a simple random sample of its (element, bit) pairs (random, per-layer and per-layer-bit plans). "
            "Rows that pool layers sampled at different rates (all layers, per bit, per field) are population-weighted (stratified) estimates with a Wilson interval "
            "on an effective sample size (the smaller of Kish's and the design-based p(1-p)/V from the per-layer variances) and no finite-population correction; "
            "pooled rows cover only layers with at least one fault in them."
        )
    elif not fpc:
        notes.append("Finite-population correction turned off (--no-fpc): intervals are plain Wilson intervals, as for an infinite population.")
    if by_field and sites is not None and fpc:
        notes.append(
            "The fault list was planned per bit field (sign / exponent / mantissa), so each layer's rate is weighted over its field cells "
            "(elements x field width each), not a plain fraction of its faults."
        )
    if sites_note:
        notes.append(f"Populations: {sites_note}.")
    for note in sorted({n for n in rates["fpc_note"] if n and n not in ("site shapes unknown", "FPC turned off", "population-weighted over cells sampled unequally")}):
        notes.append(f"No finite-population correction where: {note}.")
    multi = int((results["bits"].astype(str).str.contains(";")).sum())
    if multi:
        notes.append(f"{multi} multi-bit faults are left out of the per-bit heat map and bit tables (they count in the per-layer tables).")
    if len(results) < n_planned:
        notes.append(f"The campaign is incomplete: {len(results):,} of {n_planned:,} planned faults have results; rates cover finished faults only.")
    notes.append("Package versions are those of the environment that wrote this report" + (" and, where recorded, of the campaign run." if settings.get("versions") else "; the campaign did not record its own."))

    asked = settings.get("margin")
    asked_conf = settings.get("confidence")
    asked_f = float(asked) if isinstance(asked, (int, float)) else None

    # ---- page
    pairs = int(results["n"].sum())
    n_inputs = settings.get("n_inputs", "?")
    total_rows = rates[rates["layer"] == ALL_LAYERS]
    worst_margin = float(rates.loc[rates["layer"] != ALL_LAYERS, "margin"].max())
    cards = [
        ("faults run", f"{len(results):,}"), ("inputs per fault", f"{n_inputs:,}" if isinstance(n_inputs, int) else str(n_inputs)),
        ("(fault, input) pairs", f"{pairs:,}"), ("clean top-1", "–" if clean_top1 is None else fmt_pct(clean_top1)),
    ]
    for _, r in total_rows.iterrows():
        cards.append((f"SDC-1 rate, {r['site']} faults", f"{fmt_pct(r['sdc1_fault_rate'])} ± {fmt_pct(r['margin'])}"))
    other_conf = isinstance(asked_conf, (int, float)) and abs(float(asked_conf) - confidence) > 1e-12
    margin_line = (
        f"Margin asked: ±{fmt_pct(asked_f)} at {100 * float(asked_conf or confidence):g}% · achieved (widest layer, SDC-1 over faults): ±{fmt_pct(worst_margin)} at {conf_pct}"
        + (f" (this page uses {conf_pct}; rerun with --confidence {asked_conf} to compare like with like)" if other_conf else "")
        if asked_f is not None
        else f"No margin was asked for (no plan recorded in the settings) · achieved half-width (widest layer, SDC-1 over faults): ±{fmt_pct(worst_margin)} at {conf_pct}"
    )
    title = f"faultlab report: {settings.get('model', d.name)}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">Campaign <code>{_e(d)}</code> · data {_e(settings.get("data", "?"))} · criterion {_e(settings.get("criterion", "?"))} · '
        f'written {_e(_dt.datetime.now().strftime("%Y-%m-%d %H:%M"))}</p>',
        '<nav><a href="#outcomes">Outcomes</a><a href="#layer-rates">Rates per layer</a><a href="#heatmap">Layer × bit</a>'
        '<a href="#bits">Bits</a><a href="#critical">Critical faults</a><a href="#settings">Settings</a><a href="#assumptions">Assumptions</a></nav>',
        '<div class="cards">' + "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="l">{_e(k)}</div></div>' for k, v in cards) + "</div>",
        f'<p class="note" id="margin" data-asked="{asked_f!r}" data-achieved="{worst_margin!r}">{_e(margin_line)}</p>',
    ]
    # outcomes
    body.append('<section id="outcomes"><h2>Outcome breakdown</h2>')
    body.append("<p>Every (fault, input) pair gets one outcome; a fault's outcome is its worst over its inputs (DUE &gt; SDC-5 &gt; SDC-1 &gt; non-critical &gt; masked). "
                "SDC-1 here means the top-1 class changed but the golden class stayed in the top-5; SDC-5 means it left the top-5.</p>")
    heads = [("site", "l"), ("counted over", "l"), ("total", ""), ("masked", ""), ("non-critical", ""), ("SDC-1 (in top-5)", ""), ("SDC-5", ""), ("DUE", "")]
    rows = []
    for _, r in breakdown.iterrows():
        cells = [f'<td class="l">{_e(r["site"])}</td>', f'<td class="l">{_e(r["unit"])}</td>', f"<td>{r['total']:,}</td>"]
        for o in ("masked", "non_critical", "sdc1", "sdc5", "due"):
            share = r[o] / r["total"] if r["total"] else float("nan")
            cells.append(f'<td data-outcome="{o}" data-count="{r[o]}">{r[o]:,} <span class="ci">({fmt_pct(share)})</span></td>')
        rows.append(f'<tr data-site="{_e(r["site"])}" data-unit="{_e(r["unit"])}">{"".join(cells)}</tr>')
    body.append(_table(heads, rows, table_id="outcome-table"))
    body.append(img_tag(images["outcomes"], "Outcome breakdown per site kind", "outcomes") + "</section>")
    # layer rates
    body.append(f'<section id="layer-rates"><h2>SDC-1 / SDC-5 / DUE rate per layer ({conf_pct} intervals)</h2>')
    body.append("<p><b>Over faults</b>: fraction of faults with the event on any input (Wilson interval"
                + (", finite-population corrected" if sites is not None and fpc else "")
                + "; the sound one for a sampled fault list). <b>Over pairs</b>: fraction of (fault, input) pairs (interval with faults, not pairs, as the units). "
                "<b>Achieved ±</b>: half-width of the SDC-1-over-faults interval"
                + (f"; ✓ when within the ±{fmt_pct(asked_f)} asked for" if asked_f is not None else "") + ". N: the layer's (element, bit) population.</p>")
    heads = [("site", "l"), ("layer", "l"), ("faults", ""), ("N", "")] + [(f"{v} over faults", "") for v in EVENTS.values()] + [("achieved ±", "")]
    body.append(_table(heads, _layer_rows(rates, asked_f, "fault"), table_id="rate-table"))
    body.append("<h3>Over (fault, input) pairs (intervals count faults as the units)</h3>")
    heads = [("site", "l"), ("layer", "l"), ("pairs", "")] + [(f"{v} over pairs", "") for v in EVENTS.values()]
    body.append(_table(heads, _layer_rows(rates, asked_f, "pair"), table_id="pair-rate-table"))
    body.append(img_tag(images["layer_rates"], f"Rates over faults per layer with {conf_pct} intervals", "layer_rates") + "</section>")
    # heat map
    body.append('<section id="heatmap"><h2>Layer × bit heat map</h2>')
    if "layer_bit_heatmap" in images:
        body.append("<p>Fraction of single-bit faults with SDC-1 (any input) in each layer and bit; grey cells had no fault drawn.</p>")
        body.append(img_tag(images["layer_bit_heatmap"], "Fraction of faults with SDC-1 per layer and bit", "layer_bit_heatmap"))
    else:
        body.append("<p>No single-bit faults in this campaign.</p>")
    body.append("</section>")
    # bits
    body.append(f'<section id="bits"><h2>Rate by bit position and field ({conf_pct} intervals)</h2>')
    if "bit_position" in images:
        body.append(img_tag(images["bit_position"], "SDC-1 rate over faults by bit position and by sign / exponent / mantissa", "bit_position"))
        heads = [("site", "l"), ("field", "l"), ("faults", ""), ("N", "")] + [(f"{v}<br><small>over faults</small>", "") for v in EVENTS.values()]
        body.append("<h3>By field</h3>" + _table(heads, _rate_group_rows(fields, "field"), table_id="field-table"))
        heads = [("site", "l"), ("bit", "l"), ("faults", ""), ("N", "")] + [(f"{v}<br><small>over faults</small>", "") for v in EVENTS.values()]
        body.append("<h3>By bit</h3>" + _table(heads, _rate_group_rows(bits, "bit"), table_id="bit-table"))
    else:
        body.append("<p>No single-bit faults in this campaign.</p>")
    body.append("</section>")
    # strata (adaptive campaigns store each fault's stratum)
    strata_html = _strata_section(results, settings, confidence)
    if strata_html:
        body.append(strata_html)
    # critical faults
    body.append(f'<section id="critical"><h2>Most critical faults</h2><p>The {len(critical)} faults that changed the top-1 class on most inputs (ties: SDC-5, then DUE).</p>')
    heads = [("fault id", ""), ("site", "l"), ("layer", "l"), ("index", "l"), ("bits", ""), ("model", "l"), ("inputs", ""), ("SDC-1", ""), ("SDC-5", ""), ("DUE", ""), ("SDC-1 share", "")]
    rows = [
        f'<tr data-fault="{r["fault_id"]}"><td>{r["fault_id"]}</td><td class="l">{_e(r["site"])}</td><td class="l">{_e(r["layer"])}</td><td class="l">{_e(r["idx"])}</td>'
        f'<td>{_e(r["bits"])}</td><td class="l">{_e(r["model"])}</td><td>{r["n"]}</td><td>{r["sdc1"]}</td><td>{r["sdc5"]}</td><td>{r["due"]}</td><td>{fmt_pct(r["sdc1_fraction"])}</td></tr>'
        for _, r in critical.iterrows()
    ]
    body.append(_table(heads, rows, table_id="critical-table") + "</section>")
    # settings
    versions = package_versions()
    body.append('<section id="settings"><h2>Campaign settings, seed and versions</h2>')
    plan_seed = f' · fault list drawn by faultlab plan with seed <code id="plan-seed">{_e(plan["seed"])}</code>' if plan.get("seed") is not None else ""
    body.append(f'<p>Seed: <code id="seed">{_e(settings.get("seed", "not recorded"))}</code>{plan_seed}</p>')
    body.append("<h3>Settings</h3>" + _kv({k: v for k, v in settings.items() if k not in ("sites", "versions")}))
    body.append("<h3>Identity (what must match to resume)</h3>" + _kv(identity))
    body.append("<h3>Package versions (this report)</h3>" + _kv(versions).replace('<dl class="kv">', '<dl class="kv" id="versions">', 1))
    if isinstance(settings.get("versions"), dict):
        body.append("<h3>Package versions (campaign run)</h3>" + _kv(settings["versions"]))
    body.append("</section>")
    body.append('<section id="assumptions"><h2>Definitions and assumptions</h2><ul>' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></section>")
    page = render_page(title, "\n".join(body))
    out = d / REPORT_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    step()
    parquet = None
    if per_input:
        parquet = write_per_input_parquet(results, d / PER_INPUT_NAME)
        step()
    return ReportFiles(out, plot_paths, parquet, rates, notes)


__all__ = [
    "REPORT_NAME", "PLOTS_DIR", "PER_INPUT_NAME", "ReportFiles", "build_report", "render_page", "rate_cell", "img_tag",
    "fmt_pct", "package_versions", "adaptive_savings", "plan_sidecar", "recorded_plan", "PLAN_SUFFIX", "resolve_sites", "sites_from_model", "sites_from_settings",
]


def report_campaign(
    directory: str | Path,
    *,
    confidence: float = 0.95,
    model: str | None = None,
    fpc: bool = True,
    top: int = 20,
    per_input: bool = False,
    progress: ProgressFn | None = None,
) -> ReportFiles:
    """The whole report for a stored campaign: its settings, recorded plan and site populations, then :func:`build_report`."""
    from ..stats import normal_quantile
    from ..store import CampaignStore

    normal_quantile(confidence)  # a bad confidence fails before any work
    with CampaignStore.open_existing(directory) as store:
        settings = dict(store.settings())
        identity = store.get_meta("identity") or {}
    extra = recorded_plan(settings, identity, directory)
    sites, note = resolve_sites(settings, model=model) if fpc else (None, "")
    return build_report(
        directory, confidence=confidence, sites=sites, sites_note=note, fpc=fpc, top=top, per_input=per_input,
        progress=progress, extra_settings=extra,
    )

