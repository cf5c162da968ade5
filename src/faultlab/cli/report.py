"""Statistical planning and reporting commands: plan, report, compare."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import app
from ._common import check_output_file, console, progress_bar
from .hardware import TraceDataOpt, TrustOpt, UnsafeOpt, WeightsOpt, _load, trace_sites

def _pct(x: float) -> str:
    from ..report.html import fmt_pct

    return fmt_pct(x)


@app.command()
def plan(
    model: str = typer.Option(..., "--model", "-m", help="pkg.module:factory, file.py:factory, a .pt2/.keras/.h5 file, or a pickled .pt with --trust-pickle."),
    margin: float = typer.Option(..., "--margin", "-e", help="Error margin e as a fraction (0.01 = ±1 %)."),
    confidence: float = typer.Option(0.95, "--confidence", "-c", help="Confidence level as a fraction (0.99 = 99 %)."),
    by: str = typer.Option("model", "--by", help="Strata: model, layer, layer-bit or bit-field (sign/exponent/mantissa)."),
    p: float = typer.Option(0.5, "--p", help="Expected rate p (0.5 is the conservative default)."),
    t: Optional[float] = typer.Option(None, "--t", help="Normal quantile t instead of the exact one (2.58 reproduces Leveugle et al.'s 99 % table)."),
    site: str = typer.Option("weight", "--site", help="weight or activation."),
    data: Optional[str] = TraceDataOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the draw; same seed, same fault list."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Fault list CSV to write (and the plan as FILE.plan.json beside it)."),
    as_json: bool = typer.Option(False, "--json", help="Print only the plan as JSON: {\"strata\": \\[{\"name\", \"N\", \"n\"}], \"total\": ...}."),
    weights: Optional[Path] = WeightsOpt,
    trust_pickle: bool = TrustOpt,
    unsafe: bool = UnsafeOpt,
) -> None:
    """Size a campaign with Leveugle et al. (DATE 2009) per stratum and draw its faults without replacement.

    n = N / (1 + e²(N−1) / (t² p(1−p))) for each stratum's N (element, bit) faults.

    Example: faultlab plan --model faultlab.models:digits_cnn --margin 0.05 --confidence 0.95 --by layer -o faults.csv
    """
    from ..errors import FaultlabError
    from ..planning import STRATIFY_BY, StatisticalPlanner
    from ..report.html import plan_sidecar

    if by not in STRATIFY_BY:
        raise FaultlabError(f"--by {by!r}: expected one of {', '.join(STRATIFY_BY)}")
    if site not in ("weight", "activation"):
        raise FaultlabError(f"--site {site!r}: expected weight or activation")
    planner = StatisticalPlanner(margin=margin, confidence=confidence, p=p, t=t, by=by, site_kind=site)  # type: ignore[arg-type]
    if out is not None:
        check_output_file(out, "-o")
    _, target = _load(model, weights, trust_pickle, unsafe, "cpu")
    if site == "activation":
        trace_sites(target, data)
    result = planner.plan(target.sites(), seed=seed)
    doc = result.to_json()
    if out is not None:
        path = result.faults.to_csv(out)
        record = {
            **doc, "margin": margin, "confidence": confidence, "p": p, "t": t, "by": by, "site": site, "seed": seed,
            "model": model, "faults_fingerprint": result.faults.fingerprint(),
        }
        plan_sidecar(path).write_text(json.dumps(record, indent=1) + "\n")
    if as_json:
        typer.echo(json.dumps(doc))
        return
    t_text = f"t = {t:g}" if t is not None else f"t = {planner_t(confidence):.4f} (exact)"
    console.print(f"Leveugle plan: ±{_pct(margin)} at {100 * confidence:g}%, p = {p:g}, {t_text}, strata by {by}", highlight=False)
    table = Table()
    table.add_column("stratum")
    table.add_column("N", justify="right")
    table.add_column("n", justify="right")
    table.add_column("n / N", justify="right")
    for s in result.strata:
        table.add_row(s.name, f"{s.N:,}", f"{s.n:,}", _pct(s.n / s.N) if s.N else "–")
    table.add_section()
    table.add_row("total", f"{sum(s.N for s in result.strata):,}", f"{result.total:,}", "")
    console.print(table)
    console.print("n = N / (1 + e²(N−1) / (t² p(1−p))) per stratum (Leveugle et al., DATE 2009); drawn without replacement", style="dim")
    if out is not None:
        console.print(f"wrote {result.total:,} {site} faults to {out}\n      plan to {plan_sidecar(out)}")


def planner_t(confidence: float) -> float:
    from ..stats import normal_quantile

    return normal_quantile(confidence)


def _pp(x: float, signed: bool = False) -> str:
    """A rate in percent with one decimal (two below 1 %), for narrow terminal tables."""
    if x != x:
        return "–"
    v = 100 * x
    text = f"{v:+.2f}" if signed else f"{v:.2f}"
    if abs(v) >= 1:
        text = f"{v:+.1f}" if signed else f"{v:.1f}"
    return "0" if v == 0 else text


def _ci(rate: float, lo: float, hi: float, signed: bool = False) -> str:
    return f"{_pp(rate, signed)} [{_pp(lo, signed)}, {_pp(hi, signed)}]"


def _print_rates(rates, confidence: float) -> None:
    """One narrow table per site kind: rates over faults in %, SDC-1 with its interval."""
    from rich import box

    from ..report.export import ALL_LAYERS

    conf = f"{100 * confidence:g}%"
    for kind, t in rates.groupby("site", sort=False):
        table = Table(title=f"{kind} faults: rates over faults in %, {conf} Wilson intervals", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("layer", "faults", "N", "SDC-1 [interval]", "SDC-5", "DUE", "±"):
            table.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
        for _, r in t.iterrows():
            if r["layer"] == ALL_LAYERS:
                table.add_section()
            table.add_row(
                "all layers" if r["layer"] == ALL_LAYERS else r["layer"], f"{r['faults']:,}",
                "–" if r["population"] is None or r["population"] != r["population"] else f"{int(r['population']):,}",
                _ci(r["sdc1_fault_rate"], r["sdc1_fault_lo"], r["sdc1_fault_hi"]), _pp(r["sdc5_fault_rate"]), _pp(r["due_fault_rate"]), _pp(r["margin"]),
            )
        console.print(table)
    console.print("±: half-width of the SDC-1 interval (the margin achieved); every interval is in the HTML report", style="dim")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="Campaign directory (holds campaign.sqlite)."),
    per_input: bool = typer.Option(False, "--per-input", help="Also write DIR/outcomes.parquet: one row per (fault, input)."),
    confidence: float = typer.Option(0.95, "--confidence", "-c", help="Confidence level of every interval."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model reference for layer populations (finite-population correction); default: recorded shapes or bundled faultlab models."),
    fpc: bool = typer.Option(True, "--fpc/--no-fpc", help="Finite-population correction for faults drawn without replacement."),
    top: int = typer.Option(20, "--top", min=1, help="How many of the most critical faults to list."),
) -> None:
    """Write DIR/report.html (self-contained, opens offline) and DIR/plots/*.png from a campaign.

    Example: faultlab report runs/c1 --per-input
    """
    from ..report.html import report_campaign
    from ..store import CampaignStore

    CampaignStore.open_existing(directory).close()  # a missing or foreign store fails in one line, before the bar
    with progress_bar(transient=True) as prog:
        task = prog.add_task("report", total=None)
        files = report_campaign(
            directory, confidence=confidence, model=model, fpc=fpc, top=top, per_input=per_input,
            progress=lambda d, t: prog.update(task, completed=d, total=t),
        )
    _print_rates(files.rates, confidence)
    console.print(f"wrote {files.html}")
    console.print(f"      {len(files.plots)} plots in {files.html.parent / 'plots'}")
    if files.per_input is not None:
        console.print(f"      {files.per_input}")


@app.command()
def compare(
    dir_a: Path = typer.Argument(..., help="Campaign A (e.g. the original model)."),
    dir_b: Path = typer.Argument(..., help="Campaign B on the same fault list (e.g. the quantised model)."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write the comparison as a self-contained HTML page."),
    confidence: float = typer.Option(0.95, "--confidence", "-c", help="Confidence level of the difference intervals."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model reference for layer populations (finite-population correction)."),
) -> None:
    """Compare two campaigns on the same faults: per-layer SDC rate differences and McNemar's paired test.

    Example: faultlab compare runs/float runs/quantised --html compare.html
    """
    from ..report.compare import compare_campaigns, write_comparison_html
    from ..report.export import ALL_LAYERS
    from ..report.html import resolve_sites
    from ..stats import normal_quantile
    from ..store import CampaignStore

    normal_quantile(confidence)  # a bad --confidence fails before any work
    if html_out is not None:
        check_output_file(html_out, "--html", (".html", ".htm"))
    with CampaignStore.open_existing(dir_a) as store:
        settings = store.settings()
    CampaignStore.open_existing(dir_b).close()
    sites, _ = resolve_sites(settings, model=model)
    comp = compare_campaigns(dir_a, dir_b, confidence=confidence, sites=sites)
    from rich import box

    console.print(f"A = {comp.label_a}\nB = {comp.label_b}", highlight=False, soft_wrap=True)
    for kind, t in comp.table.groupby("site", sort=False):
        table = Table(title=f"{kind} faults: SDC in % over faults, A − B with {100 * confidence:g}% paired interval", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("layer", "n", "A", "B", "A − B [interval]", "A only", "B only", "p"):
            table.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
        for _, r in t.iterrows():
            if r["layer"] == ALL_LAYERS:
                table.add_section()
            table.add_row(
                "all layers" if r["layer"] == ALL_LAYERS else r["layer"], f"{r['faults']:,}", _pp(r["rate_a"]), _pp(r["rate_b"]),
                _ci(r["difference"], r["diff_lo"], r["diff_hi"], signed=True), str(r["only_a"]), str(r["only_b"]),
                f"{r['p_value']:.3g}" + ("" if r["test"] == "chi2" else "*"),
            )
        console.print(table)
    console.print(
        "SDC: some input's top-1 changed. n: faults paired. A only / B only: faults SDC in one campaign only (McNemar's discordant pairs). "
        "p: McNemar's test.", style="dim",
    )
    console.print("p: * exact binomial test (fewer than 25 discordant faults), else chi-square with continuity correction", style="dim")
    console.print(
        "all layers: the faults pooled as drawn, to compare A with B on this list; not weighted by layer size like the "
        "all-layers row of `faultlab report`, which estimates the model's rate", style="dim",
    )
    for n in comp.warnings:
        console.print(f"note: {n}", style="yellow", highlight=False)
    if html_out is not None:
        console.print(f"wrote {write_comparison_html(comp, html_out)}")


