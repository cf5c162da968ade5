"""Hardware-fault commands: demo, layers, faults generate, run."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from . import app
from ._common import check_output_file, console, err_console, progress_bar

faults_app = typer.Typer(help="Create and inspect fault lists.\n\nExample: faultlab faults generate --model faultlab.models:digits_cnn --n 1000 --site weight -o faults.csv", no_args_is_help=True)
app.add_typer(faults_app, name="faults")

ModelOpt = typer.Option(..., "--model", "-m", help="pkg.module:factory, file.py:factory, a .pt2/.keras/.h5 file, or a pickled .pt with --trust-pickle.")
WeightsOpt = typer.Option(None, "--weights", "-w", help="state_dict for a factory model (loaded with weights_only=True).")
TrustOpt = typer.Option(False, "--trust-pickle", help="Allow unpickling a whole torch module (runs code from the file).")
UnsafeOpt = typer.Option(False, "--unsafe", help="Allow Keras Lambda layers (Keras safe_mode=False).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu or cuda (the model and data live there).")


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (``mps`` where torch has it), refused in one line where this machine lacks it."""
    import torch

    from ..errors import FaultlabError

    d = device.strip().lower()
    kind, _, index = d.partition(":")
    if kind == "cpu" and not index:
        return "cpu"
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise FaultlabError(f"--device {device!r}: this torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise FaultlabError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s), numbered from 0")
        return d
    if kind == "mps" and not index:
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise FaultlabError(f"--device {device!r}: MPS is not available here; use --device cpu")
        return d
    raise FaultlabError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def _load(model: str, weights: Optional[Path], trust_pickle: bool, unsafe: bool, device: str):
    from ..targets import TargetSpec

    device = check_device(device)
    spec = TargetSpec(model, None if weights is None else str(weights), trust_pickle, unsafe, device)
    return spec, spec()


#: the ``--data`` option of commands that only need one input to trace activation shapes
TraceDataOpt = typer.Option(None, "--data", "-d", help="Data whose first sample traces activation shapes (default: zeros of a Keras model's input shape, else digits).")


def trace_sites(target, data: Optional[str]) -> None:
    """Trace ``target``'s activation shapes on one input: the first of ``data``; by default zeros of a Keras model's
    declared input shape, or the first digit for models that declare none."""
    import numpy as np

    from ..datasets import load_dataset
    from ..errors import DataError

    if not hasattr(target, "trace"):
        return
    declared = getattr(target, "declared_input_shape", None)
    shape = declared() if data is None and callable(declared) else None
    try:
        target.trace(target.prepare(load_dataset(data or "digits").x[:1] if shape is None else np.zeros((1, *shape), np.float32)))
    except DataError as e:
        raise DataError(f"--data {data or 'digits'}: {e}; pass --data with inputs of the model's shape (mnist: 28x28 digits, or an .npz)") from None


def _fmt_rate(rate: float, lo: float, hi: float) -> str:
    """``2.63±0.09``: the rate in %, ± the wider side of its (asymmetric) interval, to fit 80 columns."""
    half = max(rate - lo, hi - rate)
    return f"{100 * rate:.2f}[dim]±{100 * half:.2f}[/]"


