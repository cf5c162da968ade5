"""``faultlab rnn``: model-based analysis of recurrent networks (issues #7, #9).

Issue #7's commands live here: train, build, features, compare-features, localize,
markov and diff. They parse options, call :mod:`faultlab.rnn` and print; #9's commands
register on the same ``app`` from :mod:`faultlab.cli.rnn_repair`.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import FaultlabError
from ._common import console, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from ..rnn.analysis import Analysis

app = typer.Typer(help="RNN model-based analysis: abstraction, stability, features, localisation, influence, repair.\n\nExample: faultlab rnn train --arch gru --framework torch --data digits-seq -o models/gru-digits", no_args_is_help=True)

# ----------------------------------------------------------------- shared options
ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Trained subject: .pt (with its .json) or .keras.")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="digits-seq, mnist-seq, or a training .npz (then also --test-data).")]
TestDataOpt = Annotated[Optional[str], typer.Option("--test-data", help="Test .npz; default: the bundled test split of --data.")]
PcaOpt = Annotated[Optional[int], typer.Option("--pca", help="PCA dimensions (default 10, or the stored abstraction's).")]
ComponentsOpt = Annotated[int, typer.Option("--components", "-c", help="GMM components m (abstract states 1..m).")]
BuildOpt = Annotated[Optional[Path], typer.Option("--build", help="Directory written by `rnn build`: reuse its abstraction for --components.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for PCA/GMM (when no stored abstraction is reused).")]
SimSeedOpt = Annotated[int, typer.Option("--seed", help="Seed for PCA/GMM (when no stored abstraction is reused) and the SimNN.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N (>= 1) training and test inputs.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust", "--trust-pickle",
    help="Run code from the model file: Keras Lambda layers, or a whole pickled torch module (torch.save(model)); only for files you trust.")]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]


def _check_out(out: Path | None, option: str = "--out", *, file: bool = False) -> None:
    """Refuse an output path that is a file or lies below one, before any work or writing.

    With ``file``, ``out`` names a file to write (it may exist); only its folders are checked.
    """
    if out is None:
        return
    for q in (Path(out).parents if file else (Path(out), *Path(out).parents)):
        if q.exists():
            if not q.is_dir():
                where = "is a file" if q == Path(out) else f"lies below the file {q}"
                raise FaultlabError(f"{option} {out}: {where}, not a directory; choose another {option}")
            return


def _make_dir(out: Path, option: str = "--out") -> Path:
    """Create the output directory ``out`` (after every check passed); one-line error when it cannot be."""
    _check_out(out, option)
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaultlabError(f"{option} {out}: cannot create the directory ({e.strerror}); choose another {option}") from e
    return Path(out)


def _prepare(model: Path, data: str, test_data: str | None, *, pca: int | None, components: int,
             build: Path | None, limit: int | None, trust: bool) -> tuple[Any, Any, Any]:
    """Load and check the model, the data and the abstraction options; nothing slow, nothing written.

    Everything that can be wrong with the input fails here, before a progress bar starts.
    """
    from ..rnn.abstraction import Abstraction
    from ..rnn.analysis import abstraction_file, check_build_dir, check_fits, check_limit, load_split_data
    from ..rnn.subjects import load_model, model_file

    if components < 1:
        raise FaultlabError(f"--components {components}: must be >= 1")
    if pca is not None and pca < 1:
        raise FaultlabError(f"--pca {pca}: must be >= 1")
    check_limit(limit)
    path = model_file(model)
    if build is not None:
        check_build_dir(build, model_path=path)
    net = load_model(path, trust=trust)
    train, test = load_split_data(data, test_data, limit=limit)
    hidden, _ = check_fits(net, train, source=f"--data {data}")
    check_fits(net, test, source=f"--test-data {test_data}" if test_data else f"--data {data}")
    stored = abstraction_file(build, components) if build is not None else None
    if stored is not None and stored.exists():
        a = Abstraction.load(stored)
        if a.hidden_size != hidden:
            raise FaultlabError(f"--build {build}: {stored.name} abstracts hidden states of size {a.hidden_size}, "
                                f"the model {path} has {hidden}; pass the model it was built from")
        return net, train, test
    n_steps = train.x.shape[0] * train.x.shape[1]
    k = pca if pca is not None else min(10, hidden)
    if k > hidden:
        raise FaultlabError(f"--pca {k}: must be at most the model's hidden size {hidden}")
    if components > n_steps:
        raise FaultlabError(f"--components {components}: more than the {n_steps} training steps (inputs x steps); "
                            "lower --components or raise --limit")
    return net, train, test


def _analysis(model: Path, data: str, test_data: str | None, *, pca: int | None, components: int,
              seed: int, build: Path | None, limit: int | None, trust: bool,
              prepared: tuple[Any, Any, Any] | None = None) -> "Analysis":
    from ..rnn.analysis import build_analysis

    net, train, test = prepared or _prepare(model, data, test_data, pca=pca, components=components, build=build,
                                            limit=limit, trust=trust)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("profile + abstract", total=3)
        return build_analysis(model=net, train=train, test=test, pca_dims=pca, components=components, seed=seed,
                              build_dir=build, progress=lambda done, total: bar.update(task, completed=done, total=total))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right" if c not in ("feature_set",) else "left")
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    console.print(t)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else (f"{v:.1f}" if abs(v) >= 1000 else f"{v:.4f}")
    return str(v)


def _write_csv(df: Any, path: Path) -> Path:
    _make_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------ train
@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to save: PATH.pt (+ PATH.json) for torch, PATH.keras for keras.")],
    arch: Annotated[str, typer.Option("--arch", help="lstm or gru.")] = "gru",
    framework: Annotated[str, typer.Option("--framework", help="torch or keras.")] = "torch",
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden units.")] = 32,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 15,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Minibatch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (> 0).")] = 5e-3,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the initial weights and the batch order.")] = 0,
) -> None:
    """Train an LSTM/GRU subject on sequences (digits 8x8, MNIST rows 28x28) on the CPU.

    Example: faultlab rnn train --arch gru --framework torch --data digits-seq -o models/gru-digits
    """
    from ..rnn.analysis import check_same_shape, load_split_data
    from ..rnn.subjects import accuracy, check_labels, check_train_options, save_model, train_subject, training_classes

    check_train_options(arch=arch, framework=framework, hidden_size=hidden, epochs=epochs, batch_size=batch_size, learning_rate=lr)
    _check_out(out, file=True)
    train_ds, test_ds = load_split_data(data, test_data)
    test_source = f"--test-data {test_data}" if test_data else f"--data {data}"
    check_same_shape(train_ds, test_ds, source=test_source)
    k = training_classes(train_ds, source=f"--data {data}")
    check_labels(test_ds, n_classes=k, source=test_source, why=f"the {k} classes of the training data")
    with progress_bar() as bar:
        task = bar.add_task(f"train {arch} ({framework})", total=epochs)
        model = train_subject(train_ds, arch=arch, framework=framework, hidden_size=hidden, epochs=epochs,
                              batch_size=batch_size, learning_rate=lr, seed=seed,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    path = save_model(model, out)
    console.print(f"saved [bold]{path}[/]: train accuracy {accuracy(model, train_ds):.4f}, "
                  f"test accuracy {accuracy(model, test_ds):.4f} ({len(train_ds)} / {len(test_ds)} inputs)")


# ------------------------------------------------------------------------ build
@app.command()
def build(
    model: ModelOpt,
    out: OutDirOpt,
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    pca: Annotated[int, typer.Option("--pca", help="PCA dimensions k (1..hidden size).")] = 10,
    start: Annotated[int, typer.Option("--start", help="Smallest number of GMM components m.")] = 2,
    end: Annotated[int, typer.Option("--end", help="Largest m (included when the steps land on it).")] = 20,
    step: Annotated[int, typer.Option("--step", help="Step between values of m.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the PCA and the GMMs.")] = 0,
    limit: LimitOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Sweep abstractions (PCA + diagonal GMM) over m = start..end and write OUT/abstraction.csv.

    Each m's abstraction is stored as OUT/abstraction_mNNN.npz; rerunning resumes.
    Example: faultlab rnn build --model models/gru-digits.pt --data digits-seq --pca 10 --start 2 --end 40 --step 2 --out runs/gru
    """
    from ..rnn.abstraction import components_range, sweep_components, write_sweep_csv
    from ..rnn.analysis import abstraction_file, check_fits, check_limit, file_digest, load_split_data
    from ..rnn.profile import profile_model
    from ..rnn.subjects import load_model, model_file

    ms = components_range(start, end, step)
    if pca < 1:
        raise FaultlabError(f"--pca {pca}: must be >= 1 (and at most the model's hidden size)")
    check_limit(limit)
    _check_out(out)
    path = model_file(model)
    meta = {"model": str(path.resolve()), "data": data, "test_data": test_data, "pca": pca, "seed": seed, "limit": limit}
    digest = file_digest(path)
    meta_path = out / "build.json"
    csv_path = out / "abstraction.csv"
    if meta_path.exists():
        _check_build_meta(out, meta_path, meta, digest)
        done = _stored_sweep(out, csv_path)
        if all(m in done for m in ms):  # the same model and options, every m stored: nothing to load or fit
            console.print(f"all {len(ms)} abstractions already in {csv_path}")
            _sweep_table(csv_path, ms, done)
            return
    net = load_model(path, trust=trust)
    train_ds, test_ds = load_split_data(data, test_data, limit=limit)
    hidden, _ = check_fits(net, train_ds, source=f"--data {data}")
    check_fits(net, test_ds, source=f"--test-data {test_data}" if test_data else f"--data {data}")
    n_steps = train_ds.x.shape[0] * train_ds.x.shape[1]
    if pca > min(hidden, n_steps):
        raise FaultlabError(f"--pca {pca}: must be at most the model's hidden size {hidden}")
    if ms[-1] > n_steps:
        raise FaultlabError(f"--end {end}: m={ms[-1]} is more than the {n_steps} training steps (inputs x steps); "
                            "lower --end" + (" or raise --limit" if limit else ""))
    _make_dir(out)
    if not meta_path.exists():
        tmp = meta_path.with_name(meta_path.name + ".tmp")
        tmp.write_text(json.dumps({**meta, "model_sha256": digest, "hidden_size": hidden}, indent=2) + "\n")
        tmp.replace(meta_path)
    done = _stored_sweep(out, csv_path)
    todo = [m for m in ms if m not in done]
    if not todo:
        console.print(f"all {len(ms)} abstractions already in {csv_path}")
    else:
        prof = profile_model(net, train_ds.x)
        rows = dict(done)

        def store(abstraction: Any, row: Any) -> None:
            abstraction.save(abstraction_file(out, row.m))
            rows[row.m] = row
            write_sweep_csv(list(rows.values()), csv_path)

        with progress_bar() as bar:
            task = bar.add_task(f"abstractions (pca {pca})", total=len(todo))
            sweep_components(prof.hidden, prof.step_pred, pca_dims=pca, ms=todo, seed=seed, n_classes=prof.n_classes,
                             on_fit=store, progress=lambda d, t: bar.update(task, completed=d, total=t))
    _sweep_table(csv_path, ms, _stored_sweep(out, csv_path))


