"""The fast engine (``--engine fast``): golden-prefix reuse, many faults per pass, early exit.

The model is traced once with torch.fx. For each block of evaluation inputs the clean value of
every graph node is cached; a fault at node L then replays only L's downstream cone, with
(fault, input) pairs as the rows of one batched pass, reading everything else from the cache.

* Weight faults in Conv/Linear layers change one output channel. Instead of adding
  ``delta x input`` to the clean output (which differs from the real computation in the last
  ulp for almost every mantissa fault), the changed channel is *recomputed exactly*: the faulty
  kernels of up to ``C_out`` faults are stacked into one weight tensor of the layer's own shape,
  so one layer call gives every fault's channel with the real computation's rounding. Each layer
  is checked once (permuted clean kernels must reproduce the clean channels bit for bit), else
  its faults recompute the whole layer with the fault written in place.
* Other parameters (batch norm, biases of other layers) recompute their one node in place.
* A changed channel (a weight fault's, or an activation fault's in a non-spatial value) is
  carried on alone through the per-channel nodes after it -- ReLU, batch norm, pooling,
  flatten, residual adds -- until a node mixes channels (:mod:`.fast_block`).
* Activation faults are applied to the cached clean activation, per row; on a 4-D feature map the
  rows replay on small spatial windows around the faulted element while those stay small
  (:mod:`.fast_window`), then on whole maps.
* Rows that become bit-identical to the clean values at a node every later value depends on
  are finished as masked.

Keras models on the torch backend replay at layer granularity instead (:mod:`.fast_keras`): no
tracing, stacking, windows or blocks, the same cache, early exit and control rows.

Passes never run fewer than :data:`MIN_ROWS` rows (CPU kernels round differently for tiny
batches) and every pass carries pinned clean control rows that must reproduce the golden outputs
bit for bit; a pass whose controls disagree is redone by the exact engine, as is everything
torch.fx cannot trace, modules in training mode and parameters shared or used outside their layer.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..bits import BIT_MODELS, apply_fault_model, apply_masks, as_int_view, bit_mask, check_bits
from ..faults import Fault
from ..outcomes import FaultResult, aggregate, classify_pairs, pair_flags
from ..targets.base import Target
from ._base import Engine, EvalSet
from .allocator import tune_allocator
from .exact import ExactEngine
from .fast_graph import MIN_ROWS, TracedModel, UnsupportedModel, bucket, gather_rows, plain_forward, rows_equal
from .fast_block import Block, BlockReplay, clean_block, write_blocks
from .fast_keras import KerasGraph
from .fast_window import Window, WindowReplay, read_region

log = logging.getLogger("faultlab")

#: the default ``max_memory`` never goes below this (the fixed default before it was sized to the machine)
DEFAULT_MAX_MEMORY = 1 << 30
#: nor above this: at 8 GiB ResNet-20's weight faults ran slower than at 4 GiB and its activation faults only
#: about 8 % faster (one run, 2-core VM), while every worker would hold twice as much
AUTO_MAX_MEMORY_CAP = 4 << 30


def default_max_memory(workers: int = 1) -> int:
    """The fast engine's default memory budget: a sixth of physical memory shared by ``workers`` engines, within 1-4 GiB.

    Bigger budgets mean fewer, fuller passes (ResNet-20 ran 16-20 % more pairs per second at 4 GiB
    than at 1 GiB); a sixth leaves room for the model, the data and the workers' other memory.
    """
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return DEFAULT_MAX_MEMORY
    share = physical // (6 * max(1, workers))
    return int(min(AUTO_MAX_MEMORY_CAP, max(DEFAULT_MAX_MEMORY, share)))


def table_budget(max_memory: int, cache_bytes: int) -> int:
    """Bytes for copies of clean maps (window reads, see :class:`~.fast_window.MapTables`): an eighth of ``max_memory``,
    or what the clean cache leaves of its half, up to a quarter.

    The copies make region reads several times faster, but every byte they take is one the replay passes
    lose. ResNet-20's activation faults (one engine, runs interleaved) ran 7 % faster with a quarter than with
    an eighth at 4 GiB, where the cache used a third of its half, and 13 % slower at 1 GiB, where it used
    all of it and the passes needed the rest.
    """
    return max(max_memory // 8, min(max_memory // 4, max_memory // 2 - cache_bytes))


#: rows per Keras replay pass at most: Keras's torch convolutions copy every batch between NHWC and
#: NCHW, and on the test models passes beyond a few thousand rows ran slower, not faster
KERAS_MAX_ROWS = 8192
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class _CleanBlock:
    """The clean values of every node for inputs [start, end) of ``data``, the golden top-1 and the flags of a masked pair per input."""

    tm: Any
    data: EvalSet
    start: int
    end: int
    writes: tuple[int, ...]  # the model's parameter and buffer write counts when it was computed
    cache: dict
    golden_top: torch.Tensor
    masked_flags: torch.Tensor


@dataclass
class _Job:
    """How one fault runs: ``mode`` is 'act', 'stacked' (one exact channel) or 'node' (recompute its node)."""

    pos: int
    fault: Fault
    mode: str
    node: Any
    pname: str = ""


class FastEngine(Engine):
    """Fast campaigns with exact mode's outcomes (``--engine fast``).

    ``max_memory`` (bytes; default :func:`default_max_memory`) bounds the clean-activation cache and
    the replay batches; memory does not grow with the number of faults. ``window=False`` turns spatial-window replay off and
    ``blocks=False`` single-channel (block) replay (same outcomes, slower). On Linux with glibc the
    first run makes the process keep freed memory for reuse (:func:`.allocator.tune_allocator`, a
    process-wide setting; ``tune_allocator=False`` leaves the allocator alone). After a run, ``stats``
    counts how faults were handled (``stacked``, ``node``, ``act``, ``exact``, ``redone``,
    ``early_exit_rows``, ``windowed_passes``, ``block_passes``).
    """

    name = "fast"

    def __init__(
        self,
        *,
        batch_size: int = 512,
        k: int = 5,
        tolerance: float | None = None,
        max_memory: int | None = None,
        early_exit: bool = True,
        window: bool = True,
        blocks: bool = True,
        tune_allocator: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, k=k, tolerance=tolerance)
        if max_memory is None:
            max_memory = default_max_memory()
        if max_memory < 1:
            raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
        self.max_memory = int(max_memory)
        self.early_exit = early_exit
        self.window = window
        self.blocks = blocks
        self.tune_allocator = tune_allocator
        self._window_of: dict[int, WindowReplay] = {}
        self._block_of: dict[int, BlockReplay] = {}
        self._traced: dict[int, tuple[Any, TracedModel | None]] = {}
        self._stacked_ok: dict[tuple[int, str], bool] = {}
        self.stats: dict[str, int] = {}
        #: (fault, input) pairs whose class differs from exact mode's: always 0 here, since every
        #: value is computed with the real computation's rounding (kept for reports and tests)
        self.mismatches = 0
        #: the current block's clean cache; kept between runs when it is the whole evaluation set
        self._block: _CleanBlock | None = None

    # ----- setup -----
    def _exact(self) -> ExactEngine:
        return ExactEngine(batch_size=self.batch_size, k=self.k, tolerance=self.tolerance)

    def _trace(self, target: Target) -> TracedModel | KerasGraph | None:
        from ..targets.torch import TorchTarget

        model = getattr(target, "model", None)
        hit = self._traced.get(id(target))
        if hit is not None and hit[0] is model:
            return hit[1]
        if getattr(target, "framework", None) == "keras":
            graph: KerasGraph | None = None
            try:
                graph = KerasGraph(target)
            except UnsupportedModel as e:  # the tensorflow backend is expected to run exact: no warning for it
                (log.info if getattr(target, "backend", None) != "torch" else log.warning)("fast engine: %s; using the exact engine", e)
            self._traced[id(target)] = (model, graph)
            return graph
        if not isinstance(target, TorchTarget) or not isinstance(model, nn.Module):
            log.info("fast engine: %s targets are run by the exact engine", getattr(target, "framework", "?"))
            return None
        traced: TracedModel | None = None
        training = [n for n, m in model.named_modules() if m.training]
        if training:
            log.warning("fast engine: module %r is in training mode; using the exact engine", training[0] or type(model).__name__)
        else:
            try:
                traced = TracedModel(model)
            except UnsupportedModel as e:
                log.warning("fast engine: %s; using the exact engine", e)
        self._traced[id(target)] = (model, traced)
        return traced

    def _jobs(self, target: Target, tm: TracedModel, faults: Sequence[Fault]) -> tuple[list[_Job], list[Fault]]:
        """Each fault's job (how it replays), or the fault in the list for the exact engine; decided once per (layer, site)."""
        model = target.model  # type: ignore[attr-defined]
        owners: dict[int, int] = {}
        for _, m in model.named_modules():
            for _, p in m.named_parameters(recurse=False):
                owners[id(p)] = owners.get(id(p), 0) + 1
        jobs, slow = [], []
        kinds: dict[tuple[str, str], tuple[str, Any, str] | None] = {}
        for j, f in enumerate(faults):
            key = (f.layer, f.site)
            if key not in kinds:
                kinds[key] = self._job_kind(target, tm, f, owners)
            kind = kinds[key]
            # a fault on one input is compared by the exact engine in a pass of its own size (a weight fault: that
            # input alone), and a one-row matmul rounds apart from the same row in a batch: such a pair's outcome
            # can move between masked and non-critical (seen on fc1 of the demo CNN). As on Keras, these one-pair
            # faults stay exact; they cost one row of a forward pass there.
            if kind is None or f.input is not None:
                slow.append(f)  # the exact engine raises the proper error where there is one
                continue
            mode, node, pname = kind
            if mode == "stacked" and f.index is None:
                mode = "node"
            jobs.append(_Job(j, f, mode, node, pname))
        return jobs, slow

    @staticmethod
    def _job_kind(target: Target, tm: TracedModel, f: Fault, owners: dict[int, int]) -> tuple[str, Any, str] | None:
        """(mode, node, parameter name) for faults at ``f``'s layer and site, or None when they run exact."""
        try:
            site = target.site(f.layer, f.site)
        except Exception:
            return None
        nodes = tm.module_nodes.get(site.layer, [])
        if len(nodes) != 1 or nodes[0] not in tm.tensor_nodes:
            return None
        node = nodes[0]
        if f.site == "activation":
            return ("act", node, "")
        pname = "weight" if site.name == site.layer else site.name[len(site.layer) + 1 :]
        mod = tm.modules[site.layer]
        p = getattr(mod, pname, None)
        if not isinstance(p, torch.Tensor) or owners.get(id(p), 0) != 1 or id(p) in tm.attr_tensor_ids:
            return None
        stackable = (
            pname in ("weight", "bias")
            # the stacked kernels call the layer's function, not the module: no hooks, no subclass's own forward
            and any(plain_forward(mod, base) for base in _CONV + (nn.Linear,))
            and getattr(mod, "groups", 1) == 1
            and len(node.args) == 1
            and not node.kwargs
            and hasattr(node.args[0], "op")
        )
        return ("stacked" if stackable else "node", node, pname)

    # ----- run -----
    def run(self, target: Target, data: EvalSet, faults: Sequence[Fault]) -> list[FaultResult]:
        if not faults:
            return []
        if self.tune_allocator:
            tune_allocator()
        self.stats = {"stacked": 0, "node": 0, "act": 0, "exact": 0, "redone": 0, "early_exit_rows": 0, "windowed_passes": 0, "block_passes": 0}
        tm = self._trace(target)
        written = getattr(target, "written_params", None)
        if isinstance(tm, TracedModel) and written:
            # the graph's clean and node passes call the layer itself, which would write the parameter for good
            log.warning("fast engine: the model's forward writes parameter %s in place; using the exact engine", next(iter(written.values())))
            tm = None
        if tm is None:
            self.stats["exact"] = len(faults)
            return self._exact().run(target, data, faults)
        results: dict[int, FaultResult] = {}
        try:
            with torch.no_grad():
                if isinstance(tm, KerasGraph):
                    fast_results, slow = self._run_keras(target, tm, data, faults)
                else:
                    fast_results, slow = self._run_fast(target, tm, data, faults)
        except UnsupportedModel as e:
            self.release()  # the clean cache and its map copies
            log.warning("fast engine: %s; using the exact engine", e)
            self._traced[id(target)] = (target.model, None)  # type: ignore[attr-defined]
            fast_results, slow = [], list(faults)
        results.update({r.fault_id: r for r in fast_results})
        self.stats["exact"] = len(slow)
        if slow:
            results.update({r.fault_id: r for r in self._exact().run(target, data, slow)})
        return [results[f.id] for f in faults]

    def _run_fast(self, target: Target, tm: TracedModel, data: EvalSet, faults: Sequence[Fault]) -> tuple[list[FaultResult], list[Fault]]:
        n = data.n
        if not tm.checked:
            tm.clean(data.x[: min(n, MIN_ROWS)])
        jobs, slow = self._jobs(target, tm, faults)
        if not jobs:
            return [], slow
        cache_budget = self.max_memory // 2
        nb = max(1, min(self.batch_size, n, cache_budget // max(tm.cache_row_bytes(), 1)))
        if nb < MIN_ROWS:
            nb = min(MIN_ROWS, n, self.batch_size)
        if nb < min(self.batch_size, n):
            nb = max(16, nb // 16 * 16)  # blocks start on a multiple of 16 in their golden batch: rows keep their residues (see TracedModel.period)
        cache_bytes = nb * tm.cache_row_bytes()
        tables = self._windows(tm).tables
        tables.budget = table_budget(self.max_memory, cache_bytes) if self.window else 0
        free = self.max_memory - cache_bytes - tables.budget

        def rows_max(node: Any) -> int:
            """Rows per replay pass from ``node``: as many as its cone's working memory allows."""
            raw = free // tm.replay_row_bytes(node)
            step = MIN_ROWS if raw <= 1024 else 4 * MIN_ROWS
            return max(MIN_ROWS, raw // step * step) - 1  # plus one control row: a full bucket

        log.debug("fast engine: %d inputs per cached block", nb)
        # blocks never straddle the golden batches (kernels may depend on the batch size)
        blocks = [(s, min(s + nb, b + self.batch_size, n)) for b in range(0, n, self.batch_size) for s in range(b, min(b + self.batch_size, n), nb)]
        codes_all, flags_all, owners_all = [], [], []
        redo: set[int] = set()
        by_node: dict[Any, list[_Job]] = {}
        for job in jobs:
            by_node.setdefault((job.node, job.mode, job.pname), []).append(job)
        groups = sorted(by_node.items(), key=lambda kv: tm.order[kv[0][0]])
        for s, e in blocks:
            cache = self._clean_cache(target, tm, data, s, e)
            for (node, mode, pname), group in groups:
                pf, pi = self._pairs([j for j in group if j.pos not in redo], s, e)
                rm = rows_max(node)
                for c in range(0, len(pf), rm):
                    cf, ci = pf[c : c + rm], pi[c : c + rm]
                    ok = self._pass(target, tm, data, cache, s, node, mode, pname, faults, cf, ci, codes_all, flags_all, owners_all)
                    if not ok:
                        redo.update(int(v) for v in np.unique(cf))
                        log.info("fast engine: control rows disagreed at %s; %d faults go to the exact engine", node.name, len(np.unique(cf)))
            del cache
            if len(blocks) > 1:
                self.release()  # only a single block is worth keeping for the next run (with its map copies)
        for job in jobs:
            if job.pos not in redo:
                stacked = job.mode == "stacked" and self._stacked_ok.get((id(tm), job.node.name), False)
                self.stats["node" if job.mode == "stacked" and not stacked else job.mode] += 1
        self.stats["redone"] = len(redo)
        return self._results(jobs, redo, faults, slow, codes_all, flags_all, owners_all)

    def _results(
        self, jobs: list[_Job], redo: set[int], faults: Sequence[Fault], slow: list[Fault], codes_all: list, flags_all: list, owners_all: list,
    ) -> tuple[list[FaultResult], list[Fault]]:
        """Per-fault results of the jobs not redone; the redone faults join ``slow`` (for the exact engine)."""
        keep_jobs = [j for j in jobs if j.pos not in redo]
        slow.extend(faults[p] for p in sorted(redo))
        if not keep_jobs:
            return [], slow
        owners = torch.cat(owners_all)
        codes = torch.cat(codes_all)
        flags = torch.cat(flags_all)
        if redo:
            mask = ~torch.isin(owners, torch.as_tensor(sorted(redo), device=owners.device))
            owners, codes, flags = owners[mask], codes[mask], flags[mask]
        # renumber owners to positions in keep_jobs
        remap = torch.full((len(faults),), -1, dtype=torch.long, device=owners.device)
        remap[torch.as_tensor([j.pos for j in keep_jobs], device=owners.device)] = torch.arange(len(keep_jobs), device=owners.device)
        return aggregate([j.fault.id for j in keep_jobs], remap[owners], codes, flags, engine=self.name), slow

    def _run_keras(self, target: Target, kg: KerasGraph, data: EvalSet, faults: Sequence[Fault]) -> tuple[list[FaultResult], list[Fault]]:
        """Keras models on the torch backend: cone replay at layer granularity (see :mod:`.fast_keras`).

        A weight fault is written in place for one call of its layer on the block's clean inputs
        (then restored), an activation fault applied to the cached output; the layers downstream
        run once for all rows of a pass. Faults on a single input, layers whose own call does not
        reproduce its cached output, and passes whose control rows disagree go to the exact engine.
        """
        jobs, slow = [], []
        for j, f in enumerate(faults):
            try:
                site = target.site(f.layer, f.site)
            except Exception:
                slow.append(f)  # the exact engine raises the proper error
                continue
            node = kg.node_of.get(site.layer)
            # a fault on one input is compared by the exact engine with a golden pass of that input alone:
            # Keras's matmul on one row rounds apart from the same row in a batch, so it stays exact
            if node is None or len(kg.out_ids[node]) != 1 or f.input is not None:
                slow.append(f)
                continue
            jobs.append(_Job(j, f, "act" if f.site == "activation" else "node", node))
        if not jobs:
            return [], slow
        n = data.n
        if not kg.row_bytes:
            kg.clean(data.x[: min(n, MIN_ROWS)])
        row = max(kg.row_bytes, 1)
        nb = max(min(MIN_ROWS, n, self.batch_size), min(self.batch_size, n, (self.max_memory // 2) // row))
        if nb < min(self.batch_size, n):
            nb = nb // 16 * 16  # blocks start on a multiple of 16 in their golden batch: rows keep their residues (see KerasGraph.period)
        rows_max = max(MIN_ROWS, min(KERAS_MAX_ROWS, (self.max_memory - nb * row) // (3 * row)) // MIN_ROWS * MIN_ROWS) - 1
        small = min(rows_max, max(MIN_ROWS, nb) - 1)
        if kg.small_passes:  # learnt in an earlier run on this model (a campaign runs once per chunk of faults)
            rows_max = small
        blocks = [(s, min(s + nb, b + self.batch_size, n)) for b in range(0, n, self.batch_size) for s in range(b, min(b + self.batch_size, n), nb)]
        by_node: dict[Any, list[_Job]] = {}
        for job in jobs:
            by_node.setdefault((job.node, job.mode), []).append(job)
        groups = sorted(by_node.items(), key=lambda kv: kg.order[kv[0][0]])
        codes_all: list = []
        flags_all: list = []
        owners_all: list = []
        redo: set[int] = set()
        try:
            for s, e in blocks:
                cache = self._clean_cache(target, kg, data, s, e)  # type: ignore[arg-type]
                exact_nodes: dict[Any, bool] = {}
                for (node, mode), group in groups:
                    pf, pi = self._pairs([j for j in group if j.pos not in redo], s, e)
                    c = 0
                    while c < len(pf):
                        cf, ci = pf[c : c + rows_max], pi[c : c + rows_max]
                        if not self._pass_keras(target, kg, data, cache, s, node, mode, faults, cf, ci, exact_nodes, codes_all, flags_all, owners_all):
                            if rows_max > small:
                                # a matmul over many rows may block its sums otherwise than over a golden batch:
                                # passes no bigger than a block from here on, and this one again
                                rows_max = small
                                kg.small_passes = True
                                log.info("fast engine: Keras pass of %d rows at %s rounded apart; passes of %d rows from here", len(cf), node.operation.name, small)
                                continue
                            redo.update(int(v) for v in np.unique(cf))
                            log.info("fast engine: Keras layer %s not reproduced in a pass; %d faults go to the exact engine", node.operation.name, len(np.unique(cf)))
                        c += len(cf)
        finally:
            self.release()  # Keras variables are written through .data: no write counts to trust for a kept cache
        for job in jobs:
            if job.pos not in redo:
                self.stats[job.mode] += 1
        self.stats["redone"] = len(redo)
        return self._results(jobs, redo, faults, slow, codes_all, flags_all, owners_all)

    def _pass_keras(
        self, target: Target, kg: KerasGraph, data: EvalSet, cache: dict, s: int, node: Any, mode: str, faults: Sequence[Fault],
        cf: np.ndarray, ci: np.ndarray, exact_nodes: dict, codes_all: list, flags_all: list, owners_all: list,
    ) -> bool:
        r = len(cf)
        nb = int(cache[kg.input].shape[0])
        dev = data.golden.device
        if kg.period > 1:
            if nb < kg.period:
                return False  # too few inputs for a control row of every residue: the exact engine
            all_inp, pinned, pos = _aligned_rows(ci, nb, kg.period, dev)
        else:
            all_inp, pinned = _with_controls(ci, nb, dev)
            pos = None
        out_id = kg.out_ids[node][0]
        value = gather_rows(cache[out_id], all_inp)
        ci_t = torch.as_tensor(ci, device=dev)
        if mode == "act":
            # faults go onto the pairs as rows 0..r-1; aligned pairs are taken out and written back to their rows
            pairs = value if pos is None else gather_rows(cache[out_id], ci_t)
            self._apply_act_faults(pairs, faults, cf, lambda f: f.index)
            if pos is not None:
                value[pos] = pairs
        else:
            if node not in exact_nodes:  # the layer's own call on the cached inputs must give its cached output
                exact_nodes[node] = bool(rows_equal(kg.call(node, cache)[0], cache[out_id]).all())
            if not exact_nodes[node]:
                return False
            runs = np.flatnonzero(np.r_[True, cf[1:] != cf[:-1]])
            for a, b in zip(runs.tolist(), np.r_[runs[1:], r].tolist()):
                with target.inject([(faults[int(cf[a])], None)]):
                    v = kg.call(node, cache)[0]
                value[slice(a, b) if pos is None else pos[a:b]] = gather_rows(v, ci_t[a:b])
        res = kg.replay(node, value, all_inp, pinned, cache, early_exit=self.early_exit)
        return self._collect(data, s, nb, ci_t, all_inp, res, cf, codes_all, flags_all, owners_all, pos)

    def _clean_cache(self, target: Target, tm: TracedModel, data: EvalSet, s: int, e: int) -> dict:
        """Every node's clean value for inputs [s, e), checked against the golden outputs.

        When the whole evaluation set is one block, the cache is kept for the next
        :meth:`run` on the same data (a campaign calls it once per chunk of faults), and is rebuilt
        if any parameter or buffer of the model has been written since (torch counts writes).
        """
        writes = _write_counts(target.model)  # type: ignore[attr-defined]
        b = self._block
        if b is not None and b.tm is tm and b.data is data and (b.start, b.end) == (s, e) and b.writes == writes:
            return b.cache
        self.release()
        cache, out = tm.clean(data.x[s:e])
        golden = data.golden[s:e]
        if not torch.equal(as_int_view(out.contiguous()), as_int_view(golden.reshape(out.shape).contiguous())):
            raise UnsupportedModel("the traced graph does not reproduce the golden outputs bit for bit")
        # a finished (masked) pair's flags depend on its input only: computed once per block
        golden = golden.reshape(e - s, -1)
        top = golden.argmax(dim=1)
        zero = torch.zeros(e - s, dtype=torch.uint8, device=golden.device)
        masked = pair_flags(zero, golden, golden, None if data.labels is None else data.labels[s:e], k=self.k, golden_top=top)
        self._block = _CleanBlock(tm, data, s, e, writes, cache, top, masked)
        return cache

    def release(self) -> None:
        """Drop the clean cache kept between runs and the copies of its maps (also done when the data or model changes)."""
        self._block = None
        for w in self._window_of.values():
            w.tables.clear()

    @staticmethod
    def _pairs(group: list[_Job], s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(fault position, block-local input) pairs of the block [s, e), grouped by fault."""
        pos = np.fromiter((job.pos for job in group), dtype=np.int64, count=len(group))
        inp = np.fromiter((-1 if job.fault.input is None else job.fault.input for job in group), dtype=np.int64, count=len(group))
        one = inp >= 0
        keep = ~one | ((inp >= s) & (inp < e))  # a one-input fault joins the block that holds its input
        pos, inp, one = pos[keep], inp[keep], one[keep]
        counts = np.where(one, 1, e - s)
        pf = np.repeat(pos, counts)
        # every input of the block for whole-set faults, the one input for the others
        starts = np.cumsum(counts) - counts
        pi = np.arange(len(pf), dtype=np.int64) - np.repeat(starts, counts)
        pi[np.repeat(one, counts)] = inp[one] - s
        return pf, pi

    def _pass(
        self, target: Target, tm: TracedModel, data: EvalSet, cache: dict, s: int, node: Any, mode: str, pname: str,
        faults: Sequence[Fault], cf: np.ndarray, ci: np.ndarray, codes_all: list, flags_all: list, owners_all: list,
    ) -> bool:
        """One batched replay of pairs (cf, ci); returns False when the control rows disagree."""
        r = len(cf)
        nb = int(cache[tm.input].shape[0])
        dev = data.golden.device
        order = pos = None
        if tm.period > 1:
            # rows must keep their input's position modulo the period: the pass is built with the pairs first and
            # the control rows after them, as always, then its rows are put in the aligned order
            if nb < tm.period:
                return False  # too few inputs for a control row of every residue: the exact engine
            aligned, pinned_aligned, pos = _aligned_rows(ci, nb, tm.period, dev)
            gaps = torch.nonzero(pinned_aligned).squeeze(1)
            all_inp = torch.cat([torch.as_tensor(ci, device=dev), aligned.index_select(0, gaps)])
            pinned = torch.zeros(len(all_inp), dtype=torch.bool, device=dev)
            pinned[r:] = True
            order = torch.empty(len(all_inp), dtype=torch.long, device=dev)
            order[pos] = torch.arange(r, device=dev)
            order[gaps] = torch.arange(r, len(all_inp), device=dev)
        else:
            all_inp, pinned = _with_controls(ci, nb, dev)
        inp = all_inp[:r]
        res = None
        blk = None
        win = None
        value = None
        if mode == "act" and self.window and self._act_windowable(tm, cache, node, faults, cf):
            win = self._activation_window(tm, cache, node, faults, cf, all_inp)
        elif mode == "act" and self._act_blockable(cache, node, faults, cf):
            blk = self._activation_block(tm, cache, node, faults, cf, all_inp)
        elif mode == "act":
            value = self._activation_values(tm, cache, node, faults, cf, all_inp)
        elif mode == "stacked":
            blk = self._stacked_block(target, tm, cache, node, pname, faults, cf, all_inp)
            if blk is None:
                value = self._node_values(target, tm, cache, node, faults, cf, all_inp)
        else:
            value = self._node_values(target, tm, cache, node, faults, cf, all_inp)
        if order is not None:  # into the aligned order: pair i at row pos[i]
            all_inp, pinned = aligned, pinned_aligned
            win = None if win is None else win.take(order)
            blk = None if blk is None else blk.take(order)
            value = None if value is None else gather_rows(value, order)  # in its own memory layout
        if win is not None:
            res = self._windows(tm).replay(node, win, all_inp, pinned, pinned.clone(), cache, early_exit=self.early_exit)
            if res is None:
                return False
            self.stats["windowed_passes"] += 1
        if blk is not None and self.blocks:
            res = self._blocks(tm).replay(node, blk, all_inp, pinned, pinned.clone(), cache, early_exit=self.early_exit)
            if res is None:
                return False
            self.stats["block_passes"] += 1
        elif blk is not None:
            value = write_blocks(cache[node], blk, all_inp)
        if res is None:
            res = tm.replay(node, value, all_inp, pinned, cache, early_exit=self.early_exit)
        return self._collect(data, s, nb, inp, all_inp, res, cf, codes_all, flags_all, owners_all, pos)

    def _collect(
        self, data: EvalSet, s: int, nb: int, inp: torch.Tensor, all_inp: torch.Tensor, res: Any, cf: np.ndarray,
        codes_all: list, flags_all: list, owners_all: list, pos: torch.Tensor | None = None,
    ) -> bool:
        """Codes and flags of a replay's rows (finished rows are masked); False when its control rows disagree with the golden outputs.

        Pair ``i`` sits at row ``i`` of the pass, or at row ``pos[i]`` when given (see :func:`_aligned_rows`).
        """
        r = len(cf)
        dev = data.golden.device
        golden_blk = data.golden[s : s + nb]
        lab_blk = None if data.labels is None else data.labels[s : s + nb]
        codes = torch.zeros(r, dtype=torch.uint8, device=dev)
        flags = self._block.masked_flags.index_select(0, inp)  # type: ignore[union-attr]
        if pos is None:
            pair_of = torch.arange(len(all_inp), device=dev)
            pair_of[r:] = -1
        else:
            pair_of = torch.full((len(all_inp),), -1, dtype=torch.long, device=dev)
            pair_of[pos] = torch.arange(r, device=dev)
        if res.out is not None:
            out = res.out.reshape(res.out.shape[0], -1)
            ctrl = res.pinned
            if bool(ctrl.any()) and not bool(rows_equal(out[ctrl], golden_blk.index_select(0, all_inp[res.ids[ctrl]])).all()):
                return False
            row_pair = pair_of[res.ids]
            live = ~res.finished[res.ids] & (row_pair >= 0)
            rows = row_pair[live]
            if len(rows):
                f_live = out[live]
                li = inp.index_select(0, rows)
                g = golden_blk.index_select(0, li)
                c, fl = classify_pairs(
                    g, f_live, None if lab_blk is None else lab_blk.index_select(0, li), k=self.k, tolerance=self.tolerance,
                    golden_top=self._block.golden_top.index_select(0, li),  # type: ignore[union-attr]
                )
                codes[rows] = c
                flags[rows] = fl
        self.stats["early_exit_rows"] += int(res.finished[:r].sum() if pos is None else res.finished.index_select(0, pos).sum())
        flags_all.append(flags)
        codes_all.append(codes)
        owners_all.append(torch.as_tensor(cf, device=dev))
        return True

    # ----- faulty values at the faulted node -----
    def _activation_values(self, tm, cache, node, faults, cf, inp) -> torch.Tensor:
        clean = cache[node]
        value = gather_rows(clean, inp)
        self._apply_act_faults(value, faults, cf, lambda f: f.index)
        return value

    @staticmethod
    def _act_windowable(tm, cache, node, faults, cf) -> bool:
        """Single-element faults on a 4-D map whose cone allows early exit: replay on windows."""
        v = cache.get(node)
        if not (isinstance(v, torch.Tensor) and v.dim() == 4 and tm._plan(node)[3]):
            return False
        return all(faults[int(p)].index is not None and len(faults[int(p)].index) == 3 for p in np.unique(cf))

    def _windows(self, tm: TracedModel) -> WindowReplay:
        w = self._window_of.get(id(tm))
        if w is None or w.tm is not tm:
            w = self._window_of[id(tm)] = WindowReplay(tm)
        return w

    def _activation_window(self, tm, cache, node, faults, cf, inp) -> Window:
        """Each row's faulty element as a 1x1 window (all channels) at the fault's position."""
        r = len(cf)
        uniq, which = np.unique(cf, return_inverse=True)  # one look-up per fault, not per row
        pos = np.array([faults[int(p)].index[1:] for p in uniq], dtype=np.int64).reshape(len(uniq), 2)[which.reshape(-1)]
        pos = np.concatenate([pos, np.repeat(pos[:1], len(inp) - r, axis=0)])  # control rows sit where the first fault sits
        oy, ox = pos[:, 0].copy(), pos[:, 1].copy()
        crop = read_region(cache[node], None, inp, oy, ox, 1, 1, tables=self._windows(tm).tables)
        self._apply_act_faults(crop, faults, cf, lambda f: (f.index[0], 0, 0))
        return Window(crop, oy, ox)

    @staticmethod
    def _apply_act_faults(value: torch.Tensor, faults, cf: np.ndarray, index_of) -> None:
        """Apply row i's fault ``faults[cf[i]]`` to ``value[i]`` in place, at ``index_of(fault)`` within the row."""
        flat = value.view(value.shape[0], -1) if value.is_contiguous() else None
        width = value.element_size() * 8
        shape = tuple(value.shape[1:])
        int_dtype = as_int_view(value[:0]).dtype
        # pairs are grouped by fault, so each fault's rows are one contiguous run
        runs = np.flatnonzero(np.r_[True, cf[1:] != cf[:-1]])
        ends = np.r_[runs[1:], len(cf)]
        groups: dict[str, tuple[list, list, list]] = {}
        for a, b in zip(runs, ends):
            f = faults[int(cf[a])]
            idx = None if f.index is None else tuple(index_of(f))
            if f.model in BIT_MODELS and idx is not None:
                g = groups.setdefault(f.model, ([], [], []))
                g[0].append(np.arange(a, b))
                g[1].append(np.full(b - a, int(np.ravel_multi_index(idx, shape))))
                g[2].append(np.full(b - a, bit_mask(f.bits, width)))
            elif idx is None:
                value[a:b] = apply_fault_model(value[a:b], f.model, f.bits, value=f.value)
            else:
                key = (slice(a, b),) + idx
                value[key] = apply_fault_model(value[key], f.model, f.bits, value=f.value)
        for model, (rows, elems, masks) in groups.items():
            r = torch.as_tensor(np.concatenate(rows), device=value.device)
            el = torch.as_tensor(np.concatenate(elems), device=value.device)
            m = torch.as_tensor(np.concatenate(masks), dtype=int_dtype, device=value.device)
            if flat is not None:
                flat[r, el] = apply_masks(flat[r, el], m, model)  # type: ignore[arg-type]
            else:  # a channels-last value: index element by element
                idx = (r,) + tuple(torch.as_tensor(np.stack(np.unravel_index(el.cpu().numpy(), shape))[d], device=value.device) for d in range(len(shape)))
                value[idx] = apply_masks(value[idx], m, model)  # type: ignore[arg-type]

    def _stacked_ok_for(self, tm: TracedModel, cache, node, mod) -> bool:
        key = (id(tm), node.name)
        if key not in self._stacked_ok:
            w, b = mod.weight, mod.bias
            gen = torch.Generator().manual_seed(0)
            perm = torch.randint(0, w.shape[0], (w.shape[0],), generator=gen).to(w.device)
            with torch.no_grad():
                got = self._layer(mod, cache[node.args[0]], w.index_select(0, perm), None if b is None else b.index_select(0, perm))
            want = cache[node].index_select(1, perm)
            ok = got.shape == want.shape and bool(torch.equal(as_int_view(got.contiguous()), as_int_view(want.contiguous())))
            if not ok:
                log.info("fast engine: %s does not reproduce channels in another order; its faults recompute the layer", node.name)
            self._stacked_ok[key] = ok
        return self._stacked_ok[key]

    @staticmethod
    def _layer(mod: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if isinstance(mod, nn.Linear):
            return torch.nn.functional.linear(x, w, b)
        return mod._conv_forward(x, w, b)  # type: ignore[operator]

    def _stacked_block(self, target, tm, cache, node, pname, faults, cf, inp) -> Block | None:
        """Each row's exact faulty output channel (row r of ``cf`` has fault ``faults[cf[r]]``; control rows get channel 0, clean)."""
        mod = tm.modules[str(node.target)]
        x = cache[node.args[0]]
        clean = cache[node]
        if isinstance(mod, nn.Linear) and x.dim() != 2:
            return None
        if not self._stacked_ok_for(tm, cache, node, mod):
            return None
        w, b = mod.weight, mod.bias
        c_out = w.shape[0]
        g = clean[0].numel() // int(clean.shape[1])
        r = len(cf)
        dev = clean.device
        # a fault's rows are one run (see _pairs), so run k is fault k: group k // c_out, slot k % c_out, and
        # each group's rows are one slice of the pass
        starts = np.flatnonzero(np.r_[True, cf[1:] != cf[:-1]])
        lens = np.diff(np.r_[starts, r])
        fs = [faults[int(p)] for p in cf[starts]]
        chans = np.array([f.index[0] for f in fs], dtype=np.int64)
        ch = torch.zeros(len(inp), dtype=torch.long, device=dev)
        ch[:r] = torch.from_numpy(np.repeat(chans, lens)).to(dev)
        val = torch.empty((len(inp), g), dtype=clean.dtype, device=dev)
        val[r:] = clean_block(clean, inp[r:], ch[r:], g)  # the control rows: clean channel 0
        # every group's kernels at once: slot i of group gi holds fault gi * c_out + i's output channel, the rest
        # repeat channel 0 (each group has the layer's own shape); the faults are written in with one call
        n_groups = -(-len(fs) // c_out)
        perm = np.zeros(n_groups * c_out, dtype=np.int64)
        perm[: len(fs)] = chans
        perm_t = torch.from_numpy(perm).to(dev)
        sw_all = w.detach().index_select(0, perm_t)
        sb_all = None if b is None else b.detach().index_select(0, perm_t)
        slots = torch.arange(len(fs), device=dev)
        if pname == "weight":
            at = (slots,) + tuple(torch.from_numpy(np.array([f.index[d] for f in fs], dtype=np.int64)).to(dev) for d in range(1, w.dim()))
            sw_all[at] = _faulty_elements(sw_all[at], fs)
        else:
            sb_all[slots] = _faulty_elements(sb_all[slots], fs)  # type: ignore[index]
        slot = torch.from_numpy(np.repeat(np.arange(len(fs), dtype=np.int64) % c_out, lens)).to(dev)
        bounds = np.r_[starts[::c_out], r].tolist()
        for gi in range(n_groups):
            part = slice(gi * c_out, (gi + 1) * c_out)
            # fresh tensors, as in the layer check (not views into the stacked kernels)
            out = self._layer(mod, x, sw_all[part].clone(), None if sb_all is None else sb_all[part].clone())
            a, z = bounds[gi], bounds[gi + 1]
            clean_block(out, inp[a:z], slot[a:z], g, out=val[a:z])
        return Block(val, ch)

    def _activation_block(self, tm, cache, node, faults, cf, inp) -> Block:
        """Each row's faulty channel (its fault's ``index[0]``) with the fault applied; control rows get channel 0, clean."""
        clean = cache[node]
        shape = tuple(clean.shape[2:])
        g = clean[0].numel() // int(clean.shape[1])
        starts = np.flatnonzero(np.r_[True, cf[1:] != cf[:-1]])  # a fault's rows are one run (see _pairs)
        chans = np.array([faults[int(p)].index[0] for p in cf[starts]], dtype=np.int64)
        ch = torch.zeros(len(inp), dtype=torch.long, device=clean.device)
        ch[: len(cf)] = torch.from_numpy(np.repeat(chans, np.diff(np.r_[starts, len(cf)]))).to(clean.device)
        val = clean_block(clean, inp, ch, g)
        self._apply_act_faults(val, faults, cf, lambda f: (int(np.ravel_multi_index(f.index[1:], shape)) if shape else 0,))
        return Block(val, ch)

    @staticmethod
    def _act_blockable(cache, node, faults, cf) -> bool:
        """Single-element faults on an (N, C, ...) or (N, F) value: replay on each row's channel."""
        v = cache.get(node)
        if not isinstance(v, torch.Tensor) or v.dim() < 2:
            return False
        return all(faults[int(p)].index is not None and len(faults[int(p)].index) == v.dim() - 1 for p in np.unique(cf))

    def _blocks(self, tm: TracedModel) -> BlockReplay:
        b = self._block_of.get(id(tm))
        if b is None or b.tm is not tm:
            b = self._block_of[id(tm)] = BlockReplay(tm)
        return b

    def _node_values(self, target, tm, cache, node, faults, cf, inp) -> torch.Tensor:
        value = gather_rows(cache[node], inp)
        runs = np.flatnonzero(np.r_[True, cf[1:] != cf[:-1]])
        ends = np.r_[runs[1:], len(cf)]
        for a, b in zip(runs, ends):
            f = faults[int(cf[a])]
            with target.inject([(f, None)]), torch.no_grad():
                v = tm.call(node, cache.__getitem__)
            value[a:b] = gather_rows(v, inp[a:b])
        return value


def _with_controls(ci: np.ndarray, nb: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A pass's rows: the pairs' block-local inputs ``ci``, then pinned clean control rows up to a :func:`bucket` size.

    The control rows must come out bit-identical to the golden outputs; returns (inputs, pinned mask).
    """
    r = len(ci)
    n_ctrl = bucket(r + 1) - r
    all_inp = torch.cat([torch.as_tensor(ci, device=dev), torch.arange(n_ctrl, device=dev) % nb])
    pinned = torch.zeros(len(all_inp), dtype=torch.bool, device=dev)
    pinned[r:] = True
    return all_inp, pinned


def _aligned_rows(ci: np.ndarray, nb: int, period: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A pass's rows when kernels round a row by its position modulo ``period``: pair ``i`` (block-local input
    ``ci[i]``) goes to the first free row ``p`` with ``p % period == ci[i] % period``, as in the clean block; every
    other row, up to a :func:`bucket` size, is a pinned clean control row of an input of that row's residue.

    Returns (inputs, pinned mask, positions of the pairs); needs ``nb >= period``.
    """
    r = len(ci)
    ci = np.asarray(ci, dtype=np.int64)
    gap = np.empty(r, dtype=np.int64)
    if r:
        gap[0] = ci[0] % period
        gap[1:] = (ci[1:] - ci[:-1] - 1) % period
    pos = np.cumsum(gap + 1) - 1
    n = bucket(int(pos[-1]) + 2 if r else 1)
    p = np.arange(n, dtype=np.int64)
    inputs = p % period + period * ((p // period) % (nb // period))  # controls: residue-matched, spread over the block
    inputs[pos] = ci
    pinned = np.ones(n, dtype=bool)
    pinned[pos] = False
    return torch.from_numpy(inputs).to(dev), torch.from_numpy(pinned).to(dev), torch.from_numpy(pos).to(dev)


def _write_counts(model: nn.Module) -> tuple[int, ...]:
    """torch's in-place write counter of every parameter and buffer: any write since changes the tuple."""
    return tuple(t._version for t in model.parameters()) + tuple(b._version for b in model.buffers())


def _faulty_elements(values: torch.Tensor, faults: Sequence[Fault]) -> torch.Tensor:
    """``values[i]`` with fault ``faults[i]``'s model applied, bit models vectorised per model."""
    out = values.clone()
    width = values.element_size() * 8
    by_model: dict[str, tuple[list[int], list[int]]] = {}
    mask_of: dict[tuple[int, ...], int] = {}  # each distinct bit set checked and turned into a mask once
    for i, f in enumerate(faults):
        if f.model in BIT_MODELS:
            m = mask_of.get(f.bits)
            if m is None:
                check_bits(f.bits, values.dtype)
                m = mask_of[f.bits] = bit_mask(f.bits, width)
            rows, masks = by_model.setdefault(f.model, ([], []))
            rows.append(i)
            masks.append(m)
        else:
            out[i : i + 1] = apply_fault_model(values[i : i + 1], f.model, f.bits, value=f.value)
    for model, (rows, masks) in by_model.items():
        sel = torch.as_tensor(rows, device=values.device)
        m = torch.as_tensor(masks, dtype=as_int_view(values[:0]).dtype, device=values.device)
        out[sel] = apply_masks(values.index_select(0, sel), m, model)  # type: ignore[arg-type]
    return out


__all__ = ["FastEngine", "DEFAULT_MAX_MEMORY", "default_max_memory", "table_budget"]
