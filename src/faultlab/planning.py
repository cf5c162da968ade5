"""Campaign planners: which faults to inject, drawn from (site, element, bit) populations, seeded.

A *stratum* is a set of (site, element, bit) triples, e.g. every bit of every weight of layer
``conv1``, or the exponent bits of the whole model. Planners turn a model's :class:`Site`
list into a :class:`Plan`: one :class:`Stratum` row (name, population ``N``, faults ``n``)
per stratum and the :class:`FaultList` itself.

- :class:`RandomPlanner`: ``n`` uniform (element, bit) faults (``faultlab faults generate``).
- :class:`ExhaustivePlanner`: every (element, bit) of the chosen sites.
- :class:`StatisticalPlanner`: Leveugle et al.'s sample size per stratum (``faultlab plan``).
- :class:`AdaptiveAllocator`: round-by-round fault counts from interim results (``--adaptive``).

Sampling is without replacement within a stratum and never materialises a population of
billions: see :func:`sample_distinct`. Within a stratum the faults are listed in draw order,
so every prefix of a stratum's faults is itself a simple random sample without replacement;
adaptive campaigns can run prefixes and stop early.
"""
from __future__ import annotations

import bisect
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from .bits import BIT_MODELS
from .errors import FaultlabError
from .faults import SITE_KINDS, Fault, FaultList, Site
from .stats import leveugle_sample_size, wilson_interval

log = logging.getLogger("faultlab")

StratifyBy = Literal["model", "layer", "layer-bit", "bit-field"]
STRATIFY_BY: tuple[str, ...] = ("model", "layer", "layer-bit", "bit-field")

#: Planners refuse to build fault lists longer than this unless given a larger ``max_faults``.
DEFAULT_MAX_FAULTS = 1_000_000

#: IEEE-754 layouts (sign, exponent, mantissa bits) of the float dtypes faultlab injects into.
FLOAT_LAYOUTS: dict[str, tuple[int, int, int]] = {
    "float64": (1, 11, 52),
    "float32": (1, 8, 23),
    "float16": (1, 5, 10),
    "bfloat16": (1, 8, 7),
}
BIT_FIELD_NAMES: tuple[str, ...] = ("sign", "exponent", "mantissa", "magnitude")

__all__ = [
    "StratifyBy",
    "STRATIFY_BY",
    "DEFAULT_MAX_FAULTS",
    "FLOAT_LAYOUTS",
    "bit_fields",
    "sample_distinct",
    "Population",
    "stratify",
    "Stratum",
    "Plan",
    "Planner",
    "RandomPlanner",
    "ExhaustivePlanner",
    "StatisticalPlanner",
    "StratumProgress",
    "AdaptiveAllocator",
    "PopulationSampler",
]


# ----------------------------------------------------------------------------- bit fields
def bit_fields(dtype: str, width: int | None = None) -> dict[str, tuple[int, ...]]:
    """Bit positions (0 = LSB) of each field of ``dtype``.

    IEEE floats: ``sign`` / ``exponent`` / ``mantissa`` (float32: 31 / 30..23 / 22..0).
    Signed integers: ``sign`` (the top bit) and ``magnitude`` (the rest); unsigned integers
    are all ``magnitude``.
    """
    if dtype in FLOAT_LAYOUTS:
        s, e, m = FLOAT_LAYOUTS[dtype]
        return {
            "sign": (s + e + m - 1,),
            "exponent": tuple(range(m, m + e)),
            "mantissa": tuple(range(m)),
        }
    if width is None:
        width = Site("?", "weight", "?", "?", (), dtype).bit_width
    if dtype.startswith("uint"):
        return {"magnitude": tuple(range(width))}
    if dtype.startswith("int"):
        return {"sign": (width - 1,), "magnitude": tuple(range(width - 1))}
    raise FaultlabError(f"dtype {dtype}: no known bit layout; expected one of {', '.join(FLOAT_LAYOUTS)} or an integer dtype")