def _stored_sweep(out: Path, csv_path: Path) -> dict[int, Any]:
    """The sweep rows of ``abstraction.csv`` whose abstraction file is stored too, by m."""
    from ..rnn.abstraction import read_sweep_csv
    from ..rnn.analysis import abstraction_file

    return {r.m: r for r in read_sweep_csv(csv_path) if abstraction_file(out, r.m).exists()}


def _sweep_table(csv_path: Path, ms: list[int], rows: dict[int, Any]) -> None:
    _table(f"abstractions and stability ({csv_path})", ["m", "bic", "mean", "weighted", "min", "max", "seconds"],
           [[m, *list(asdict(rows[m]).values())[1:]] for m in ms if m in rows])


def _check_build_meta(out: Path, meta_path: Path, meta: dict[str, Any], digest: str) -> None:
    """Refuse to resume a build made with other options or from another model file."""
    from ..rnn.subjects import model_file

    try:
        old = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise FaultlabError(f"--out {out}: build.json is unreadable ({type(e).__name__}); use another --out") from e
    if not isinstance(old, dict):
        raise FaultlabError(f"--out {out}: build.json is not a build record; use another --out")
    try:  # older builds recorded the --model argument as given
        old = {**old, "model": str(model_file(old.get("model", "")).resolve())}
    except FaultlabError:
        pass
    diff = ", ".join(f"{k}={old.get(k)!r} (now {meta[k]!r})" for k in meta if old.get(k) != meta[k])
    if not diff and old.get("model_sha256", digest) != digest:
        diff = f"another version of {meta['model']} (the file changed since)"
    if diff:
        raise FaultlabError(f"--out {out}: holds a build made with {diff}; use another --out, or the same options to resume")


