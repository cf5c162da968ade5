"""``faultlab rnn flip|influence|datagen|segment|backdoor`` (issue #9); commands register on ``rnn.app``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import typer

from ..errors import FaultlabError
from ._common import console, progress_bar
from .rnn import _check_out, _make_dir, app

OUT_HELP = "Directory for results.sqlite and the summary CSVs; rerunning the same command resumes."


def _seeds(n: int) -> tuple[int, ...]:
    if n < 1:
        raise FaultlabError(f"--seeds {n}: need at least 1 seed (3 or more for a spread)")
    return tuple(range(n))


def _at_least(value: int, name: str, minimum: int = 1, what: str = "") -> None:
    if value < minimum:
        raise FaultlabError(f"{name} {value}: must be >= {minimum}{f' ({what})' if what else ''}")


def _check_sequence_data(data: str) -> None:
    """Load both splits of ``data`` once so a bad --data fails before anything is written or trained."""
    from ..rnn.analysis import check_same_shape, load_sequences
    from ..rnn.subjects import check_labels, training_classes

    train, test = load_sequences(data, "train"), load_sequences(data, "test")
    check_same_shape(train, test, source=f"--data {data}")
    k = training_classes(train, source=f"--data {data}")
    check_labels(test, n_classes=k, source=f"--data {data}", why=f"the {k} classes of the training data")


def _percents(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        vals = ()
    if not vals or any(not 0 < v <= 100 for v in vals):
        raise FaultlabError(f"--retrain-percents {text!r}: expected comma-separated percentages in (0, 100], e.g. 10,20")
    return vals


def _print_table(df: Any, *, title: str, keys: list[str], values: list[str]) -> None:
    from rich.table import Table

    from ..rnn.repair_store import mean_pm

    table = Table(title=title)
    spread = bool(len(df)) and int(df["seeds"].max()) > 1  # one seed: no sd to show
    for k in keys:
        table.add_column(k)
    for v in values:
        table.add_column(f"{v} (mean ± sd)" if spread else v, justify="right")
    table.add_column("seeds", justify="right")
    for _, r in df.iterrows():
        table.add_row(*[str(r[k]) for k in keys], *[mean_pm(r[f"{v}_mean"], r[f"{v}_std"]) for v in values], str(r["seeds"]))
    console.print(table)


def _run_seeds(store: Any, seeds: tuple[int, ...], run: Callable[[int, Callable[[int, int], None]], Any],
               description: str) -> list[dict[str, Any]]:
    """Run ``run(seed, progress)`` for every seed the store lacks; one transaction per seed."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(seeds))
        for seed in seeds:
            key = f"seed={seed:04d}"
            if not store.has(key):
                result = run(seed, lambda done, total: bar.update(task, completed=seeds.index(seed) + done / max(total, 1)))
                store.put({key: {"seed": seed, "rows": result if isinstance(result, list) else [result]}})
            bar.update(task, completed=seeds.index(seed) + 1)
    return [row for payload in store.rows() for row in payload["rows"]]


