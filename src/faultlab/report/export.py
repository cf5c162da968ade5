"""The numbers a report exports: rate tables with intervals, and per-(fault, input) outcomes.

Two kinds of rate, both with Wilson score intervals:

* **over faults** -- the fraction of faults with the event on *any* input (e.g. a fault is SDC-1
  if at least one input's top-1 changed). Faults are the sampled units of a campaign, so this
  is the statistically sound rate for a sampled fault list; when the faults were drawn without
  replacement from a known population (every (element, bit) of a site) the interval carries
  the finite-population correction (FPC).
* **over (fault, input) pairs** -- the fraction of all evaluated pairs with the event. Pairs that
  share a fault are correlated, so its Wilson interval (which treats them as independent) is
  too narrow: read it as descriptive.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..faults import Site

#: Events with a rate in report tables: key in the results frame, and the label people read.
EVENTS: dict[str, str] = {"sdc1": "SDC-1", "sdc5": "SDC-5", "due": "DUE"}

#: Outcome names by code (``faultlab.outcomes.OUTCOME_NAMES``, repeated so importing reports needs no torch);
#: a fault's outcome over all its inputs is its worst (highest) per-input code.
OUTCOME_NAMES: tuple[str, ...] = ("masked", "non_critical", "sdc1", "sdc5", "due")

ALL_LAYERS = "(all layers)"

SiteMap = Mapping[tuple[str, str], Site]
"""Sites keyed by ``(kind, name)``, where ``name`` is what a fault's ``Layer`` column says."""

def _fields(dtype: str) -> dict[str, tuple[int, ...]]:
    from ..planning import bit_fields

    try:
        return bit_fields(dtype)
    except Exception:  # unknown dtype: read it as float32, as tf_injector's bit numbers assume
        return bit_fields("float32")


def bit_field(bit: int, dtype: str = "float32") -> str:
    """``sign``, ``exponent`` or ``mantissa`` for a float bit; ``sign`` or ``magnitude`` for an integer bit."""
    for name, positions in _fields(dtype).items():
        if bit in positions:
            return name
    return "?"


def field_width(field: str, dtype: str = "float32") -> int:
    """How many bits of ``dtype`` belong to ``field``."""
    return len(_fields(dtype).get(field, ()))


def prepare_results(results: pd.DataFrame) -> pd.DataFrame:
    """The store's results frame plus ``bit`` (first bit, -1 for value faults), ``n_bits``,
    ``any_<event>`` (the fault had the event on some input) and ``worst`` (its worst outcome)."""
    df = results.copy()
    bits = [[int(b) for b in s.split(";") if b] if isinstance(s, str) else [] for s in df["bits"]]
    df["bit"] = [b[0] if b else -1 for b in bits]
    df["n_bits"] = [len(b) for b in bits]
    for e in EVENTS:
        df[f"any_{e}"] = df[e].to_numpy() > 0
    worst = np.zeros(len(df), dtype=np.int64)
    worst[df["non_critical"].to_numpy() > 0] = 1
    worst[df["sdc1"].to_numpy() > 0] = 2
    worst[df["sdc5"].to_numpy() > 0] = 3
    worst[df["due"].to_numpy() > 0] = 4
    df["worst"] = [OUTCOME_NAMES[w] for w in worst]
    return df


@dataclass(frozen=True)
class Population:
    """The (element, bit) population a group of faults was drawn from, per layer, or why unknown.

    ``cells`` maps each cell of the group -- ``(site kind, layer)``, or ``(site kind, layer,
    field)`` when the plan was stratified by bit field (``keys`` names the columns) -- to its
    number of (element, bit) sites; ``size`` is their sum. ``None`` (then no FPC, no weighting)
    with a ``note`` saying why.
    """

    cells: dict | None
    note: str = ""
    keys: tuple[str, ...] = ("site", "layer")

    @property
    def size(self) -> int | None:
        return None if self.cells is None else int(sum(self.cells.values()))


def _fpc_eligible(g: pd.DataFrame, sites: SiteMap | None) -> str:
    """Empty when a group's faults look like a without-replacement draw of single-bit faults; else why not."""
    if sites is None:
        return "site shapes unknown"
    missing = sorted({f"{k}:{n}" for k, n in zip(g["site"], g["layer"]) if (k, n) not in sites})
    if missing:
        return f"no site {missing[0]} in the model"
    if (g["n_bits"] != 1).any() or g["model"].nunique() > 1 or not g["model"].isin(("flip", "stuck0", "stuck1")).all():
        return "not all single-bit faults of one model"
    if g["input"].notna().any() or (g["idx"] == "all").any():
        return "per-input or whole-tensor faults"
    if g.duplicated(["site", "layer", "idx", "bit"]).any():
        return "the list repeats a fault (drawn with replacement)"
    return ""