# ----------------------------------------------------------------------------- sampling
def sample_distinct(
    rng: np.random.Generator,
    population: int,
    n: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """``n`` distinct indices in ``[0, population)``, none in ``exclude``, uniformly, in random order.

    Sparse case (few draws from a large population): draw uniform integers and keep each
    value's first occurrence that is not excluded; the sequence of first new values of an
    i.i.d. uniform stream is a uniformly random ordered sample without replacement, and it
    costs O(n log n) memory and time whatever the population (billions are fine). Dense case
    (the request is a large share of what is left): a permutation of what is left.
    """
    population = int(population)
    n = int(n)
    excl = np.zeros(0, dtype=np.int64) if exclude is None else np.unique(np.asarray(exclude, dtype=np.int64))
    left = population - excl.size
    if n < 0 or n > left:
        raise FaultlabError(f"cannot draw {n} distinct faults from a population of {left} not yet drawn")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if left <= max(4 * n, 1 << 16):
        pool = np.arange(population, dtype=np.int64)
        if excl.size:
            pool = np.setdiff1d(pool, excl, assume_unique=True)
        return rng.permutation(pool)[:n]
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.size < n:
        need = n - chosen.size
        draw = rng.integers(0, population, size=need + need // 8 + 16, dtype=np.int64)
        if excl.size:
            draw = draw[~np.isin(draw, excl)]
        allv = np.concatenate([chosen, draw])
        _, first = np.unique(allv, return_index=True)
        chosen = allv[np.sort(first)][:n]  # earlier picks come first, so they all stay
    return chosen


# ----------------------------------------------------------------------------- populations
@dataclass(frozen=True)
class Population:
    """A stratum's (site, element, bit) triples: every element of each block's site times its bits.

    Triples have a fixed order (block, then element, then bit) so a flat index in
    ``[0, size)`` names one triple without listing them.
    """

    name: str
    blocks: tuple[tuple[Site, tuple[int, ...]], ...]

    @cached_property
    def _offsets(self) -> list[int]:
        out = [0]
        for site, bits in self.blocks:
            out.append(out[-1] + site.numel * len(bits))
        return out

    @property
    def size(self) -> int:
        return self._offsets[-1]

    def faults(self, flat: Iterable[int], *, first_id: int = 0, model: str = "flip") -> list[Fault]:
        """The faults at flat indices ``flat`` (in that order), with ids from ``first_id``."""
        idx = np.asarray(list(flat) if not isinstance(flat, np.ndarray) else flat, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise FaultlabError(f"stratum {self.name}: fault index out of range 0..{self.size - 1}")
        offsets = np.asarray(self._offsets, dtype=np.int64)
        block_of = np.searchsorted(offsets, idx, side="right") - 1
        out: list[Fault | None] = [None] * idx.size
        for b in np.unique(block_of):
            site, bits = self.blocks[int(b)]
            rows = np.flatnonzero(block_of == b)
            local = idx[rows] - offsets[b]
            elem, bit_pos = np.divmod(local, len(bits))
            coords = np.unravel_index(elem, site.shape) if site.shape else ()
            bit_arr = np.asarray(bits, dtype=np.int64)[bit_pos]
            for j, r in enumerate(rows):
                index = tuple(int(c[j]) for c in coords)
                out[r] = Fault(first_id + int(r), site.name, index, (int(bit_arr[j]),), site.kind, model)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]


def _bits_of(site: Site, bits: Sequence[int | str] | None) -> tuple[int, ...]:
    """The bit positions of ``site`` to fault: all, or the given positions / field names."""
    width = site.bit_width
    if bits is None:
        return tuple(range(width))
    out: set[int] = set()
    fields = bit_fields(site.dtype, width)
    for b in bits:
        if isinstance(b, str) and not b.strip().lstrip("-").isdigit():
            name = b.strip().lower()
            if name not in BIT_FIELD_NAMES:
                raise FaultlabError(f"bits: {b!r} is not a bit position or field; expected integers or {', '.join(BIT_FIELD_NAMES)}")
            out.update(fields.get(name, ()))
            continue
        if isinstance(b, bool):
            raise FaultlabError(f"bits: {b!r} is not a bit position (0 = LSB)")
        pos = int(b)
        if not 0 <= pos < width:
            asked = [int(v) for v in bits if not isinstance(v, bool) and (not isinstance(v, str) or v.strip().lstrip("-").isdigit())]
            worst = max((v for v in asked if not 0 <= v < width), key=abs)  # the furthest out, as the user wrote it
            raise FaultlabError(
                f"bits: bit {worst} is beyond site {site.name}'s {width}-bit {site.dtype}; expected 0..{width - 1}"
            )
        out.add(pos)
    return tuple(sorted(out))


def _select_sites(sites: Sequence[Site], site_kind: str, layers: Sequence[str] | None) -> list[Site]:
    chosen = [s for s in sites if s.kind == site_kind]
    if layers is not None:
        wanted = list(dict.fromkeys(layers))
        names = {s.name for s in chosen} | {s.layer for s in chosen}
        unknown = [w for w in wanted if w not in names]
        if unknown:
            avail = ", ".join(dict.fromkeys(s.name for s in chosen)) or "none"
            raise FaultlabError(f"layers: no {site_kind} site named {unknown[0]!r}; available: {avail}")
        chosen = [s for s in chosen if s.name in wanted or s.layer in wanted]
    if not chosen:
        raise FaultlabError(f"no {site_kind} sites to plan faults for; check --site (weight|activation) and --layers")
    return chosen


def stratify(
    sites: Sequence[Site],
    by: StratifyBy = "model",
    *,
    bits: Sequence[int | str] | None = None,
) -> list[Population]:
    """Split the (site, element, bit) triples of ``sites`` into strata.

    ``model``: one stratum; ``layer``: one per site; ``layer-bit``: one per site and bit
    (named ``site:bitB``); ``bit-field``: ``sign`` / ``exponent`` / ``mantissa`` (and
    ``magnitude`` for integer sites) across all sites, using each site's dtype layout.
    Empty strata are left out.
    """
    if by not in STRATIFY_BY:
        raise FaultlabError(f"by {by!r}: expected one of {', '.join(STRATIFY_BY)}")
    per_site = [(s, _bits_of(s, bits)) for s in sites]
    per_site = [(s, b) for s, b in per_site if b and s.numel > 0]
    if by == "model":
        pops = [Population("model", tuple(per_site))]
    elif by == "layer":
        pops = [Population(s.name, ((s, b),)) for s, b in per_site]
    elif by == "layer-bit":
        pops = [Population(f"{s.name}:bit{bit}", ((s, (bit,)),)) for s, b in per_site for bit in sorted(b, reverse=True)]
    else:
        groups: dict[str, list[tuple[Site, tuple[int, ...]]]] = {name: [] for name in BIT_FIELD_NAMES}
        for s, b in per_site:
            for name, positions in bit_fields(s.dtype, s.bit_width).items():
                keep = tuple(p for p in positions if p in b)
                if keep:
                    groups[name].append((s, tuple(sorted(keep))))
        pops = [Population(name, tuple(blocks)) for name, blocks in groups.items() if blocks]
    return [p for p in pops if p.size > 0]


# ----------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Stratum:
    """One row of a plan: a stratum's name, its population ``N`` of (element, bit) faults and ``n`` planned."""

    name: str
    N: int
    n: int


@dataclass(frozen=True)
class Plan:
    """Strata rows and the fault list; faults are grouped by stratum in row order, ids ``0..total-1``."""

    strata: tuple[Stratum, ...]
    faults: FaultList
    _starts: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        starts, acc = [], 0
        for s in self.strata:
            starts.append(acc)
            acc += s.n
        object.__setattr__(self, "_starts", tuple(starts))

    @property
    def total(self) -> int:
        return sum(s.n for s in self.strata)

    def stratum_of(self, fault_id: int) -> Stratum:
        """The stratum that fault ``fault_id`` (as planned, ids ``0..total-1``) was drawn from."""
        if not 0 <= fault_id < self.total:
            raise FaultlabError(f"fault id {fault_id} is not in this plan (ids 0..{self.total - 1})")
        return self.strata[bisect.bisect_right(self._starts, fault_id) - 1]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict ``{"strata": [{"name", "N", "n"}], "total": ...}`` (``json.dumps`` it)."""
        return {"strata": [{"name": s.name, "N": s.N, "n": s.n} for s in self.strata], "total": self.total}


def _check_model(model: str) -> str:
    if model not in BIT_MODELS:
        raise FaultlabError(f"model {model!r}: planners draw (element, bit) faults; expected one of {', '.join(BIT_MODELS)}")
    return model


def _check_site_kind(site_kind: str) -> str:
    if site_kind not in SITE_KINDS:
        raise FaultlabError(f"site_kind {site_kind!r}: expected one of {', '.join(SITE_KINDS)}")
    return site_kind


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FaultlabError(f"seed {seed!r} must be a whole number >= 0")
    return int(seed)


def _check_total(total: int, max_faults: int, hint: str) -> None:
    if total > max_faults:
        raise FaultlabError(f"the plan would inject {total:,} faults, more than max_faults={max_faults:,}; {hint}")


def _build(pops: Sequence[Population], counts: Sequence[int], rng: np.random.Generator, model: str) -> Plan:
    faults: list[Fault] = []
    rows: list[Stratum] = []
    for pop, n in zip(pops, counts):
        flat = sample_distinct(rng, pop.size, n) if n < pop.size else np.arange(pop.size, dtype=np.int64)
        faults.extend(pop.faults(flat, first_id=len(faults), model=model))
        rows.append(Stratum(pop.name, pop.size, int(n)))
    return Plan(tuple(rows), FaultList(tuple(faults), "plan"))


class Planner(ABC):
    """A strategy that decides which faults a campaign injects; a new strategy is one new class."""

    @abstractmethod
    def plan(self, sites: Sequence[Site], *, seed: int) -> Plan:
        """The plan for ``sites`` (sites of the other kind are ignored); the same seed gives the same list."""


class RandomPlanner(Planner):
    """``n`` faults uniform over the (element, bit) pairs of the chosen sites, without replacement.

    If ``n`` exceeds the population the draw is with replacement (some faults repeat; a
    warning is logged) -- use :class:`ExhaustivePlanner` to hit every fault once.
    """

    def __init__(
        self,
        *,
        n: int,
        site_kind: str = "weight",
        layers: Sequence[str] | None = None,
        bits: Sequence[int | str] | None = None,
        model: str = "flip",
        max_faults: int = DEFAULT_MAX_FAULTS,
    ) -> None:
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise FaultlabError(f"n {n!r} must be a whole number of faults >= 0")
        self.n = int(n)
        self.site_kind = _check_site_kind(site_kind)
        self.layers = None if layers is None else list(layers)
        self.bits = None if bits is None else list(bits)
        self.model = _check_model(model)
        self.max_faults = max_faults

    def plan(self, sites: Sequence[Site], *, seed: int) -> Plan:
        rng = np.random.default_rng(_check_seed(seed))
        chosen = _select_sites(sites, self.site_kind, self.layers)
        pops = stratify(chosen, "model", bits=self.bits)
        if not pops:
            raise FaultlabError("no (element, bit) faults to draw: the chosen sites are empty or no bits are selected")
        _check_total(self.n, self.max_faults, "ask for fewer faults")
        pop = pops[0]
        if self.n <= pop.size:
            return _build(pops, [self.n], rng, self.model)
        log.warning("RandomPlanner: n=%d exceeds the %d possible faults; drawing with replacement, so some repeat", self.n, pop.size)
        flat = rng.integers(0, pop.size, size=self.n, dtype=np.int64)
        faults = pop.faults(flat, model=self.model)
        return Plan((Stratum(pop.name, pop.size, self.n),), FaultList(tuple(faults), "plan"))


class ExhaustivePlanner(Planner):
    """Every (element, bit) of the chosen sites, grouped into strata (``by``, default one per layer)."""

    def __init__(
        self,
        *,
        site_kind: str = "weight",
        layers: Sequence[str] | None = None,
        bits: Sequence[int | str] | None = None,
        model: str = "flip",
        by: StratifyBy = "layer",
        max_faults: int = DEFAULT_MAX_FAULTS,
    ) -> None:
        self.site_kind = _check_site_kind(site_kind)
        self.layers = None if layers is None else list(layers)
        self.bits = None if bits is None else list(bits)
        self.model = _check_model(model)
        if by not in STRATIFY_BY:
            raise FaultlabError(f"by {by!r}: expected one of {', '.join(STRATIFY_BY)}")
        self.by = by
        self.max_faults = max_faults

    def plan(self, sites: Sequence[Site], *, seed: int) -> Plan:
        rng = np.random.default_rng(_check_seed(seed))  # unused: an exhaustive list has nothing random
        pops = stratify(_select_sites(sites, self.site_kind, self.layers), self.by, bits=self.bits)
        total = sum(p.size for p in pops)
        _check_total(total, self.max_faults, "restrict --layers/--bits, or plan statistically with a margin (faultlab plan --margin 0.01)")
        return _build(pops, [p.size for p in pops], rng, self.model)


class StatisticalPlanner(Planner):
    """Leveugle et al.'s sample size per stratum, drawn without replacement within each stratum.

    ``n = N / (1 + e²(N−1) / (t² p(1−p)))`` for each stratum's population ``N``; ``t``
    defaults to the exact normal quantile for ``confidence`` (pass ``t=2.58`` to reproduce
    the paper's 99 % figures).
    """

    def __init__(
        self,
        *,
        margin: float,
        confidence: float = 0.95,
        p: float = 0.5,
        t: float | None = None,
        by: StratifyBy = "model",
        site_kind: str = "weight",
        layers: Sequence[str] | None = None,
        bits: Sequence[int | str] | None = None,
        model: str = "flip",
        max_faults: int = DEFAULT_MAX_FAULTS,
    ) -> None:
        leveugle_sample_size(1000, margin, confidence, p, t)  # validates margin, confidence, p, t
        if by not in STRATIFY_BY:
            raise FaultlabError(f"by {by!r}: expected one of {', '.join(STRATIFY_BY)}")
        self.margin = float(margin)
        self.confidence = float(confidence)
        self.p = float(p)
        self.t = None if t is None else float(t)
        self.by = by
        self.site_kind = _check_site_kind(site_kind)
        self.layers = None if layers is None else list(layers)
        self.bits = None if bits is None else list(bits)
        self.model = _check_model(model)
        self.max_faults = max_faults

    def sample_size(self, population: int) -> int:
        """Faults this planner draws from a stratum of ``population`` faults."""
        return leveugle_sample_size(population, self.margin, self.confidence, self.p, self.t)

    def populations(self, sites: Sequence[Site]) -> list[Population]:
        """The strata this planner would draw from (for adaptive campaigns and reports)."""
        return stratify(_select_sites(sites, self.site_kind, self.layers), self.by, bits=self.bits)

    def plan(self, sites: Sequence[Site], *, seed: int) -> Plan:
        rng = np.random.default_rng(_check_seed(seed))
        pops = self.populations(sites)
        counts = [self.sample_size(p.size) for p in pops]
        _check_total(sum(counts), self.max_faults, "ask for a wider margin, a lower confidence, or fewer strata (--by)")
        return _build(pops, counts, rng, self.model)


# ----------------------------------------------------------------------------- adaptive
class PopulationSampler:
    """Draws further faults from one stratum, never repeating one drawn before (for adaptive rounds)."""

    def __init__(self, *, population: Population, seed: int, model: str = "flip") -> None:
        self.population = population
        self.model = _check_model(model)
        self._rng = np.random.default_rng(_check_seed(seed))
        self._drawn = np.zeros(0, dtype=np.int64)

    @property
    def drawn(self) -> int:
        return int(self._drawn.size)

    def draw(self, n: int, *, first_id: int) -> list[Fault]:
        """``n`` new faults (fewer if the stratum runs out), ids from ``first_id``."""
        n = min(int(n), self.population.size - self.drawn)
        flat = sample_distinct(self._rng, self.population.size, n, exclude=self._drawn)
        self._drawn = np.concatenate([self._drawn, flat])
        return self.population.faults(flat, first_id=first_id, model=self.model)


@dataclass(frozen=True)
class StratumProgress:
    """Where one stratum of an adaptive campaign stands after a round."""

    name: str
    N: int
    n: int
    k: int
    low: float
    high: float
    achieved_margin: float
    done: bool
    next_n: int


class AdaptiveAllocator:
    """Proposes each round's fault counts per stratum from interim results; pure logic, no engine.

    A stratum is done once its Wilson interval with the finite-population correction has a
    half-width <= ``margin`` and it has run at least Leveugle's size for the conservative rate
    below (or every fault in it has run). Otherwise the next round brings it
    to Leveugle's size for a conservative rate estimate: the rate in the current interval
    closest to 0.5 (the upper end for low rates, clipped to <= 0.5; the lower end for rates
    near 1), so an unlucky early estimate cannot shrink the plan too much (the stop is always
    decided by the achieved interval, never by the estimate). The first round runs
    ``pilot_fraction`` of the fixed p = 0.5 plan.
    """

    def __init__(
        self,
        *,
        populations: Mapping[str, int],
        margin: float,
        confidence: float = 0.95,
        t: float | None = None,
        pilot_fraction: float = 0.1,
        min_round: int = 10,
    ) -> None:
        leveugle_sample_size(1000, margin, confidence, 0.5, t)  # validates margin, confidence, t
        if not 0.0 < pilot_fraction <= 1.0:
            raise FaultlabError(f"pilot_fraction {pilot_fraction!r} must be in (0, 1]")
        if int(min_round) < 1:
            raise FaultlabError(f"min_round {min_round!r} must be >= 1")
        for name, size in populations.items():
            if int(size) != size or size < 0:
                raise FaultlabError(f"stratum {name}: population {size!r} must be a whole number >= 0")
        self.populations = {str(k): int(v) for k, v in populations.items()}
        self.margin = float(margin)
        self.confidence = float(confidence)
        self.t = None if t is None else float(t)
        self.pilot_fraction = float(pilot_fraction)
        self.min_round = int(min_round)

    def fixed_plan(self) -> dict[str, int]:
        """Faults per stratum of the fixed (p = 0.5) plan, the budget adaptive runs are compared with."""
        return {name: leveugle_sample_size(size, self.margin, self.confidence, 0.5, self.t) for name, size in self.populations.items()}

    def _counts(self, results: Mapping[str, tuple[int, int]], name: str) -> tuple[int, int]:
        k, n = results.get(name, (0, 0))
        big_n = self.populations[name]
        if not 0 <= k <= n <= big_n:
            raise FaultlabError(f"stratum {name}: results k={k}, n={n} must satisfy 0 <= k <= n <= N={big_n}")
        return int(k), int(n)

    def assess(self, results: Mapping[str, tuple[int, int]]) -> list[StratumProgress]:
        """Each stratum's interval, whether it is done, and how many more faults to run next round.

        ``results`` maps stratum name to ``(k, n)``: ``k`` events (e.g. SDC) in the ``n`` faults
        run so far (strata not in it have run none).
        """
        unknown = sorted(set(results) - set(self.populations))
        if unknown:
            raise FaultlabError(f"results name stratum {unknown[0]!r}, which is not planned; expected one of {', '.join(self.populations)}")
        fixed = self.fixed_plan()
        out: list[StratumProgress] = []
        for name, big_n in self.populations.items():
            k, n = self._counts(results, name)
            low, high = wilson_interval(k, n, self.confidence, big_n)
            half = (high - low) / 2.0
            need = 0
            if 0 < n < big_n:
                # The rate in the current interval closest to 0.5 maximises p(1-p): conservative.
                p_cons = min(max(min(max(0.5, low), high), 1e-12), 1.0 - 1e-12)
                need = leveugle_sample_size(big_n, self.margin, self.confidence, p_cons, self.t)
            # Stopping on the half-width alone stops exactly when the estimate is luckily far from
            # 0.5 (most often at the small pilot), and those stops miss the true rate more often than
            # 1 - confidence allows (exact coverage 92.7 % at p = 0.09, margin 0.05). A stratum must
            # also have run Leveugle's n for the conservative rate, so no early look stops on luck.
            done = n >= big_n or (n > 0 and half <= self.margin and n >= need)
            if done:
                nxt = 0
            elif n == 0:
                nxt = min(big_n, max(self.min_round, math.ceil(self.pilot_fraction * fixed[name])))
            else:
                nxt = min(big_n - n, max(need - n, self.min_round))
            out.append(StratumProgress(name, big_n, n, k, low, high, half, done, nxt))
        return out

    def propose(self, results: Mapping[str, tuple[int, int]]) -> dict[str, int]:
        """More faults to run per stratum in the next round (0 for strata that are done)."""
        return {s.name: s.next_n for s in self.assess(results)}

    def finished(self, results: Mapping[str, tuple[int, int]]) -> bool:
        """True once every stratum is done."""
        return all(s.done for s in self.assess(results))

    def faults_saved_vs_fixed(self, results: Mapping[str, tuple[int, int]]) -> int:
        """Faults the fixed p = 0.5 plan would run minus those run so far (negative: adaptive ran more)."""
        fixed = self.fixed_plan()
        return sum(fixed.values()) - sum(self._counts(results, name)[1] for name in self.populations)