@app.command("flip")
def flip_cmd(
    data: str = typer.Option("digits-seq", "--data", help="Sequence data set (digits-seq, mnist-seq or an .npz)."),
    classes: str = typer.Option("1,7", "--classes", help="SOURCE,TARGET: flip labels of SOURCE to TARGET."),
    rate: float = typer.Option(0.3, "--rate", help="Fraction of the SOURCE training samples to flip."),
    seed: int = typer.Option(0, "--seed", help="Seed for the flipped samples, the initial weights and the batch order."),
    epochs: int = typer.Option(30, "--epochs", help="SGD training epochs of each model (>= 1)."),
    hidden: int = typer.Option(32, "--hidden", help="GRU hidden units (>= 1)."),
    all_classes: bool = typer.Option(False, "--all-classes", help="Train on every class, not only the two named ones."),
    out: Path = typer.Option(None, "--out", help="Directory to save clean.pt, flipped.pt and flip.npz (flipped indices, targets)."),
) -> None:
    """Train a clean and a label-flipped GRU and list the targets (right before the flip, wrong after).

    Example: faultlab rnn flip --data digits-seq --classes 1,7 --rate 0.4
    """
    import numpy as np

    from ..rnn.flip import check_flip_options, load_flip_data, parse_classes, run_flip
    from ..rnn.inf_training import TrainConfig, predict

    pair = parse_classes(classes)
    check_flip_options(classes=pair, rate=rate, epochs=epochs, hidden_size=hidden)
    _check_out(out)
    load_flip_data(data, pair, rate)
    with progress_bar() as bar:
        task = bar.add_task("training clean + flipped", total=2 * epochs)
        exp = run_flip(data=data, classes=pair, rate=rate, seed=seed, hidden_size=hidden,
                       config=TrainConfig(epochs=epochs, seed=seed), all_classes=all_classes,
                       progress=lambda d, t: bar.update(task, completed=d, total=t))
    clean_acc = float(np.mean(predict(exp.clean_model, exp.x_test) == exp.y_test))
    flipped_acc = float(np.mean(predict(exp.flipped_model, exp.x_test) == exp.y_test))
    console.print(f"{len(exp.x_train)} training samples, {len(exp.flipped)} flipped ({pair[0]} -> {pair[1]}); "
                  f"test accuracy clean {clean_acc:.3f}, flipped {flipped_acc:.3f}; "
                  f"{len(exp.targets)} targets (test inputs the clean model gets right and the flipped one wrong)")
    if out is not None:
        from ..rnn.subjects import save_model

        _make_dir(out)
        save_model(exp.clean_model, out / "clean.pt")
        save_model(exp.flipped_model, out / "flipped.pt")
        np.savez(out / "flip.npz", flipped=exp.flipped, targets=exp.targets, classes=np.array(exp.classes))
        console.print(f"wrote {out}/clean.pt, flipped.pt, flip.npz")


@app.command("influence")
def influence_cmd(
    method: str = typer.Option("model,kl,sgd,loss,random", "--method", help="Comma-separated: model, kl, sgd, loss, random."),
    data: str = typer.Option("digits-seq", "--data", help="Sequence data set (digits-seq, mnist-seq or an .npz)."),
    classes: str = typer.Option("1,7", "--classes", help="SOURCE,TARGET of the label flip."),
    rate: float = typer.Option(0.3, "--rate", help="Fraction of the SOURCE training samples to flip, in (0, 1)."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1); each re-draws the flip, weights and batches."),
    epochs: int = typer.Option(30, "--epochs", help="SGD training epochs of each model (>= 1)."),
    retrain_percents: str = typer.Option("10,20", "--retrain-percents", help="Restore the flipped labels found in the top p % and retrain, per p."),
    scope: str = typer.Option("head", "--scope", help="K&L parameters: head (exact Hessian) or all (CG / LiSSA)."),
    solver: str = typer.Option("auto", "--solver", help="auto, exact, cg or lissa."),
    pca: int = typer.Option(5, "--pca", help="Model-based: PCA dimensions of the abstraction."),
    components: int = typer.Option(20, "--components", help="Model-based: GMM components (abstract states)."),
    out: Path = typer.Option(Path("rnn-influence"), "--out", help=OUT_HELP),
) -> None:
    """Rank training samples by their influence on the flip's targets and evaluate the rankings over seeds.

    Example: faultlab rnn influence --method kl,random --rate 0.4 --seeds 3 --out runs/influence
    """
    from ..rnn.flip import check_flip_options, load_flip_data, parse_classes
    from ..rnn.inf_evaluate import RECALL_PERCENTS, InfluenceSetup, evaluate_influence, setup_config, tables
    from ..rnn.repair_store import ResultStore

    _at_least(pca, "--pca")
    _at_least(components, "--components")
    setup = InfluenceSetup(data=data, classes=classes, rate=rate, seeds=_seeds(seeds),
                           methods=tuple(m.strip() for m in method.split(",") if m.strip()),
                           retrain_percents=_percents(retrain_percents), epochs=epochs, scope=scope, solver=solver,
                           pca_dims=pca, components=components)
    setup.validate()
    pair = parse_classes(classes)
    check_flip_options(classes=pair, rate=rate, epochs=epochs, hidden_size=setup.hidden_size)
    _check_out(out)
    load_flip_data(data, pair, rate)
    with ResultStore(out / "results.sqlite", config=setup_config(setup)) as store, progress_bar() as bar:
        task = bar.add_task("seeds x methods", total=len(setup.seeds) * len(setup.methods))
        rows = evaluate_influence(setup, store, progress=lambda d, t: bar.update(task, completed=d))
    t = tables(rows)
    if not t["seeds"]:
        raise FaultlabError(f"--rate {rate}: the flip caused no target failure in any seed; raise --rate or --seeds")
    tables(rows, percents=RECALL_PERCENTS)["recall"].to_csv(out / "recall.csv", index=False)  # every 5 % step
    t["retrain"].to_csv(out / "retrain.csv", index=False)
    _print_table(t["recall"], title="Recall of flipped samples in the top p %", keys=["method", "percent"], values=["recall"])
    _print_table(t["retrain"], title="Restore flipped labels in the top p % and retrain",
                 keys=["method", "percent"], values=["target_acc", "test_acc", "restored"])
    if t["skipped"]:
        console.print(f"seeds without targets (skipped): {t['skipped']}")
    console.print(f"wrote {out}/results.sqlite, recall.csv, retrain.csv")