def print_layer_table(results, *, title: str) -> None:
    """The per-layer outcome table, one per site kind; each rate in % with its 95 % Wilson interval.

    ``results``: per-fault results, or the store's per-layer sums (see :func:`faultlab.report.layer_table`).
    """
    from ..report import layer_table

    t = layer_table(results)
    for kind in ("weight", "activation"):
        part = t[t["site"] == kind]
        if part.empty:
            continue
        table = Table(title=f"{title}: {kind} faults", title_justify="left", caption="n faults; % of (fault, input) pairs, ± the wider side of the 95 % Wilson interval with faults, not pairs, as the units", caption_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        table.add_column("layer", no_wrap=True, overflow="fold")
        for col in ("n", "masked", "non-crit", "SDC-1", "SDC-5", "DUE"):
            table.add_column(col, justify="right", no_wrap=True)
        for _, r in part.iterrows():
            table.add_row(
                r["layer"], str(r["faults"]),
                *(_fmt_rate(r[f"{c}_rate"], r[f"{c}_lo"], r[f"{c}_hi"]) for c in ("masked", "non_critical", "sdc1", "sdc5", "due")),
            )
        console.print(table)


def run_with_progress(campaign, description: str):
    campaign.validate()  # bad input fails here, before the progress bar and before any write
    with progress_bar() as prog:
        task = prog.add_task(description, total=None)

        def cb(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        return campaign.run(progress=cb)


def write_html_report(out: Path):
    """The self-contained HTML report (and PNG plots) for a finished campaign directory."""
    from ..report.html import report_campaign

    with err_console.status("writing the HTML report"):
        return report_campaign(out)


def print_strata_table(summary) -> None:
    """Per stratum: population, faults run, events, rate with its interval, achieved vs wanted margin."""
    table = Table(title=f"adaptive strata ({100 * summary.confidence:g} % Wilson intervals with finite-population correction)", title_justify="left")
    for col in ("stratum", "N", "n", "events", "rate %", "interval %", "achieved ±", "wanted ±", "done"):
        table.add_column(col, justify="left" if col == "stratum" else "right", no_wrap=True)
    for s in summary.strata:
        rate = s.k / s.n if s.n else float("nan")
        table.add_row(s.name, f"{s.N:,}", f"{s.n:,}", str(s.k), f"{100 * rate:.2f}", f"{100 * s.low:.2f}-{100 * s.high:.2f}",
                      f"{100 * s.achieved_margin:.2f}", f"{100 * summary.margin:.2f}", "yes" if s.done else "no")
    console.print(table)


@app.command()
def layers(
    model: str = ModelOpt,
    weights: Optional[Path] = WeightsOpt,
    data: Optional[str] = TraceDataOpt,
    trust_pickle: bool = TrustOpt,
    unsafe: bool = UnsafeOpt,
) -> None:
    """List a model's fault sites: name, kind, layer type, shape, dtype, element count.

    Example: faultlab layers --model faultlab.models:digits_cnn
    """
    _, target = _load(model, weights, trust_pickle, unsafe, "cpu")
    trace_sites(target, data)
    table = Table()
    for col in ("name", "kind", "layer type", "shape", "dtype", "elements"):
        table.add_column(col, justify="right" if col == "elements" else "left")
    for s in target.sites():
        table.add_row(s.name, s.kind, s.layer_type, str(s.shape), s.dtype, f"{s.numel:,}")
    console.print(table)
    reused = getattr(target, "reused_modules", {})
    if reused:
        listed = ", ".join(f"{name} ({calls} calls)" for name, calls in reused.items())
        console.print(f"not activation sites, called several times per forward pass: {listed}; "
                      "fault the layer that feeds each use, or give each use its own module", style="dim", highlight=False)
    unbatched = getattr(target, "unbatched_modules", {})
    nested = [name for name, shape in unbatched.items() if shape == () and name not in reused]
    time_first = [name for name, shape in unbatched.items() if shape != () and name not in reused]
    if time_first:
        console.print(f"not activation sites, outputs whose first dimension is not the batch (time first): {', '.join(time_first)}; "
                      "build such layers with batch_first=True, or fault the layer after it", style="dim", highlight=False)
    if nested:
        console.print(f"not activation sites, nested-tensor outputs (rows of several lengths): {', '.join(nested)}; "
                      "fault the layer whose output is padded again, or build the encoder with enable_nested_tensor=False",
                      style="dim", highlight=False)


@faults_app.command("generate")
def faults_generate(
    model: str = ModelOpt,
    n: int = typer.Option(..., "--n", help="Number of faults."),
    out: Path = typer.Option(..., "-o", "--out", help="CSV file to write (tf_injector layout)."),
    site: str = typer.Option("weight", "--site", help="weight or activation."),
    layers_: Optional[list[str]] = typer.Option(None, "--layers", help="Restrict to these sites (repeat the option)."),
    bits: Optional[str] = typer.Option(None, "--bits", help="Bit positions to draw from, e.g. 23-31 or 0,8,31."),
    fault_model: str = typer.Option("flip", "--fault-model", help="flip, stuck0 or stuck1."),
    seed: int = typer.Option(0, "--seed"),
    weights: Optional[Path] = WeightsOpt,
    data: Optional[str] = TraceDataOpt,
    trust_pickle: bool = TrustOpt,
    unsafe: bool = UnsafeOpt,
) -> None:
    """Draw N faults uniformly over (element, bit) of the chosen sites; same seed, same list.

    Example: faultlab faults generate --model faultlab.models:digits_cnn --n 1000 --site weight --seed 1 -o faults.csv
    """
    from ..errors import FaultlabError
    from ..planning import RandomPlanner

    if site not in ("weight", "activation"):
        raise FaultlabError(f"--site {site!r}: expected weight or activation")
    if n < 1:
        raise FaultlabError(f"--n {n}: expected at least 1 fault")
    check_output_file(out, "-o")
    bit_list = parse_bit_ranges(bits) if bits else None
    _, target = _load(model, weights, trust_pickle, unsafe, "cpu")
    if site == "activation":
        trace_sites(target, data)
    sites = [s for s in target.sites() if s.kind == site]
    if layers_:
        for name in layers_:
            target.site(name, site)  # type: ignore[arg-type]
        sites = [s for s in sites if s.name in set(layers_) or f"{s.name}.weight" in set(layers_)]
    try:
        plan = RandomPlanner(n=n, site_kind=site, bits=bit_list, model=fault_model).plan(sites, seed=seed)
    except FaultlabError as e:
        if str(e).startswith("bits: "):
            raise FaultlabError(f"--bits {bits}: {str(e)[len('bits: '):]}") from None
        raise
    path = plan.faults.to_csv(out)
    console.print(f"wrote {len(plan.faults)} {site} faults to {path}")


def max_memory_option(text: str, workers: int) -> int:
    """``--max-memory``: ``auto`` (the fast engine's machine-sized default for each of ``workers``) or a size."""
    if text.strip().lower() == "auto":
        from ..engine.fast import default_max_memory

        return default_max_memory(workers)
    return parse_bytes(text)


def parse_bytes(text: str) -> int:
    """``"512MiB"``, ``"4GiB"``, ``"2GB"`` or a plain number of bytes."""
    from ..errors import FaultlabError

    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("kmgib")
    try:
        value = float(num) * units[t[len(num):]]
    except (ValueError, KeyError):
        raise FaultlabError(f"--max-memory {text!r}: expected auto or a size like 512MiB, 4GiB or 2GB") from None
    if not math.isfinite(value) or value < 1:
        raise FaultlabError(f"--max-memory {text!r}: expected a positive, finite size of at least one byte, like 512MiB")
    return int(value)


def check_counts(*, limit: int | None = None, tolerance: float | None = None, split: str | None = None) -> None:
    """One-line refusals for ``--limit`` below 1, a negative or non-finite ``--tolerance`` and an unknown ``--split``."""
    from ..errors import FaultlabError

    if limit is not None and limit < 1:
        raise FaultlabError(f"--limit {limit}: expected at least 1 input")
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise FaultlabError(f"--tolerance {tolerance}: expected a relative error of 0 or more (e.g. 0.01)")
    if split is not None and split not in ("test", "train", "all"):
        raise FaultlabError(f"--split {split!r}: expected test, train or all")


def parse_bit_ranges(text: str) -> list[int]:
    """``"23-31"`` or ``"0,8,31"`` or a mix as a list of ints."""
    from ..errors import FaultlabError

    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part.lstrip("-"):
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise FaultlabError(f"--bits {text!r}: expected bit positions like 23-31 or 0,8,31") from None
        if "-" in part.lstrip("-") and lo > hi:
            raise FaultlabError(f"--bits {text!r}: the range {part} runs backwards; write it low-high ({hi}-{lo})")
    return out


@app.command()
def run(
    model: str = ModelOpt,
    data: str = typer.Option(..., "--data", "-d", help="digits, mnist, or an .npz with arrays x and y."),
    out: Path = typer.Option(..., "--out", "-o", help="Campaign directory (SQLite store, report.csv); rerun to resume."),
    faults: Optional[Path] = typer.Option(None, "--faults", "-f", help="Fault list CSV (Injection,Layer,TensorIndex,Bit\\[,Site,Model,Bits,Input,Value])."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="InjectTF2 YAML config (inject_layer: ...)."),
    weights: Optional[Path] = WeightsOpt,
    batch_size: int = typer.Option(512, "--batch-size", "-b", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed for config expansion (which inputs, elements, bits)."),
    engine: str = typer.Option("fast", "--engine", help="fast (default; same outcomes, falls back to exact where it must) or exact (the reference)."),
    max_memory: str = typer.Option("auto", "--max-memory", help="Fast engine: memory per worker for cached activations and batches (e.g. 512MiB, 4GiB; auto: a sixth of RAM over the workers, 1-4 GiB)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Regression models: relative error tolerated before an output counts as SDC."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N inputs."),
    split: str = typer.Option("test", "--split", help="Bundled data split: test, train or all."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (1 = this process), or Ray actors with --executor ray."),
    executor: str = typer.Option("local", "--executor", help="local (this machine) or ray (pip install 'faultlab\\[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray head HOST:PORT to join (default: start Ray here)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs each Ray worker reserves."),
    save_outputs: bool = typer.Option(False, "--save-outputs", help="Also write raw scores: clean.npy and inj_<id>.npy per fault."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Statistical rounds per stratum until each interval is within --margin (no --faults needed)."),
    margin: float = typer.Option(0.05, "--margin", help="--adaptive: wanted interval half-width (e.g. 0.01 = 1 %)."),
    confidence: float = typer.Option(0.95, "--confidence", help="--adaptive: confidence level of the intervals."),
    by: str = typer.Option("layer", "--by", help="--adaptive: strata: model, layer, layer-bit or bit-field."),
    site: str = typer.Option("weight", "--site", help="--adaptive: weight or activation sites."),
    event: str = typer.Option("sdc1", "--event", help="--adaptive: per-fault event whose rate is estimated: sdc1, sdc5 or due."),
    t: Optional[float] = typer.Option(None, "--t", help="--adaptive: use this t instead of the exact normal quantile (2.58 reproduces Leveugle's tables)."),
    trust_pickle: bool = TrustOpt,
    unsafe: bool = UnsafeOpt,
    device: str = DeviceOpt,
) -> None:
    """Run a fault campaign: golden run, every fault, outcomes into DIR/campaign.sqlite and DIR/report.csv.

    Kill it at any time and run the same command again to resume.

    Example: faultlab run --model faultlab.models:digits_cnn --weights w.pt --data digits --faults faults.csv --out runs/c1
    """
    from ..datasets import load_dataset
    from ..errors import FaultlabError
    from ..executors import make_executor

    if adaptive:
        if faults is not None or config is not None:
            raise FaultlabError("--adaptive draws its own faults; leave out --faults and --config")
    elif (faults is None) == (config is None):
        raise FaultlabError("pass exactly one of --faults FILE.csv or --config FILE.yml (or --adaptive)")
    # options first: nothing is loaded, and nothing written into --out, before they are known good
    if engine not in ("fast", "exact"):
        raise FaultlabError(f"--engine {engine!r}: expected fast or exact")
    max_memory_bytes = max_memory_option(max_memory, workers)
    check_counts(limit=limit, tolerance=tolerance, split=split)
    spec, target = _load(model, weights, trust_pickle, unsafe, device)
    ds = load_dataset(data, split=split).head(limit)  # type: ignore[arg-type]
    with make_executor(executor, workers=workers, address=address, gpus_per_worker=gpus_per_worker) as ex:
        _run_campaign(
            model=model, spec=spec, target=target, ds=ds, out=out, faults=faults, config=config, weights=weights,
            batch_size=batch_size, seed=seed, engine=engine, tolerance=tolerance, ex=ex, save_outputs=save_outputs,
            adaptive=adaptive, margin=margin, confidence=confidence, by=by, site=site, event=event, t=t,
            engine_options={"max_memory": max_memory_bytes} if engine == "fast" else {},
        )


def _run_campaign(*, model, spec, target, ds, out, faults, config, weights, batch_size, seed, engine, tolerance, ex,
                  save_outputs, adaptive, margin, confidence, by, site, event, t, engine_options) -> None:
    from ..engine.campaign import Campaign
    from ..faults import FaultList, InjectConfig
    from ..report import write_report_csv

    if adaptive:
        from ..engine.adaptive import AdaptiveCampaign

        campaign = AdaptiveCampaign(
            target=target, data=ds, out=out, engine=engine, batch_size=batch_size, tolerance=tolerance,
            executor=ex, target_factory=spec, model_id=model,
            margin=margin, confidence=confidence, by=by, site_kind=site, event=event, seed=seed, t=t,  # type: ignore[arg-type]
            settings={"weights": str(weights) if weights else None}, engine_options=engine_options,
        )
        summary = run_with_progress(campaign, "adaptive rounds")
        write_report_csv(summary.results, Path(out) / "report.csv", summary.criterion)
        print_strata_table(summary)
        print_layer_table(summary.results, title=f"{model} on {ds.name}")
        console.print(f"{len(summary.results)} faults in {summary.rounds} rounds; the fixed p=0.5 plan needs {summary.fixed_total}: saved {summary.saved} faults")
        console.print(f"wrote {Path(out) / 'report.csv'}\n      {Path(out) / 'campaign.sqlite'}")
        return
    if config is not None:
        cfg = InjectConfig.from_yaml(config)
        if hasattr(target, "trace"):
            target.trace(target.prepare(ds.x[:1]))
        fl = target.expand_config(cfg, len(ds), seed=seed)
    else:
        fl = FaultList.from_csv(faults)  # type: ignore[arg-type]
    campaign = Campaign(
        target=target, data=ds, faults=fl, out=out, engine=engine, batch_size=batch_size,
        tolerance=tolerance, executor=ex, target_factory=spec,
        model_id=model, settings={"seed": seed, "fault_source": str(faults or config), "weights": str(weights) if weights else None},
        engine_options=engine_options,
    )
    summary = run_with_progress(campaign, "faults")
    # the report and the table are read from the store in chunks and sums: no per-fault table in memory
    report = write_report_csv(summary.result_chunks(), Path(out) / "report.csv", summary.criterion)
    n_stored = summary.n_results()
    if save_outputs:
        from ..engine.outputs import save_outputs as _save

        _save(target, ds, fl, Path(out), batch_size=batch_size)
    sums = summary.layer_sums()
    pairs = int(sums["n"].sum()) if len(sums) else 0
    # faults that name one input (a config's per-input faults, a CSV's Input column) are one pair each
    scope = f"{n_stored} faults x {summary.n_inputs} inputs" if pairs == n_stored * summary.n_inputs else f"{n_stored} faults, {pairs} (fault, input) pairs"
    print_layer_table(sums, title=f"{model} on {ds.name}: {scope}, criterion {summary.criterion}")
    if config is not None and summary.clean_top1 is not None:
        from ..engine.campaign import faulty_accuracy

        console.print(f"clean accuracy {100 * summary.clean_top1:.2f}%   faulty accuracy {100 * faulty_accuracy(summary):.2f}%")
    state = "resumed" if summary.resumed else "new"
    console.print(f"{state} campaign: {summary.new_results} faults run now, {n_stored} stored")
    console.print(f"wrote {report}\n      {Path(out) / 'campaign.sqlite'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("faultlab-demo"), "--out", "-o", help="Where the demo writes its campaign."),
    n_faults: int = typer.Option(1000, "--n", help="Faults per site kind (weight and activation)."),
    seed: int = typer.Option(0, "--seed"),
    engine: str = typer.Option("fast", "--engine", help="fast (default) or exact (the reference)."),
) -> None:
    """Train a small CNN on the bundled digits (cached), run weight and activation bit-flip campaigns, report.

    Example: faultlab demo
    """
    import torch

    from ..datasets import load_dataset
    from ..engine.campaign import Campaign
    from ..faults import FaultList
    from ..models import pretrained_digits_cnn, pretrained_digits_path
    from ..planning import RandomPlanner
    from ..report import write_report_csv
    from ..targets import TargetSpec, make_target

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with err_console.status("training the demo CNN on digits (cached after the first run)"):
        model = pretrained_digits_cnn(seed=seed)
    weights = pretrained_digits_path(seed)
    ds = load_dataset("digits", split="test")
    target = make_target(model)
    target.trace(ds.x[:1])
    w = RandomPlanner(n=n_faults, site_kind="weight").plan(target.sites(), seed=seed).faults
    a = RandomPlanner(n=n_faults, site_kind="activation").plan(target.sites(), seed=seed + 1).faults
    from ..faults import renumber

    fl = FaultList.of(renumber(list(w) + list(a)), "demo")
    out.mkdir(parents=True, exist_ok=True)
    fl.to_csv(out / "faults.csv")
    campaign = Campaign(
        target=target, data=ds, faults=fl, out=out, engine=engine, batch_size=2048,
        target_factory=TargetSpec("faultlab.models:digits_cnn", str(weights)), model_id="faultlab.models:digits_cnn",
        settings={"seed": seed, "weights": str(weights), "fault_source": str(out / "faults.csv")},
    )
    summary = run_with_progress(campaign, f"{len(fl)} faults x {len(ds)} digits")
    report = write_report_csv(summary.result_chunks(), out / "report.csv", summary.criterion)
    print_layer_table(summary.layer_sums(), title=f"demo CNN on {ds.name} (clean top-1 {100 * (summary.clean_top1 or 0):.1f}%), {len(fl)} single-bit faults")
    console.print(f"done in {summary.seconds:.1f} s ({summary.new_results} faults run now)")
    files = write_html_report(out)
    console.print("wrote:")
    for p in (out / "faults.csv", out / "campaign.sqlite", report, files.html):
        console.print(f"  {p}")
    if files.plots:
        console.print(f"  {files.plots[0].parent}/ ({len(files.plots)} PNG plots)")