# --------------------------------------------------------------------- features
FEATURE_HELP = "ID (state), RL (label), ID_RL, CS (P(.|state)) or all."


@app.command()
def features(
    model: ModelOpt,
    components: ComponentsOpt = 20,
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    pca: PcaOpt = None,
    build: BuildOpt = None,
    feature_set: Annotated[str, typer.Option("--feature-set", help=FEATURE_HELP)] = "all",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for features.csv.")] = None,
    seed: SimSeedOpt = 0,
    limit: LimitOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Train SimNN on trace features of correctly predicted training inputs; report accuracy and fidelity on the test set.

    Example: faultlab rnn features --model models/gru-digits.pt --build runs/gru --components 20 --out runs/gru
    """
    _features(model, components, data, test_data, pca, build, (feature_set,), out, "features.csv", seed, limit, trust)


@app.command("compare-features")
def compare_features(
    model: ModelOpt,
    components: ComponentsOpt = 20,
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    pca: PcaOpt = None,
    build: BuildOpt = None,
    feature_sets: Annotated[str, typer.Option("--feature-sets", help="Comma-separated feature sets: " + FEATURE_HELP)] = "ID,RL,ID_RL,CS,all",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for compare_features.csv.")] = None,
    seed: SimSeedOpt = 0,
    limit: LimitOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Compare SimNN accuracy and fidelity across feature sets ID, RL, ID_RL, CS and all.

    Example: faultlab rnn compare-features --model models/gru-digits.pt --build runs/gru --components 20 --out runs/gru
    """
    sets = tuple(s.strip() for s in feature_sets.split(",") if s.strip())
    _features(model, components, data, test_data, pca, build, sets, out, "compare_features.csv", seed, limit, trust)


def _features(model: Path, components: int, data: str, test_data: str | None, pca: int | None, build: Path | None,
              sets: tuple[str, ...], out: Path | None, filename: str, seed: int, limit: int | None, trust: bool) -> None:
    import pandas as pd

    from ..rnn.features import FEATURE_SETS, evaluate_simnn

    bad = [s for s in sets if s not in FEATURE_SETS]
    if bad or not sets:
        raise FaultlabError(f"feature set(s) {', '.join(bad) or '(none)'}: expected a comma-separated subset of {', '.join(FEATURE_SETS)}")
    _check_out(out)
    a = _analysis(model, data, test_data, pca=pca, components=components, seed=seed, build=build, limit=limit, trust=trust)
    scores = []
    with progress_bar(transient=True) as bar:
        task = bar.add_task("SimNN", total=len(sets))
        for fs in sets:
            scores.append(evaluate_simnn(
                train_traces=a.train_traces, train_step_pred=a.train_profile.step_pred, train_labels=a.train.y,
                test_traces=a.test_traces, test_step_pred=a.test_profile.step_pred, test_labels=a.test.y,
                n_states=a.n_states, n_classes=a.n_classes, feature_set=fs, seed=seed))
            bar.advance(task)
    chance = 1.0 / a.n_classes
    rows = [[s.feature_set, s.accuracy, s.fidelity, s.rnn_accuracy, s.n_train, s.n_test] for s in scores]
    _table(f"SimNN on m={a.abstraction.components}, pca={a.abstraction.pca_dims} (chance {chance:.3f})",
           ["feature_set", "accuracy", "fidelity", "rnn_accuracy", "n_train", "n_test"], rows)
    if out is not None:
        df = pd.DataFrame([{**asdict(s), "components": a.abstraction.components, "pca": a.abstraction.pca_dims} for s in scores])
        console.print(f"wrote {_write_csv(df, Path(out) / filename)}")


# --------------------------------------------------------------------- localize
@app.command()
def localize(
    model: ModelOpt,
    out: OutDirOpt,
    components: ComponentsOpt = 20,
    benign: Annotated[int, typer.Option("--benign", help="0: localise failed test inputs; 1: benign (correct) ones.")] = 0,
    k: Annotated[int, typer.Option("--k", "-k", help="Largest number of nearest training traces K.")] = 10,
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    pca: PcaOpt = None,
    build: BuildOpt = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Nearest training traces of failed (or benign) test inputs; curves for k = 1..K as CSV and PNG.

    Writes OUT/localize_failed.csv (or _benign), OUT/neighbours_failed.csv and OUT/localize.png.
    Example: faultlab rnn localize --model models/gru-digits.pt --build runs/gru --components 20 --benign 0 -k 10 --out runs/gru
    """
    import numpy as np

    from ..rnn.localize import localisation_curves, nearest_traces, neighbour_table, normalise_traces, plot_localisation

    if benign not in (0, 1):
        raise FaultlabError(f"--benign {benign}: expected 0 (failed inputs) or 1 (benign inputs)")
    if k < 1:
        raise FaultlabError(f"-k {k}: must be >= 1 (the largest number of nearest training traces)")
    _check_out(out)
    prepared = _prepare(model, data, test_data, pca=pca, components=components, build=build, limit=limit, trust=trust)
    if k > len(prepared[1]):
        raise FaultlabError(f"-k {k}: must be at most the number of training traces {len(prepared[1])}")
    a = _analysis(model, data, test_data, pca=pca, components=components, seed=seed, build=build, limit=limit, trust=trust,
                  prepared=prepared)
    refs = normalise_traces(a.train_traces, n_states=a.n_states)
    targets = normalise_traces(a.test_traces, n_states=a.n_states)
    pred, truth = a.test_profile.pred, a.test.y
    curves = {}
    groups = {"benign": np.flatnonzero(pred == truth), "failed": np.flatnonzero(pred != truth)}
    neighbours = None
    for name, ids in groups.items():
        if len(ids) == 0:
            if name == ("benign" if benign else "failed"):
                raise FaultlabError(f"--benign {benign}: the model has no {name} test inputs to localise")
            continue
        idx, dist = nearest_traces(targets[ids], refs, k=k)
        curves[name] = localisation_curves(idx, dist, reference_labels=a.train.y, target_truth=truth[ids], target_pred=pred[ids])
        if name == ("benign" if benign else "failed"):
            neighbours = neighbour_table(ids, idx, dist, reference_labels=a.train.y, target_truth=truth[ids], target_pred=pred[ids])
    chosen = "benign" if benign else "failed"
    _make_dir(out)
    _write_csv(curves[chosen], out / f"localize_{chosen}.csv")
    assert neighbours is not None
    _write_csv(neighbours, out / f"neighbours_{chosen}.csv")
    empty = curves[chosen].iloc[0:0]
    png = plot_localisation(curves.get("benign", empty), curves.get("failed", empty), out / "localize.png",
                            title=f"{Path(model).name}: m={a.abstraction.components}, pca={a.abstraction.pca_dims}")
    df = curves[chosen]
    _table(f"{chosen} test inputs ({len(groups[chosen])}): nearest training traces",
           ["k", "truth frac", "pred frac", "truth n", "pred n", "truth dist", "pred dist"],
           [[int(r.k), r.truth_fraction, r.pred_fraction, r.truth_count_mean, r.pred_count_mean, r.truth_distance_mean, r.pred_distance_mean]
            for r in df.itertuples() if r.k in (1, 2, 3, 5, k) or r.k == len(df)])
    console.print(f"wrote {out / f'localize_{chosen}.csv'}, {out / f'neighbours_{chosen}.csv'} and {png}")


# ----------------------------------------------------------------------- markov
@app.command()
def markov(
    model: ModelOpt,
    components: ComponentsOpt = 20,
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    pca: PcaOpt = None,
    build: BuildOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for transitions.csv and coverage.json.")] = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    trust: TrustOpt = False,
) -> None:
    """The abstract model as a Markov chain and the test set's state and transition coverage (DeepStellar).

    Example: faultlab rnn markov --model models/gru-digits.pt --build runs/gru --components 20 --out runs/gru
    """
    import pandas as pd

    from ..rnn.markov import coverage, markov_chain

    _check_out(out)
    a = _analysis(model, data, test_data, pca=pca, components=components, seed=seed, build=build, limit=limit, trust=trust)
    chain = markov_chain(a.train_traces, n_states=a.n_states)
    cov = coverage(a.train_traces, a.test_traces, n_states=a.n_states)
    _table(f"coverage of {a.test.name} ({len(a.test)} inputs) on m={a.abstraction.components}",
           ["", "covered", "total", "coverage", "new in test"],
           [["states", cov.states_covered, cov.states_total, cov.state_coverage, cov.new_states],
            ["transitions", cov.transitions_covered, cov.transitions_total, cov.transition_coverage, cov.new_transitions]])
    if out is not None:
        edges = pd.DataFrame(chain.edges(), columns=["source", "target", "count", "probability"])
        _write_csv(edges, Path(out) / "transitions.csv")
        doc = {**asdict(cov), "state_coverage": cov.state_coverage, "transition_coverage": cov.transition_coverage,
               "components": a.abstraction.components, "pca": a.abstraction.pca_dims}
        (Path(out) / "coverage.json").write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {Path(out) / 'transitions.csv'} and {Path(out) / 'coverage.json'}")


# ------------------------------------------------------------------------- diff
@app.command()
def diff(
    model: ModelOpt,
    components: ComponentsOpt = 20,
    fault: Annotated[Optional[str], typer.Option("--fault", help="LAYER,INDEX,BIT: flip one weight bit, e.g. 'rnn.weight_hh_l0,(2,1),30'.")] = None,
    fault_list: Annotated[Optional[Path], typer.Option("--fault-list", help="A fault-list CSV; use with --row.")] = None,
    row: Annotated[Optional[int], typer.Option("--row", help="Injection id of the fault-list row to apply.")] = None,
    mutant: Annotated[Optional[Path], typer.Option("--mutant", help="A second trained model (a mutant) to compare with.")] = None,
    top: Annotated[int, typer.Option("--top", help="How many states and transitions to list (>= 1).")] = 10,
    data: DataOpt = "digits-seq",
    test_data: TestDataOpt = None,
    pca: PcaOpt = None,
    build: BuildOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for diff_states.csv and diff_transitions.csv.")] = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Compare state visits and transitions on the test set of the clean model vs a bit-flipped or mutant model.

    Example: faultlab rnn diff --model models/gru-digits.pt --build runs/gru --components 20 --fault "rnn.weight_hh_l0,(2,1),30"
    """
    import numpy as np

    from ..rnn.analysis import check_fits
    from ..rnn.diff import WeightBitFlip, diff_traces, flipped_bit, parse_fault
    from ..rnn.profile import profile_model
    from ..rnn.subjects import load_model

    chosen = [o for o in (fault, fault_list, mutant) if o is not None]
    if len(chosen) != 1:
        raise FaultlabError("pass exactly one of --fault LAYER,INDEX,BIT, --fault-list FILE --row ID, or --mutant MODEL")
    if top < 1:
        raise FaultlabError(f"--top {top}: must be >= 1 (how many states and transitions to list)")
    spec: WeightBitFlip | None = None
    if fault is not None:
        spec = parse_fault(fault)
    elif fault_list is not None:
        from ..faults import FaultList

        if row is None:
            raise FaultlabError(f"--fault-list {fault_list}: also pass --row with the Injection id of the fault to apply")
        faults = {f.id: f for f in FaultList.from_csv(fault_list)}
        if row not in faults:
            raise FaultlabError(f"--row {row}: {fault_list} has no fault with Injection id {row} (ids {min(faults)}..{max(faults)})")
        spec = WeightBitFlip.from_fault(faults[row])
    _check_out(out)
    prepared = _prepare(model, data, test_data, pca=pca, components=components, build=build, limit=limit, trust=trust)
    net, _, test = prepared
    other_net = None
    if spec is not None:
        with flipped_bit(net, spec):  # checks layer, index and bits against the model; restored on exit
            pass
    else:
        other_net = load_model(mutant, trust=trust, option="--mutant")
        h_other, _ = check_fits(other_net, test, source=f"--mutant {mutant}")
        h_clean = int(profile_model(net, test.x[:1]).hidden.shape[2])
        if h_other != h_clean:
            raise FaultlabError(f"--mutant {mutant}: hidden size {h_other} differs from the clean model's {h_clean}; "
                                "a mutant must have the clean model's architecture")
    a = _analysis(model, data, test_data, pca=pca, components=components, seed=seed, build=build, limit=limit, trust=trust,
                  prepared=prepared)
    if spec is not None:
        with flipped_bit(a.model, spec) as (before, after):
            other = profile_model(a.model, a.test.x)
        label = f"fault {spec} ({before:.6g} -> {after:.6g})"
    else:
        other = profile_model(other_net, a.test.x)
        label = f"mutant {mutant}"
    d = diff_traces(a.test_traces, a.abstraction.traces(other.hidden), n_states=a.n_states)
    acc_clean = float(np.mean(a.test_profile.pred == a.test.y))
    acc_other = float(np.mean(other.pred == a.test.y))
    changed = float(np.mean(other.pred != a.test_profile.pred))
    console.print(f"{label}: accuracy {acc_clean:.4f} -> {acc_other:.4f}, predictions changed {changed:.4f}; "
                  f"total variation: states {d.state_distance:.4f}, transitions {d.transition_distance:.4f}")
    _table("states whose traffic changed most", ["state", "clean_visits", "faulty_visits", "change"],
           [[int(r.state), int(r.clean_visits), int(r.faulty_visits), int(r.change)] for r in d.states.head(top).itertuples() if r.change != 0])
    _table("transitions whose traffic changed most", ["source", "target", "clean", "faulty", "change"],
           [[int(r.source), int(r.target), int(r.clean), int(r.faulty), int(r.change)] for r in d.transitions.head(top).itertuples() if r.change != 0])
    if out is not None:
        _write_csv(d.states, Path(out) / "diff_states.csv")
        _write_csv(d.transitions, Path(out) / "diff_transitions.csv")
        console.print(f"wrote {Path(out) / 'diff_states.csv'} and {Path(out) / 'diff_transitions.csv'}")


from . import rnn_repair as _rnn_repair  # noqa: E402,F401  (registers #9's commands on this app)