def _summary(rows: list[dict[str, Any]], values: list[str], by: str = "strategy") -> Any:
    from ..rnn.repair_store import summarise

    return summarise(rows, by=[by], values=values)


@app.command("datagen")
def datagen_cmd(
    data: str = typer.Option("digits-seq", "--data", help="Image rows as sequences: digits-seq, mnist-seq or an .npz."),
    models: int = typer.Option(3, "--models", help="Targets are test inputs that all these models get wrong (>= 1)."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1); each retrains every model."),
    epochs: int = typer.Option(15, "--epochs", help="Training epochs of each model (>= 1)."),
    per_target: int = typer.Option(5, "--per-target", help="Generated samples kept per target (>= 1)."),
    out: Path = typer.Option(Path("rnn-datagen"), "--out", help=OUT_HELP),
) -> None:
    """Repair by generated data: mutate nearby true-label images toward each common failure, retrain, compare.

    Example: faultlab rnn datagen --data digits-seq --models 3 --seeds 3 --out runs/datagen
    """
    from dataclasses import asdict

    from ..rnn.repair import DatagenSetup, run_datagen
    from ..rnn.repair_store import ResultStore

    seed_list = _seeds(seeds)
    _at_least(models, "--models")
    _at_least(epochs, "--epochs")
    _at_least(per_target, "--per-target")
    _check_out(out)
    _check_sequence_data(data)
    setup = DatagenSetup(data=data, n_models=models, epochs=epochs, per_target=per_target)
    with ResultStore(out / "results.sqlite", config={**asdict(setup), "seeds": seeds}) as store:
        rows = _run_seeds(store, seed_list, lambda s, p: run_datagen(setup, s, progress=p), "datagen seeds")
    df = _summary(rows, ["fixed", "test_acc", "test_acc_others", "added", "targets"])
    df.to_csv(out / "summary.csv", index=False)
    _print_table(df, title="Datagen repair: fraction of targets fixed and test accuracy", keys=["strategy"],
                 values=["fixed", "test_acc", "test_acc_others", "added", "targets"])
    console.print(f"wrote {out}/results.sqlite, summary.csv")


def _check_token_task(train: int, epochs: int, components: int, length: int) -> None:
    """Sizes of a token-task run: enough training sequences for the abstraction's components."""
    _at_least(train, "--train", 2, "training sequences")
    _at_least(epochs, "--epochs")
    _at_least(components, "--components")
    if components > train * length:
        raise FaultlabError(f"--train {train}: {train} sequences of {length} tokens give {train * length} hidden states, "
                            f"fewer than --components {components}; raise --train or lower --components")