def population(
    g: pd.DataFrame, sites: SiteMap | None, *, bits: Iterable[int] | None = None, field: str | None = None, by_field: bool = False
) -> Population:
    """The population a group of faults was sampled from: every (element, bit) of its sites.

    ``bits`` restricts to those bit positions, ``field`` to a sign/exponent/mantissa field;
    ``by_field`` splits each layer into its field cells (``g`` needs a ``field`` column).
    """
    why = _fpc_eligible(g, sites)
    if why:
        return Population(None, why)
    assert sites is not None
    cells: dict = {}
    if by_field:
        for key in dict.fromkeys(zip(g["site"], g["layer"], g["field"])):
            s = sites[key[:2]]
            cells[key] = s.numel * field_width(key[2], s.dtype)
        counts = g.groupby(["site", "layer", "field"], sort=False).size()
        if any(counts[k] > n for k, n in cells.items()):
            return Population(None, "more faults than (element, bit) sites")
        return Population(cells, "", ("site", "layer", "field"))
    for key in dict.fromkeys(zip(g["site"], g["layer"])):
        s = sites[key]
        if field is not None:
            width = field_width(field, s.dtype)
        elif bits is not None:
            width = sum(1 for b in bits if 0 <= b < s.bit_width)
        else:
            width = s.bit_width
        cells[key] = s.numel * width
    counts = g.groupby(["site", "layer"], sort=False).size()
    if any(counts[k] > n for k, n in cells.items()):
        return Population(None, "more faults than (element, bit) sites")
    return Population(cells, "")


def _fault_interval(g: pd.DataFrame, flag: str, confidence: float, pop: Population) -> tuple[float, float, float, float]:
    """``(rate, low, high, effective n)`` of the fraction of faults with ``flag`` set.

    One layer, or layers sampled in proportion to their populations: the pooled fraction with
    the Wilson interval (FPC when the population is known). Layers sampled unequally (e.g. a
    per-layer plan): the population-weighted (stratified) rate ``p = sum W_h p_h``, with a Wilson
    interval and no FPC on an effective sample size: the smaller of Kish's ``(sum N_h)^2 / sum(N_h^2 / n_h)``
    and the design-based ``p (1 - p) / V``, ``V = sum W_h^2 p_h (1 - p_h) / (n_h - 1)``. Kish's alone
    uses the pooled ``p (1 - p)`` and is too narrow when a heavily weighted, thinly sampled layer has a
    rate near 0.5 beside layers near 0 (89 % coverage for a nominal 95 % in such a case); the design-based
    one alone is too narrow when small layers happen to show no events. The fourth value is Kish's.
    """
    from ..stats import wilson_interval

    k, n = int(g[flag].sum()), len(g)
    if n == 0:
        return float("nan"), 0.0, 1.0, 0.0
    if pop.cells is None or len(pop.cells) == 1:
        lo, hi = wilson_interval(k, n, confidence, pop.size)
        return k / n, lo, hi, float(n)
    by = g.groupby(list(pop.keys), sort=False)[flag].agg(["sum", "size"])
    big_n = np.array([pop.cells[key] for key in by.index], dtype=float)
    n_h = by["size"].to_numpy(dtype=float)
    frac = n_h / big_n
    if np.allclose(frac, frac[0], rtol=1e-9, atol=0.0):
        lo, hi = wilson_interval(k, n, confidence, pop.size)
        return k / n, lo, hi, float(n)
    w = big_n / big_n.sum()
    p_h = by["sum"].to_numpy(dtype=float) / n_h
    rate = float(np.sum(w * p_h))
    n_kish = float(big_n.sum() ** 2 / np.sum(big_n**2 / n_h))
    var = float(np.sum(w**2 * p_h * (1.0 - p_h) / np.maximum(n_h - 1.0, 1.0)))
    n_use = min(n_kish, rate * (1.0 - rate) / var) if var > 0 else n_kish
    lo, hi = wilson_interval(rate * n_use, n_use, confidence)
    return rate, lo, hi, n_kish


