"""``faultlab show-activations``: draw how one fault spreads through the layers after it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import typer

from . import app
from ._common import check_output_file, console
from .hardware import DeviceOpt, ModelOpt, TrustOpt, UnsafeOpt, WeightsOpt, _load

if TYPE_CHECKING:
    from ..faults import Fault


def parse_fault_spec(text: str, site: str) -> "Fault":
    """``"LAYER,INDEX,BIT"`` (INDEX like ``(0, 3, 1)`` or ``all``; BIT like 31 or ``3;7``) as a Fault."""
    from ..errors import FaultSpecError
    from ..faults import Fault, _parse_bits, parse_index

    where = f"--fault {text!r}"
    head, sep, tail = text.partition(",")
    mid, sep2, bits = tail.rpartition(",")
    if not sep or not sep2 or not head.strip():
        raise FaultSpecError(f'{where}: expected "LAYER,INDEX,BIT" such as "conv2d,(1, 1, 0, 3),30" or "dense_1,all,31"')
    if site not in ("weight", "activation"):
        raise FaultSpecError(f"--site {site!r}: expected weight or activation")
    return Fault(0, head.strip(), parse_index(mid, where=where), _parse_bits(bits, where=where), site)  # type: ignore[arg-type]


def _channel_axis(shape: tuple[int, ...], layout: str) -> int:
    return 0 if layout == "channels_first" else len(shape) - 1


def draw_activation_diffs(
    golden: dict[str, np.ndarray], faulty: dict[str, np.ndarray], *, layout: str, title: str, out: Path
) -> Path:
    """One panel per layer: |faulty - golden| heat maps for feature maps, golden vs faulty bars for vectors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(golden)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        g, f = golden[name].astype(np.float64), faulty[name].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(f - g)
        diff = np.where(np.isfinite(diff), diff, np.nan)
        changed = int(np.count_nonzero(golden[name] != faulty[name]))
        if g.ndim >= 2:
            heat = np.nanmax(diff, axis=_channel_axis(g.shape, layout)) if g.ndim == 3 else diff
            heat = heat.reshape(heat.shape[0], -1)
            im = ax.imshow(np.nan_to_num(heat, nan=np.nanmax(heat) if np.isfinite(np.nanmax(heat)) else 0.0), cmap="magma")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_xlabel("max |faulty - golden| over channels" if g.ndim == 3 else "|faulty - golden|")
        else:
            x = np.arange(g.size)
            ax.bar(x, g.ravel(), width=1.0, color="0.6", label="golden")
            fin = np.where(np.isfinite(f.ravel()), f.ravel(), np.nan)
            ax.bar(x, fin, width=0.5, color="tab:red", alpha=0.8, label="faulty")
            ax.legend(fontsize=7)
            ax.set_xlabel("element")
        ax.set_title(f"{name} {tuple(g.shape)}: {changed} changed", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@app.command("show-activations")
def show_activations(
    model: str = ModelOpt,
    data: str = typer.Option("digits", "--data", "-d", help="digits, mnist, or an .npz with arrays x and y."),
    fault: str = typer.Option(..., "--fault", help='"LAYER,INDEX,BIT", e.g. "conv2d,(1, 1, 0, 3),30" (Keras axis order for Keras models).'),
    site: str = typer.Option("weight", "--site", help="weight (the layer's parameters) or activation (its output)."),
    input_: int = typer.Option(0, "--input", "-k", help="Which input of the data split to show."),
    out: Path = typer.Option(Path("fault.png"), "-o", "--out", help="PNG file to write."),
    split: str = typer.Option("test", "--split", help="Bundled data split: test, train or all."),
    weights: Optional[Path] = WeightsOpt,
    trust_pickle: bool = TrustOpt,
    unsafe: bool = UnsafeOpt,
    device: str = DeviceOpt,
) -> None:
    """Draw golden vs faulty outputs of the faulted layer and every layer after it, for one input.

    Example: faultlab show-activations --model model.keras --data mnist --fault "conv2d,(1, 1, 0, 3),30" --input 0 -o fault.png
    """
    from ..datasets import load_dataset
    from ..errors import DataError

    f = parse_fault_spec(fault, site)
    check_output_file(out, "-o", (".png", ".pdf", ".svg"))
    _, target = _load(model, weights, trust_pickle, unsafe, device)
    ds = load_dataset(data, split=split)  # type: ignore[arg-type]
    if not 0 <= input_ < len(ds):
        raise DataError(f"--input {input_}: {ds.name} has {len(ds)} inputs (0..{len(ds) - 1})")
    x = target.prepare(ds.x[input_ : input_ + 1])
    if hasattr(target, "trace"):
        target.trace(x)
    target.check_fault(f, where="--fault")
    golden = {k: v.cpu().numpy()[0] for k, v in target.layer_outputs(x).items()}
    faulty = {k: v.cpu().numpy()[0] for k, v in target.layer_outputs(x, [(f, None)]).items()}
    names = list(golden)
    layer = target.site(f.layer, f.site).layer
    start = names.index(layer) if layer in names else 0
    keep = names[start:]
    path = draw_activation_diffs(
        {k: golden[k] for k in keep}, {k: faulty[k] for k in keep}, layout=target.image_layout,
        title=f"{f.describe()} on input {input_} of {ds.name}", out=out,
    )
    changed = [k for k in keep if not np.array_equal(golden[k], faulty[k])]
    console.print(f"{len(changed)} of {len(keep)} layers from {layer} on changed: {', '.join(changed) or 'none (the fault was masked)'}")
    g_out = target.forward(x)
    with target.inject([(f, None)]):
        f_out = target.forward(x)
    g_top, f_top = int(g_out.argmax(dim=1)[0]), int(f_out.argmax(dim=1)[0])
    console.print(f"top-1 class: golden {g_top}, faulty {f_top}")
    console.print(f"wrote {path}")