@app.command("segment")
def segment_cmd(
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1); each draws new data and weights."),
    train: int = typer.Option(300, "--train", help="Training sequences of the token task."),
    epochs: int = typer.Option(20, "--epochs", help="SGD training epochs (>= 1)."),
    width: int = typer.Option(3, "--width", help="Tokens in the suspect segment (1..12, the sequence length)."),
    components: int = typer.Option(20, "--components", help="GMM components (abstract states) of the abstraction."),
    out: Path = typer.Option(Path("rnn-segment"), "--out", help=OUT_HELP),
) -> None:
    """Segment repair on the shipped token task, against random positions and fresh samples.

    Example: faultlab rnn segment --seeds 3 --out runs/segment
    """
    from dataclasses import asdict

    from ..rnn.repair_segment import SegmentSetup, run_segment_repair
    from ..rnn.repair_store import ResultStore

    seed_list = _seeds(seeds)
    length = SegmentSetup().length
    if not 1 <= width <= length:
        raise FaultlabError(f"--width {width}: a segment needs 1..{length} tokens (the token task's sequences have {length})")
    _check_token_task(train, epochs, components, length)
    _check_out(out)
    setup = SegmentSetup(n_train=train, epochs=epochs, width=width, components=components)
    with ResultStore(out / "results.sqlite", config={**asdict(setup), "seeds": seeds}) as store:
        rows = _run_seeds(store, seed_list, lambda s, p: run_segment_repair(setup, s, progress=p), "segment seeds")
    df = _summary(rows, ["fixed", "test_acc", "test_acc_others", "added", "targets"])
    df.to_csv(out / "summary.csv", index=False)
    _print_table(df, title="Segment repair: fraction of failures fixed and test accuracy", keys=["strategy"],
                 values=["fixed", "test_acc", "test_acc_others", "added", "targets"])
    console.print(f"wrote {out}/results.sqlite, summary.csv")


@app.command("backdoor")
def backdoor_cmd(
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1); each draws new data, poison and weights."),
    poison: float = typer.Option(0.05, "--poison", help="Fraction of training sequences given the trigger and label 1."),
    train: int = typer.Option(400, "--train", help="Training sequences of the token task."),
    epochs: int = typer.Option(20, "--epochs", help="SGD training epochs (>= 1)."),
    components: int = typer.Option(20, "--components", help="GMM components (abstract states) of the abstraction."),
    out: Path = typer.Option(Path("rnn-backdoor"), "--out", help=OUT_HELP),
) -> None:
    """Backdoor analysis on the token task: attack at the abstract context vs random positions, fix by removal vs random.

    Example: faultlab rnn backdoor --poison 0.05 --seeds 3 --out runs/backdoor
    """
    from dataclasses import asdict

    import pandas as pd

    from ..rnn.repair_backdoor import BackdoorSetup, run_backdoor
    from ..rnn.repair_store import ResultStore

    seed_list = _seeds(seeds)
    setup = BackdoorSetup(poison_rate=poison, n_train=train, epochs=epochs, components=components)
    setup.validate()
    _check_token_task(train, epochs, components, setup.length)
    _check_out(out)
    with ResultStore(out / "results.sqlite", config={**asdict(setup), "seeds": seeds}) as store:
        rows = _run_seeds(store, seed_list, lambda s, p: run_backdoor(setup, s, progress=p), "backdoor seeds")
    metrics = ["attack_context", "attack_random_same_inputs", "attack_random", "clean_acc", "removed",
               "poison_recall_transitions", "poison_recall_random", "attack_after_transition_fix",
               "attack_after_random_fix", "clean_acc_transition_fix", "clean_acc_random_fix"]
    long = [{"metric": k, "value": r[k]} for r in rows for k in metrics]
    df = _summary(long, ["value"], by="metric")
    df.to_csv(out / "summary.csv", index=False)
    pd.DataFrame(rows).to_csv(out / "seeds.csv", index=False)
    _print_table(df, title="Backdoor: attack success and fixes (attack_* = fraction of label-0 inputs turned to 1)",
                 keys=["metric"], values=["value"])
    console.print(f"wrote {out}/results.sqlite, summary.csv, seeds.csv")