def _rates(g: pd.DataFrame, confidence: float, pop: Population) -> dict:
    from ..stats import pair_rate_interval

    row: dict = {"faults": len(g), "pairs": int(g["n"].sum()), "population": pop.size, "fpc": pop.size is not None, "fpc_note": pop.note}
    for e in EVENTS:
        rate, lo, hi, n_eff = _fault_interval(g, f"any_{e}", confidence, pop)
        row.update({f"{e}_faults": int(g[f"any_{e}"].sum()), f"{e}_fault_rate": rate, f"{e}_fault_lo": lo, f"{e}_fault_hi": hi})
        k_p, n_p = int(g[e].sum()), int(g["n"].sum())
        lo, hi = pair_rate_interval(k_p, n_p, float(np.sum(g["n"].to_numpy(dtype=float) ** 2)), confidence)  # faults are the units
        row.update({f"{e}_pairs": k_p, f"{e}_pair_rate": k_p / n_p if n_p else float("nan"), f"{e}_pair_lo": lo, f"{e}_pair_hi": hi})
    row["n_eff"] = n_eff
    row["weighted"] = bool(abs(n_eff - len(g)) > 1e-9)
    if row["weighted"]:
        row["fpc"], row["fpc_note"] = False, "population-weighted over cells sampled unequally"
    row["margin"] = (row["sdc1_fault_hi"] - row["sdc1_fault_lo"]) / 2.0
    return row


_OFF = Population(None, "FPC turned off")


def rate_table(
    results: pd.DataFrame, *, confidence: float = 0.95, sites: SiteMap | None = None, fpc: bool = True, by_field: bool = False
) -> pd.DataFrame:
    """Per (site kind, layer), then one ``(all layers)`` row per kind: SDC-1/SDC-5/DUE rates
    over faults and over pairs, each with its Wilson interval, and the achieved margin.

    ``by_field``: the faults were drawn per sign/exponent/mantissa stratum (``faultlab plan
    --by bit-field``), so each layer's rate is weighted over its field cells.

    Columns: ``site, layer, faults, pairs, population, fpc, fpc_note``, then per event ``e``:
    ``e_faults, e_fault_rate, e_fault_lo, e_fault_hi, e_pairs, e_pair_rate, e_pair_lo, e_pair_hi``;
    ``n_eff``, ``weighted`` (population-weighted over layers, see :func:`_fault_interval`) and
    ``margin``, the half-width of the fault-level SDC-1 interval.
    """
    df = prepare_results(results)
    if by_field:
        df["field"] = [bit_field(b, _site_dtype(k, n, sites)) for b, k, n in zip(df["bit"], df["site"], df["layer"])]
    rows = []
    for kind, gk in df.groupby("site", sort=False):
        for layer, g in gk.groupby("layer", sort=False):
            rows.append({"site": kind, "layer": layer, **_rates(g, confidence, population(g, sites, by_field=by_field) if fpc else _OFF)})
        rows.append({"site": kind, "layer": ALL_LAYERS, **_rates(gk, confidence, population(gk, sites, by_field=by_field) if fpc else _OFF)})
    return pd.DataFrame(rows)


def bit_table(results: pd.DataFrame, *, confidence: float = 0.95, sites: SiteMap | None = None, fpc: bool = True) -> pd.DataFrame:
    """Per (site kind, bit position) over single-bit faults: rates as in :func:`rate_table`, plus ``field``."""
    df = prepare_results(results)
    df = df[df["n_bits"] == 1]
    rows = []
    for (kind, bit), g in df.groupby(["site", "bit"], sort=True):
        pop = population(g, sites, bits=[int(bit)]) if fpc else _OFF
        dtype = _dtype_of(g, sites)
        rows.append({"site": kind, "bit": int(bit), "field": bit_field(int(bit), dtype), **_rates(g, confidence, pop)})
    return pd.DataFrame(rows)


