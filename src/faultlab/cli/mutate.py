"""``faultlab mutate``: mutation testing of training functions (issue #6)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import console, err_console, progress_bar

app = typer.Typer(help="Mutation testing of training (DeepCrime-style).\n\nExample: faultlab mutate run --models-file examples/lstm_price.py --model LSTM1 --operator recurrent_activation --runs 20 --logs-dir runs/lstm", no_args_is_help=True)


def _executor(name: str, workers: int, address: str | None = None, gpus_per_worker: float = 0.0):
    from ..errors import FaultlabError
    from ..executors import make_executor

    if workers < 1:
        raise FaultlabError(f"--workers {workers}: must be at least 1")
    return make_executor(name, workers=workers, address=address, gpus_per_worker=gpus_per_worker)


def _parse_set(items: list[str]) -> dict[str, Any]:
    from ..errors import FaultlabError
    from ..mutation.operators import parse_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FaultlabError(f"--set {item!r}: expected NAME=VALUE, e.g. --set epochs=1")
        out[key.strip()] = parse_value(value)
    return out


def _fmt(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"


def _print_analysis(analysis: Any, store: Any) -> None:
    from rich.table import Table

    from ..mutation.analysis import first_error, several_settings, why_undecided

    many = several_settings(analysis)  # mutants of several --set/--seed configurations: say which is which
    t = Table(title=f"{analysis.model}: {analysis.metric} ({analysis.direction} is better), test {analysis.test}")
    cols = ("operator", "value", *(("setting",) if many else ()), "runs o/m", "mean orig", "mean mut", "p_value", "d",
            "power", "runs@80%", "triviality", "killed")
    for col in cols:
        t.add_column(col)
    for m in analysis.mutants:
        c = m.comparison
        failed = f" ({m.failed_mutant} failed)" if m.failed_mutant else ""
        killed = "-" if c.killed is None else ("[bold red]killed[/]" if c.killed else "survived")
        triv = _fmt(m.triviality, 3) + (" trivial" if m.trivial else "")
        t.add_row(m.operator, str(m.value), *((m.setting,) if many else ()), f"{c.runs_original}/{c.runs_mutant}{failed}",
                  _fmt(c.mean_original), _fmt(c.mean_mutant), f"{c.p_value:.3g}" if not math.isnan(c.p_value) else "-",
                  _fmt(c.effect_size, 3), _fmt(c.power, 3), _fmt(c.runs_for_80_power), triv, killed)
    console.print(t)
    ks = ", ".join(f"{op} {k:.2f}" for op, k in analysis.killability.items())
    console.print(f"killability: {ks}")
    undecided = [m for m in analysis.mutants if m.comparison.killed is None]
    if undecided:  # counted as not killed: say why, so a diverged training or a missing metric is not read as a survivor
        console.print(f"undecided (fewer than 2 runs with a finite {analysis.metric} on a side; counted as not killed in killability): "
                      + "; ".join(f"{m.operator}={m.value}: {why_undecided(store, m, analysis.metric)}" for m in undecided)
                      + "; pass --metric to decide on another metric", highlight=False, soft_wrap=True, markup=False)
    if not math.isnan(analysis.mutation_score):
        console.print(f"mutation score of {analysis.metric} against {analysis.train_metric}: {analysis.mutation_score:.3f}")
    seen: set[str] = set()
    for m in analysis.mutants:  # the stored error of failed runs, so it can be seen without opening the store
        where = f" ({m.setting})" if many else ""
        if m.failed_original and m.mutant.original_hash not in seen:
            seen.add(m.mutant.original_hash)
            console.print(f"original{where}: {m.failed_original} failed run(s); first error: "
                          f"{first_error(store, m.mutant.original_hash)}", highlight=False, soft_wrap=True, markup=False)
        if m.failed_mutant:
            console.print(f"{m.operator}={m.value}{where}: {m.failed_mutant} failed run(s); first error: {m.error}",
                          highlight=False, soft_wrap=True, markup=False)


def _warn_mann_whitney(test: str, alpha: float, sizes: list[tuple[int, int]]) -> None:
    """One warning when the exact Mann-Whitney test cannot reach p < alpha with these run counts."""
    from ..mutation.statistics import mann_whitney_min_p

    if test != "mann-whitney":
        return
    stuck = [(a, b) for a, b in sizes if a >= 2 and b >= 2 and mann_whitney_min_p(a, b) >= alpha]
    if not stuck:
        return
    a, b = stuck[0]
    need = next(n for n in range(2, 1000) if mann_whitney_min_p(n, n) < alpha)
    err_console.print(
        f"[yellow]warning:[/] with --test mann-whitney and {a}/{b} runs the smallest attainable p-value is "
        f"{mann_whitney_min_p(a, b):.3g} >= --alpha {alpha:g}, so no mutant can be killed; use at least {need} runs "
        "per configuration or --test welch", highlight=False, soft_wrap=True)


def _check_options(*, alpha: float, min_effect: float, direction: str | None, round_size: int,
                   precision: float | None) -> None:
    """Options that only matter after training, checked before anything trains."""
    from ..errors import FaultlabError
    from ..mutation.statistics import check_kill_options

    check_kill_options(alpha=alpha, min_effect=min_effect, direction=direction)
    if round_size < 1:
        raise FaultlabError(f"--round-size {round_size}: must be at least 1 (runs added per round), e.g. --round-size 5")
    if precision is not None and not precision > 0:
        raise FaultlabError(f"--precision {precision}: must be greater than 0; omit it for range/64 (1 for integers)")


def _describe_default(op: Any) -> str:
    if op.kind == "remove_validation_set":
        return f"removes {', '.join(op.default)}"
    return f"default {op.default!r}"


@app.command("run")
def run(
    model: str = typer.Option(..., "--model", help="MODEL_TYPES name (with --models-file) or module:function."),
    models_file: Optional[Path] = typer.Option(None, "--models-file", help="Python file defining MODEL_TYPES or the function."),
    operator: list[str] = typer.Option([], "--operator", help="Operator (keyword argument) to mutate; repeatable."),
    all_operators: bool = typer.Option(False, "--all-operators", help="Mutate every operator of the function."),
    value: list[str] = typer.Option([], "--value", help="Mutant value(s) for a single --operator (default: its domain's sweep)."),
    runs: int = typer.Option(20, "--runs", help="Trainings per configuration (original and each mutant)."),
    logs_dir: Path = typer.Option(..., "--logs-dir", help="Directory of the SQLite store (created; rerun the same command into it to resume: stored runs are not trained again)."),
    seed: int = typer.Option(0, "--seed", help="Run i trains with seed SEED+i, for original and mutants alike."),
    set_: list[str] = typer.Option([], "--set", help="Fix a keyword argument for every configuration, e.g. --set epochs=1."),
    domains: Optional[Path] = typer.Option(None, "--domains", help="YAML overriding operator domains."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (1: train in this process), or Ray actors with --executor ray."),
    executor: str = typer.Option("local", "--executor", help="local (this machine) or ray (pip install 'faultlab\\[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray head HOST:PORT to join (default: start Ray here)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs each Ray worker reserves."),
    search: bool = typer.Option(False, "--search", help="Binary-search the kill threshold of numeric operators."),
    precision: Optional[float] = typer.Option(None, "--precision", help="Precision of --search (default: range/64, 1 for integers)."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Add runs in rounds; stop a mutant once a sequential test decides."),
    round_size: int = typer.Option(5, "--round-size", help="Runs added per round with --adaptive."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric to decide on (default val_accuracy, accuracy, val_loss, loss)."),
    direction: Optional[str] = typer.Option(None, "--direction", help="higher|lower is better (default: from the metric name)."),
    test: str = typer.Option("glm", "--test", help="Kill test: glm, welch or mann-whitney."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level."),
    min_effect: float = typer.Option(0.5, "--min-effect", help="Smallest |Cohen's d| that kills."),
    list_operators: bool = typer.Option(False, "--list-operators", help="Print the operators and their domains, then exit."),
) -> None:
    """Train the original and mutants of a training function, store every run, and print the kill table.

    Example: faultlab mutate run --models-file examples/lstm_price.py --model LSTM1 --operator recurrent_activation --runs 20 --logs-dir runs/lstm
    """
    from ..errors import FaultlabError
    from ..mutation import ModelRef, MutationStore, MutationSweep, analyze, kill_test, load_domain_overrides, parse_value
    from ..mutation.sweeps import adaptive_summary, run_adaptive, run_sweep, search_threshold, sweep_configs

    ref = ModelRef(name=model, models_file=str(models_file) if models_file else None)
    kt = kill_test(test)
    if list_operators:
        from ..mutation.runner import training_data
        from ..mutation.operators import operators_for

        fn = ref.load()
        data = training_data(fn)
        cat = operators_for(fn, load_domain_overrides(domains), has_training_data=data is not None,
                            defaults=_parse_set(set_))
        for op in cat:
            console.print(f"{op.name} ({_describe_default(op)}): {op.domain.describe()}; sweep {list(op.domain.sweep)}")
        return
    if not operator and not all_operators:
        raise FaultlabError("no operator chosen: pass --operator NAME (repeatable) or --all-operators")
    _check_options(alpha=alpha, min_effect=min_effect, direction=direction, round_size=round_size, precision=precision)
    _warn_mann_whitney(kt.name, alpha, [(runs, runs)])
    store = MutationStore(path=logs_dir)
    with _executor(executor, workers, address, gpus_per_worker) as ex:
        sweep = MutationSweep(model=ref, store=store, executor=ex, runs=runs, base_seed=seed, fixed=_parse_set(set_),
                              domains=load_domain_overrides(domains))
        ops = list(sweep.catalogue.operators) if all_operators else list(dict.fromkeys(operator))
        values = [parse_value(v) for v in value] or None
        configs = [] if search else sweep_configs(sweep, ops, values)  # validate before training anything
        sweep.check_metric(metric)  # against runs already stored; else after the first original run
        before = store.count_runs()  # a rerun of the same command trains only what is missing
        with progress_bar(transient=True) as bar:
            task = bar.add_task(f"training {ref.label}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if search:
                for op in ops:
                    bar.update(task, description=f"search {op}")
                    res = search_threshold(sweep, op, metric=metric, test=kt, direction=direction, alpha=alpha,
                                           min_effect=min_effect, precision=precision, progress=progress)
                    msg = (f"kill threshold {res.threshold:g} (kills over {res.killability:.0%} of the range from the default to {res.extreme:g})" if res.killable
                           else f"not killable up to {res.extreme:g}")
                    console.print(f"{op}: {msg}; evaluated {len(res.evaluated)} point(s): "
                                  + ", ".join(f"{v:g}{'*' if k else ''}" for v, k in sorted(res.evaluated.items())))
            else:
                if adaptive:
                    outcomes = run_adaptive(sweep, configs, metric=metric, test=kt, direction=direction, alpha=alpha,
                                            min_effect=min_effect, round_size=round_size, progress=progress)
                    summ = adaptive_summary(sweep, outcomes)
                    for o in outcomes:
                        c = o.comparison
                        console.print(f"{o.operator}={o.value}: {'killed' if c.killed else 'survived'} after "
                                      f"{c.runs_mutant} run(s) (saved {o.saved_runs}); p={c.p_value:.3g} d={_fmt(c.effect_size, 3)}")
                    console.print(f"adaptive: {summ.trained} trainings used of {summ.fixed_design} "
                                  f"for the fixed design; saved {summ.saved}")
                    store.close()
                    return
                run_sweep(sweep, configs, progress, metric=metric)
        after = store.count_runs()
        console.print(f"{after} runs stored in {store.path} ({after - before} trained now, {before} already stored)", highlight=False)
        _print_analysis(analyze(store, model=ref.label, metric=metric, direction=direction, test=kt, alpha=alpha,
                                min_effect=min_effect), store)
    store.close()


@app.command("analyze")
def analyze_cmd(
    logs_dir: Path = typer.Argument(..., help="Directory given to 'faultlab mutate run --logs-dir'."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to analyse when the directory holds several."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric to decide on (default val_accuracy, accuracy, val_loss, loss)."),
    direction: Optional[str] = typer.Option(None, "--direction", help="higher|lower is better (default: from the metric name)."),
    test: str = typer.Option("glm", "--test", help="Kill test: glm, welch or mann-whitney."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level."),
    min_effect: float = typer.Option(0.5, "--min-effect", help="Smallest |Cohen's d| that kills."),
    train_metric: Optional[str] = typer.Option(None, "--train-metric", help="Training-set metric for the mutation score (default: METRIC without val_)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the results table as CSV."),
    runs_csv: Optional[Path] = typer.Option(None, "--runs-csv", help="Write every run (operator,value,setting,run,seed,status,metric,error)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report with box plots."),
) -> None:
    """Decide which stored mutants are killed and write CSV/HTML reports; never retrains.

    Example: faultlab mutate analyze runs/lstm --csv results.csv --runs-csv runs.csv --html report.html
    """
    from ..mutation import MutationStore, analyze
    from ..mutation.report import write_csv, write_html, write_runs_csv

    store = MutationStore.open_existing(logs_dir)
    try:
        result = analyze(store, model=model, metric=metric, direction=direction, test=test, alpha=alpha,
                         min_effect=min_effect, train_metric=train_metric)
        _print_analysis(result, store)
        _warn_mann_whitney(result.test, alpha, [(m.comparison.runs_original, m.comparison.runs_mutant) for m in result.mutants])
        for path, writer in ((csv, write_csv), (runs_csv, lambda a, p: write_runs_csv(store, a, p)),
                             (html, lambda a, p: write_html(store, a, p))):
            if path is not None:
                writer(result, path)
                console.print(f"wrote {path}")
    finally:
        store.close()
