"""The fast engine's path for Keras 3 models on the torch backend: golden-prefix reuse at layer granularity.

Keras layers are not torch.fx-traceable, but a Functional model (and a built Sequential, which
holds one) is a graph of layer nodes. :class:`KerasGraph` walks that graph the way Keras does
(each node's arguments filled in from computed tensors, ``training=False``), caches every
tensor's clean value for a block of inputs, and replays only the layers downstream of a faulted
one, with (fault, input) pairs as the rows of one batch. Rows whose changed values all equal the
clean ones are finished early (masked). The engine's pinned clean control rows ride along and
must reproduce the golden outputs bit for bit, as on the torch path.
"""
from __future__ import annotations

from typing import Any

import torch

from .fast_graph import ReplayResult, UnsupportedModel, finish_rows, gather_rows, row_period, rows_equal


class KerasGraph:
    """A Keras model's layer graph, ready for clean caching and cone replay; raises :class:`UnsupportedModel` otherwise."""

    def __init__(self, target: Any) -> None:
        if getattr(target, "backend", None) != "torch":
            raise UnsupportedModel(f"Keras on the {getattr(target, 'backend', '?')} backend")
        from keras import tree

        self.tree = tree
        self.target = target
        model = target.model
        fn = getattr(model, "_functional", None) if hasattr(model, "_functional") else model  # a Sequential holds a Functional
        if fn is None or not hasattr(fn, "_nodes_by_depth") or not getattr(fn, "inputs", None):
            raise UnsupportedModel(f"{type(model).__name__} is not a Functional or built Sequential Keras model")
        if len(fn.inputs) != 1 or len(fn.outputs) != 1:
            raise UnsupportedModel(f"the Keras model has {len(fn.inputs)} inputs and {len(fn.outputs)} outputs; the fast engine needs one of each")
        # Half-precision layers (float16/bfloat16 policies, mixed or not): CPU kernels pick their algorithm by the
        # number of rows, and on a bfloat16 Dense a faulty row near overflow came out NaN in a 48-row batch and finite
        # in a 64-row one, while the clean rows stayed bit-identical -- the control rows cannot see such a difference.
        for layer in model._flatten_layers(include_self=False, recursive=True):
            dt = str(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32"))
            if dt in ("float16", "bfloat16"):
                raise UnsupportedModel(f"Keras layer {layer.name} computes in {dt}, whose kernels can round a faulty row apart by batch size")
        self.nodes = [n for d in sorted(fn._nodes_by_depth, reverse=True) for n in fn._nodes_by_depth[d] if n.operation is not None and not n.is_input]
        # Padding masks (Embedding(mask_zero=True), Masking) into recurrent layers: a masked GRU computed one input's
        # row apart by batch size (24 vs 96 rows) while every other row stayed bit-identical, so the control rows
        # (the block's first inputs) missed it and a masked pair read non-critical
        masked = next((n for n in self.nodes if n.arguments.kwargs.get("mask") is not None), None)
        if masked is not None:
            raise UnsupportedModel(f"Keras layer {getattr(masked.operation, 'name', '?')} takes a padding mask, and masked layers can round single rows apart by batch size")
        ops = [id(n.operation) for n in self.nodes]
        if len(set(ops)) != len(ops):
            raise UnsupportedModel("a Keras layer is called more than once (shared layers)")
        self.input = id(fn.inputs[0])
        self.output = id(fn.outputs[0])
        self.node_of = {getattr(n.operation, "name", ""): n for n in self.nodes}
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.in_ids = {n: [id(t) for t in n.input_tensors] for n in self.nodes}
        self.out_ids = {n: [id(t) for t in n.outputs] for n in self.nodes}
        self._plans: dict[Any, tuple] = {}
        self.row_bytes = 0
        #: set once a big pass rounded apart from the golden batches: later passes are no bigger than a block
        self.small_passes = False
        #: block sizes whose clean rows every layer reproduced in another order (see :meth:`_check_row_order`)
        self._order_checked: set[int] = set()
        #: replays keep every row's position modulo this (1: rows may go anywhere; see :meth:`_check_row_order`)
        self.period = 1

    # ----- running nodes -----
    def call(self, n: Any, values: dict[int, Any]) -> list[Any]:
        """Node ``n`` on the tensors ``values`` holds for its inputs (by symbolic tensor id), as Keras's own graph walk calls it."""
        args, kwargs = n.arguments.fill_in(values)
        if "training" in getattr(n.operation, "_call_context_args", ()):
            kwargs["training"] = False
        return self.tree.flatten(n.operation(*args, **kwargs))

    def clean(self, x: torch.Tensor) -> tuple[dict[int, Any], torch.Tensor]:
        """Every tensor's clean value for the block ``x`` (by symbolic tensor id), and the block's (N, C) outputs."""
        values: dict[int, Any] = {self.input: x}
        with torch.no_grad():
            for n in self.nodes:
                for t, y in zip(self.out_ids[n], self.call(n, values)):
                    values[t] = y
        nb = int(x.shape[0])
        for t, v in values.items():
            if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != nb:
                raise UnsupportedModel(f"a Keras layer output is not batched by input (shape {tuple(getattr(v, 'shape', ()))})")
        self.row_bytes = sum(v.numel() * v.element_size() for v in values.values()) // max(nb, 1)
        self._check_row_order(values, nb)
        out = values[self.output]
        return values, out.reshape(nb, -1)

    def _check_row_order(self, values: dict[int, Any], nb: int) -> None:
        """Every layer on the block's clean inputs in another row order must give its clean rows in that order.

        Replays put an input's row elsewhere in a pass. A Keras GRU on the torch backend computed the last rows of
        a 40-row block (38, 39) apart from the same rows elsewhere in a batch, and the pinned control rows (the
        block's first inputs) never hold them: a masked pair read non-critical. Reversing the block moves every row.
        On AVX-512 CPUs, MKL's matmul rounds a row by its position's parity (Dense(16 -> 10), SimpleRNN): reversed,
        half the rows came out one ulp apart, while every row kept its bits wherever it moved among positions of
        the same parity. So the check tries periods 1, 2, 4, 8, 16 -- reversing the rows of each residue class --
        and the smallest that every layer passes becomes :attr:`period`: replays then keep each row's position
        modulo it (see ``fast._aligned_rows`` and :func:`~.fast_graph.keep_rows`).
        """
        if nb < 2 or nb in self._order_checked:  # kernels pick their blocking by the row count: once per block size
            return
        period, bad = row_period(nb, values[self.input].device, lambda perm: self._moved_row_apart(values, perm))
        if period is None:
            raise UnsupportedModel(f"Keras layer {bad} computes a row apart by its place in the batch")
        self.period = max(self.period, period)
        self._order_checked.add(nb)

    def _moved_row_apart(self, values: dict[int, Any], perm: torch.Tensor) -> str | None:
        """The first layer whose rows, with its inputs' rows permuted by ``perm``, are not its clean rows permuted alike."""
        with torch.no_grad():
            for n in self.nodes:
                got = self.call(n, {t: gather_rows(values[t], perm) for t in self.in_ids[n]})
                for t, y in zip(self.out_ids[n], got):
                    if not bool(rows_equal(y, gather_rows(values[t], perm)).all()):
                        return str(getattr(n.operation, "name", "?"))
        return None

    # ----- replay -----
    def _plan(self, start: Any) -> tuple[list[Any], dict[int, float], dict[int, int], list[bool]]:
        """Nodes downstream of ``start``, last uses of changed tensors and of clean ones, and where early exit may be checked."""
        if start in self._plans:
            return self._plans[start]
        changed = set(self.out_ids[start])
        steps = []
        for n in self.nodes[self.order[start] + 1 :]:
            if any(t in changed for t in self.in_ids[n]):
                steps.append(n)
                changed.update(self.out_ids[n])
        last: dict[int, float] = {t: -1 for t in changed}
        last_clean: dict[int, int] = {}
        for i, n in enumerate(steps):
            for t in self.in_ids[n]:
                if t in changed:
                    last[t] = i
                else:
                    last_clean[t] = i
        if self.output in last:
            last[self.output] = float("inf")
        alive = {t for t in self.out_ids[start] if last[t] != -1}
        check = [len(alive) == 1]
        for i, n in enumerate(steps):
            alive = {t for t in alive if last[t] > i} | {t for t in self.out_ids[n] if last[t] > i}
            check.append(alive == set(self.out_ids[n]) and len(alive) == 1)
        plan = (steps, last, last_clean, check)
        self._plans[start] = plan
        return plan

    def replay(self, start: Any, value: torch.Tensor, inputs: torch.Tensor, pinned: torch.Tensor, cache: dict[int, Any], *, early_exit: bool = True) -> ReplayResult:
        """Final (R, C) outputs of rows whose node ``start`` outputs ``value``; everything else comes from the clean ``cache``.

        Same contract as :meth:`~.fast_graph.TracedModel.replay`: rows found equal to the clean
        computation are finished early; ``pinned`` rows never are.
        """
        steps, last, last_clean, check = self._plan(start)
        r = int(value.shape[0])
        ids = torch.arange(r, device=value.device)
        finished = torch.zeros(r, dtype=torch.bool, device=value.device)
        cur_inp, cur_pin = inputs, pinned
        env: dict[int, Any] = {self.out_ids[start][0]: value}
        gathered: dict[int, Any] = {}

        def drop(t: int) -> bool:
            nonlocal ids, cur_inp, cur_pin, env, gathered
            same = rows_equal(env[t], gather_rows(cache[t], cur_inp))
            if not bool(same.any()):
                return False
            idx, ids, cur_inp, cur_pin = finish_rows(same, ids, cur_inp, cur_pin, finished, self.period)
            if idx is None:
                return bool(cur_pin.all())
            env = {a: gather_rows(v, idx) for a, v in env.items()}
            gathered = {}
            return bool(cur_pin.all())

        done = early_exit and check[0] and drop(self.out_ids[start][0])
        with torch.no_grad():
            for i, n in enumerate(steps):
                if done:
                    break
                values = {}
                for t in self.in_ids[n]:
                    if t in env:
                        values[t] = env[t]
                    else:
                        if t not in gathered:
                            gathered[t] = gather_rows(cache[t], cur_inp)
                        values[t] = gathered[t]
                for t, y in zip(self.out_ids[n], self.call(n, values)):
                    env[t] = y
                for t in [t for t in env if last.get(t, float("inf")) <= i]:
                    del env[t]
                for t in [t for t in gathered if last_clean.get(t, -1) <= i]:
                    del gathered[t]
                if early_exit and check[i + 1]:
                    done = drop(self.out_ids[n][0])
        if done or self.output not in env:  # every row finished, or the fault cannot reach the output
            finished[ids[~cur_pin]] = True
            return ReplayResult(None, ids, cur_pin, finished)
        out = env[self.output]
        return ReplayResult(out.reshape(out.shape[0], -1), ids, cur_pin, finished)


__all__ = ["KerasGraph"]