def field_table(results: pd.DataFrame, *, confidence: float = 0.95, sites: SiteMap | None = None, fpc: bool = True) -> pd.DataFrame:
    """Per (site kind, sign/exponent/mantissa field) over single-bit faults, as :func:`rate_table`."""
    df = prepare_results(results)
    df = df[df["n_bits"] == 1].copy()
    if df.empty:
        return pd.DataFrame()
    dtypes = [_site_dtype(k, n, sites) for k, n in zip(df["site"], df["layer"])]
    df["field"] = [bit_field(b, d) for b, d in zip(df["bit"], dtypes)]
    order = {"sign": 0, "exponent": 1, "mantissa": 2, "magnitude": 3}
    rows = []
    for (kind, fld), g in sorted(df.groupby(["site", "field"]), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
        pop = population(g, sites, field=fld) if fpc else _OFF
        rows.append({"site": kind, "field": fld, **_rates(g, confidence, pop)})
    return pd.DataFrame(rows)


def _site_dtype(kind: str, name: str, sites: SiteMap | None) -> str:
    if sites is not None and (kind, name) in sites:
        return sites[(kind, name)].dtype
    return "float32"


def _dtype_of(g: pd.DataFrame, sites: SiteMap | None) -> str:
    dts = {_site_dtype(k, n, sites) for k, n in zip(g["site"], g["layer"])}
    return dts.pop() if len(dts) == 1 else "float32"


def layer_bit_matrix(results: pd.DataFrame, event: str = "sdc1") -> pd.DataFrame:
    """Fraction of single-bit faults with ``event`` per (site kind, layer) row and bit column (NaN: no fault there)."""
    df = prepare_results(results)
    df = df[df["n_bits"] == 1]
    if df.empty:
        return pd.DataFrame()
    layers = list(dict.fromkeys(zip(df["site"], df["layer"])))
    m = df.groupby(["site", "layer", "bit"])[f"any_{event}"].mean().unstack("bit")
    m = m.reindex(pd.MultiIndex.from_tuples(layers, names=["site", "layer"]))
    return m.reindex(columns=range(int(df["bit"].max()) + 1))


def outcome_breakdown(results: pd.DataFrame) -> pd.DataFrame:
    """Per site kind: (fault, input) pairs by outcome, and faults by their worst outcome over inputs.

    Columns ``site, unit ('pairs'|'faults'), total`` and one count per outcome name; pairs'
    ``sdc1`` counts top-1 changes that kept the golden class in the top-k (SDC1 codes only).
    """
    df = prepare_results(results)
    rows = []
    for kind, g in df.groupby("site", sort=False):
        pairs = {
            "masked": int(g["masked"].sum()), "non_critical": int(g["non_critical"].sum()),
            "sdc1": int((g["sdc1"] - g["sdc5"]).sum()), "sdc5": int(g["sdc5"].sum()), "due": int(g["due"].sum()),
        }
        rows.append({"site": kind, "unit": "pairs", "total": int(g["n"].sum()), **pairs})
        worst = g["worst"].value_counts()
        rows.append({"site": kind, "unit": "faults", "total": len(g), **{o: int(worst.get(o, 0)) for o in OUTCOME_NAMES}})
    return pd.DataFrame(rows)


def critical_faults(results: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """The ``top`` faults that changed the top-1 class on most inputs (ties: more SDC-5, more DUE)."""
    df = prepare_results(results)
    df = df.assign(sdc1_fraction=df["sdc1"] / df["n"].where(df["n"] > 0, 1))
    df = df.sort_values(["sdc1", "sdc5", "due", "fault_id"], ascending=[False, False, False, True], kind="stable")
    df = df[(df["sdc1"] > 0) | (df["due"] > 0)]
    return df.head(top)[["fault_id", "site", "layer", "idx", "bits", "model", "n", "sdc1", "sdc5", "due", "sdc1_fraction"]].reset_index(drop=True)


def per_input_frame(results: pd.DataFrame, n_inputs: int | None = None) -> pd.DataFrame:
    """One row per (fault, input): ``fault_id, layer, site, bit, input, outcome`` (outcome by name).

    ``results`` is ``CampaignStore.results_frame(with_codes=True)``. A whole-dataset fault's codes
    are in input order (inputs 0..n-1); a per-input fault has one code, for its ``input``.
    """
    if "codes" not in results.columns:
        raise ValueError("per_input_frame needs results_frame(with_codes=True)")
    df = prepare_results(results)
    lengths = np.array([len(c) for c in df["codes"]], dtype=np.int64)
    codes = np.concatenate([np.asarray(c, dtype=np.uint8) for c in df["codes"]]) if len(df) else np.zeros(0, np.uint8)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    inputs = np.arange(int(lengths.sum()), dtype=np.int64) - starts
    fixed = df["input"].to_numpy(dtype=float)
    fixed_rep = np.repeat(fixed, lengths)
    inputs = np.where(np.isnan(fixed_rep), inputs, np.nan_to_num(fixed_rep)).astype(np.int64)
    return pd.DataFrame(
        {
            "fault_id": np.repeat(df["fault_id"].to_numpy(dtype=np.int64), lengths),
            "layer": np.repeat(df["layer"].to_numpy(dtype=object), lengths),
            "site": np.repeat(df["site"].to_numpy(dtype=object), lengths),
            "bit": np.repeat(df["bit"].to_numpy(dtype=np.int64), lengths),
            "input": inputs,
            "outcome": pd.Categorical.from_codes(codes.astype(np.int64), categories=list(OUTCOME_NAMES)),
        }
    )


def write_per_input_parquet(results: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`per_input_frame` to Parquet (pyarrow) at ``path``; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame = per_input_frame(results)
    tmp = p.with_name(p.name + ".tmp")
    frame.to_parquet(tmp, engine="pyarrow", index=False)
    tmp.replace(p)
    return p


__all__ = [
    "EVENTS", "ALL_LAYERS", "Population", "bit_field", "field_width", "prepare_results", "population",
    "rate_table", "bit_table", "field_table", "layer_bit_matrix", "outcome_breakdown", "critical_faults",
    "per_input_frame", "write_per_input_parquet",
]
