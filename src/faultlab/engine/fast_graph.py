"""A torch.fx view of a model for the fast engine: clean activations once, replay only a fault's cone.

:class:`TracedModel` traces a module once, computes the clean value of every graph node for a
block of inputs (the *golden prefix*), and replays only the nodes downstream of a faulted node
for a batch of (fault, input) rows, reading every other value from the clean cache. Rows whose
possibly-faulty values become bit-identical to the clean ones are finished early (masked).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..bits import as_int_view
from ..outcomes import rows_equal
from ..targets._tensor_ops import first_tensor

#: replay passes never run fewer rows than this: tiny batches take other CPU kernels (other rounding)
MIN_ROWS = 64

_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ipow}
#: modules whose plain forward returns a new tensor
_FRESH_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
#: replays run the nodes of ``TracedModel.reuse`` in place (False: never; for measurements)
REUSE = True


_MASKING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Threshold, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Hardsigmoid, nn.Hardswish,
)
_MASKING_NAMES = {"relu", "relu6", "hardtanh", "threshold", "clamp", "clip", "max_pool1d", "max_pool2d", "max_pool3d",
                  "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "maximum", "minimum", "max", "min"}


def bucket(n: int) -> int:
    """The pass size for ``n`` rows: a multiple of 16 (of 64 past 1024), at least :data:`MIN_ROWS`.

    Few distinct batch shapes mean few kernel set-ups (oneDNN builds one per shape); finer steps
    mean fewer finished rows carried along as padding (multiples of 64 cost about 20 % more time
    on ResNet-20, with the same outcomes).
    """
    step = 16 if n <= 1024 else MIN_ROWS
    return max(MIN_ROWS, -(-n // step) * step)


def keep_rows(same: torch.Tensor, pinned: torch.Tensor, period: int = 1) -> tuple[torch.Tensor | None, torch.Tensor]:
    """After finishing the ``same`` rows: the positions of the rows to keep (None: all) and the new pinned mask.

    Pinned rows are always kept, and finished rows stay as padding up to :func:`bucket` rows:
    tiny batches would round differently, and a few batch shapes keep kernel set-ups cached.
    With ``period`` > 1 rows are kept in whole aligned groups of that many, so every row keeps its
    position modulo ``period`` (for kernels that round a row by it, see ``KerasGraph.period``).
    Finished rows kept as padding become pinned control rows: they carry clean values from here on.
    """
    keep = ~same | pinned
    if period > 1:
        if len(keep) % period:
            return None, pinned  # cannot compact without moving rows off their residues: keep them all
        groups = keep.view(-1, period).any(1)
        n_keep = int(groups.sum()) * period
        target = min(bucket(n_keep), len(keep))
        if n_keep < target:
            spare = torch.nonzero(~groups).squeeze(1)[: (target - n_keep) // period]
            groups[spare] = True
        keep = groups.repeat_interleave(period)
    else:
        n_keep = int(keep.sum())
        target = min(bucket(n_keep), len(keep))
        if n_keep < target:
            spare = torch.nonzero(~keep).squeeze(1)[: target - n_keep]
            keep[spare] = True
    padding = keep & same & ~pinned
    if bool(padding.any()):
        pinned = pinned | padding
    if bool(keep.all()):
        return None, pinned
    return torch.nonzero(keep).squeeze(1), pinned


def finish_rows(
    same: torch.Tensor, ids: torch.Tensor, inputs: torch.Tensor, pinned: torch.Tensor, finished: torch.Tensor, period: int = 1,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mark rows ``same`` (equal to the clean values) finished; returns (kept positions, or None for all; ids, inputs, pinned of the rows left)."""
    finished[ids[same]] = True
    idx, pinned = keep_rows(same, pinned, period)
    if idx is None:
        return None, ids, inputs, pinned
    return idx, ids[idx], inputs[idx], pinned[idx]


def reverse_residues(n: int, period: int, device: Any) -> torch.Tensor:
    """A permutation of ``n`` rows that reverses the rows of each residue class modulo ``period`` (1: the whole block)."""
    perm = torch.arange(n, device=device)
    for q in range(period):
        perm[q::period] = perm[q::period].flip(0)
    return perm


def row_period(nb: int, device: Any, moved_apart: Callable[[torch.Tensor], str | None]) -> tuple[int | None, str | None]:
    """The smallest of the periods 1, 2, 4, 8, 16 under which ``moved_apart(reverse_residues(nb, period))`` finds no
    node computing a row apart (None, and the last node named, when none does): rows may then move anywhere among
    positions of the same residue modulo that period."""
    bad = None
    for period in (1, 2, 4, 8, 16):
        if period > 1 and nb < 2 * period:
            break  # no residue class has two rows to swap
        bad = moved_apart(reverse_residues(nb, period, device))
        if bad is None:
            return period, None
    return None, bad


class UnsupportedModel(Exception):
    """The model cannot be replayed node by node (the engine falls back to exact mode)."""


def has_hooks(mod: nn.Module) -> bool:
    """Does calling ``mod`` run forward (pre-)hooks, its own or global ones?

    Such a module must be run by calling it: a hook may change its output (a range-restricting clamp,
    a no-op on clean values) or compute its weight (``weight_norm``, pruning), so the engine's shortcuts
    that call the layer's kernel directly (stacked kernels, windows, blocks) would skip it.
    """
    from torch.nn.modules import module as _m

    return bool(
        mod._forward_hooks or mod._forward_pre_hooks
        or getattr(_m, "_global_forward_hooks", None) or getattr(_m, "_global_forward_pre_hooks", None)
    )


def _tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for e in v for t in _tensors(e)]
    if isinstance(v, dict):
        return [t for e in v.values() for t in _tensors(e)]
    return []


def plain_forward(mod: nn.Module, base: type) -> bool:
    """Is ``mod`` a ``base`` that computes exactly what ``base`` computes (no hooks, no overridden forward)?

    The engine's shortcuts call a layer's function directly (``F.linear``, ``F.conv2d``, ``F.batch_norm``) on
    its parameters; a subclass that changes the forward (fake-quantised weights, say) or a module with hooks
    must be run by calling it.
    """
    if not isinstance(mod, base) or has_hooks(mod):
        return False
    names = ("forward", "_conv_forward") if hasattr(base, "_conv_forward") else ("forward",)
    # a forward set on the instance (``layer.forward = ...``) overrides the class's too
    return all(getattr(type(mod), k, None) is getattr(base, k) and k not in mod.__dict__ for k in names)


def _flat_nodes(v: Any) -> list[Any]:
    """The fx nodes in an argument (a node, or nested tuples/lists of them)."""
    if isinstance(v, (tuple, list)):
        return [a for e in v for a in _flat_nodes(e)]
    return [v] if hasattr(v, "op") and hasattr(v, "users") else []


def gather_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t[rows]`` in ``t``'s memory layout (e.g. channels-last stays channels-last).

    Kernels pick their algorithm, and so their rounding, by layout: a contiguous copy of a
    channels-last activation would not reproduce the clean computation bit for bit.
    """
    if t.dim() <= 1:
        return t.index_select(0, rows)
    if t.stride(0) == t[0].numel():  # rows outermost: keep every stride, even those of size-1 dims
        out = torch.empty_strided((len(rows),) + tuple(t.shape[1:]), t.stride(), dtype=t.dtype, device=t.device)
        return torch.index_select(t, 0, rows, out=out)
    perm = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    g = t.permute(perm).index_select(perm.index(0), rows)
    inv = [perm.index(d) for d in range(t.dim())]
    return g.permute(inv)


#: elements per row an early-exit check of whole rows reads first (0: none): a row that differs at one of them
#: is not masked, and only the others are compared whole. Once a fault has spread over whole maps, rows differ
#: almost everywhere and are rarely masked again (on the benchmark's ResNet-20 none of these checks found one), so the full
#: comparison -- a gather of the clean rows and a pass over both -- is mostly paid for nothing.
CHECK_SAMPLE = 64
_sample_at: dict[tuple[int, int, Any], torch.Tensor] = {}


def sample_positions(width: int, device: Any, count: int | None = None) -> torch.Tensor:
    """``count`` (default :data:`CHECK_SAMPLE`) fixed, scattered element positions (sorted) in a row of ``width`` elements."""
    count = CHECK_SAMPLE if count is None else count
    key = (width, count, device)
    at = _sample_at.get(key)
    if at is None:
        at = torch.randperm(width, generator=torch.Generator().manual_seed(0))[:count].sort().values
        at = _sample_at[key] = at.to(device)
    return at


def rows_equal_clean(v: torch.Tensor, clean: torch.Tensor, rows: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Per row of ``v``: is it bit-identical to ``clean[rows]``? Rows marked ``skip`` come out False without being compared.

    :data:`CHECK_SAMPLE` scattered elements of every row are compared first; the rows equal
    there are then compared whole, so the answer is exact and only its cost depends on the sample.
    """
    r = int(v.shape[0])
    width = v[0].numel() if r else 0
    sampled = CHECK_SAMPLE > 0 and v.dim() >= 2 and width >= 32 * CHECK_SAMPLE and v.is_contiguous() and clean.is_contiguous()
    if sampled:
        at = sample_positions(width, v.device)
        got = v.view(r, width).index_select(1, at)
        want = clean.view(int(clean.shape[0]), width).index_select(1, at).index_select(0, rows)
        maybe = ~torch.ne(as_int_view(got), as_int_view(want)).any(1) & ~skip
        k = torch.nonzero(maybe).squeeze(1)
        if len(k) == 0:
            return maybe
        if 2 * len(k) <= r:  # few rows left: compare those whole, else one comparison of them all
            maybe[k] = rows_equal(gather_rows(v, k), gather_rows(clean, rows.index_select(0, k)))
            return maybe
    return rows_equal(v, gather_rows(clean, rows)) & ~skip


_MAX_POOLS_2D = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)


def run_pool(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mod(x)``, with 2-D max pooling run on channels-last data (the result in ``x``'s layout).

    The CPU kernel for channels-first maps is several times slower than the channels-last one,
    which the fast engine feels on tens of thousands of small maps. Max pooling does no
    arithmetic, and both kernels pick the same element (NaN and signed zeros included; tested).
    """
    if not isinstance(mod, _MAX_POOLS_2D) or x.dim() != 4 or x.shape[1] < 2 or getattr(mod, "return_indices", False):
        return mod(x)
    fmt = torch.channels_last if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return mod(x.contiguous(memory_format=torch.channels_last)).contiguous(memory_format=fmt)


#: single-channel maps pooled together as the channels of one tensor (see :func:`run_pool_maps`)
POOL_GROUP = 16


def run_pool_maps(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mod(x)`` for ``x`` of (R, 1, H, W) independent maps (a block replay's channels), as :func:`run_pool` computes it.

    A map pooled as one of ``POOL_GROUP`` channels of a tensor is the same map pooled alone, but the
    channels-last kernel then works on many maps at once: about 3x faster than R one-channel maps.
    """
    r = int(x.shape[0])
    head = r // POOL_GROUP * POOL_GROUP
    if not isinstance(mod, _MAX_POOLS_2D) or x.dim() != 4 or x.shape[1] != 1 or not x.is_contiguous() or head == 0 or getattr(mod, "return_indices", False):
        return run_pool(mod, x)
    out = run_pool(mod, x[:head].view(head // POOL_GROUP, POOL_GROUP, *x.shape[2:]))
    out = out.reshape(head, 1, *out.shape[2:])
    return out if head == r else torch.cat([out, mod(x[head:])])


def _gather(v: Any, rows: torch.Tensor) -> Any:
    """Rows ``rows`` of every batched tensor in ``v`` (tensors, or tuples/lists of them)."""
    if isinstance(v, torch.Tensor):
        return gather_rows(v, rows)
    if isinstance(v, tuple):
        return tuple(_gather(e, rows) for e in v)
    if isinstance(v, list):
        return [_gather(e, rows) for e in v]
    return v


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, tuple):
        return tuple(_clone(e) for e in v)
    if isinstance(v, list):
        return [_clone(e) for e in v]
    return v


@dataclass
class ReplayResult:
    """A replay's outcome: ``out`` (or None when every row finished early) holds the rows ``ids``."""

    out: torch.Tensor | None
    ids: torch.Tensor
    pinned: torch.Tensor
    finished: torch.Tensor


def _symbolic_trace(model: nn.Module) -> Any:
    """``torch.fx.symbolic_trace``, with ``a += b`` (and ``-= *= /= **=``) recorded as the in-place op it is.

    fx's proxies have no ``__iadd__``, so Python runs ``a = a + b``: the graph holds a new value while the
    real model changes ``a``'s tensor in place, which every other name for that tensor then reads
    (``g = h; g *= mask; f(h)``). Recorded as ``operator.iadd`` & co., such a change is seen like any other
    in-place op (:meth:`TracedModel._check_inplace`).
    """
    import torch.fx as fx

    class _Proxy(fx.Proxy):
        pass

    for name, fn in (("__iadd__", operator.iadd), ("__isub__", operator.isub), ("__imul__", operator.imul),
                     ("__itruediv__", operator.itruediv), ("__ipow__", operator.ipow)):
        setattr(_Proxy, name, lambda self, other, _fn=fn: self.tracer.create_proxy("call_function", _fn, (self, other), {}))

    class _Tracer(fx.Tracer):
        def proxy(self, node: Any) -> Any:
            return _Proxy(node, self)

    tracer = _Tracer()
    # tracing runs forward on proxies: ``self.last = h`` would leave an fx Proxy in the user's model
    # and buffers are real tensors there: ``self.count.add_(1)`` runs on them
    saved = [(m, dict(m.__dict__), dict(m._buffers), dict(m._parameters)) for m in model.modules()]
    values = [(b, b.detach().clone()) for m in model.modules() for b in m._buffers.values() if b is not None and not b.is_inference()]
    name = model.__class__.__name__ if isinstance(model, nn.Module) else model.__name__
    try:
        graph = tracer.trace(model)
        # made before the attributes are put back: it copies the tensor constants the tracer added to the model
        gm = fx.GraphModule(tracer.root, graph, name)
    finally:
        with torch.no_grad():
            for b, c in values:
                if b.shape != c.shape or not torch.equal(as_int_view(b.reshape(-1)), as_int_view(c.reshape(-1))):
                    b.set_(c) if b.shape != c.shape else b.copy_(c)
        for m, attrs, bufs, params in saved:
            for d, old in ((m.__dict__, attrs), (m._buffers, bufs), (m._parameters, params)):
                for k in [k for k in d if k not in old]:
                    del d[k]
                for k, v in old.items():
                    if d.get(k, d) is not v:
                        d[k] = v
    return gm


class TracedModel:
    """A module traced once with ``torch.fx``; raises :class:`UnsupportedModel` if that fails."""

    def __init__(self, model: nn.Module) -> None:
        import torch.fx as fx

        try:
            self.gm = _symbolic_trace(model)
        except Exception as e:  # fx raises many kinds of errors on data-dependent control flow
            raise UnsupportedModel(f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e}") from None
        self.fx = fx
        nodes = list(self.gm.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedModel(f"forward() takes {len(placeholders)} inputs; the fast engine needs exactly one")
        self.input = placeholders[0]
        self.output = next(n for n in nodes if n.op == "output")
        self.order = {n: i for i, n in enumerate(nodes)}
        self.body = [n for n in nodes if n.op not in ("placeholder", "output")]
        self.modules = dict(model.named_modules())
        called = {str(n.target) for n in nodes if n.op == "call_module"}
        for name, m in self.modules.items():
            # fx inlines every module it does not call as a leaf (the model itself, user blocks): their hooks are lost
            if name not in called and has_hooks(m):
                raise UnsupportedModel(f"module {name or type(model).__name__!r} has forward hooks that the torch.fx graph does not run")
        dynamic = {self.input}
        for n in nodes:
            if any(a in dynamic for a in n.all_input_nodes):
                dynamic.add(n)
        self.dynamic = dynamic
        self.module_nodes: dict[str, list[Any]] = {}
        for n in self.body:
            if n.op == "call_module":
                self.module_nodes.setdefault(str(n.target), []).append(n)
        self.attr_tensor_ids: set[int] = set()
        self._consts: dict[Any, Any] = {}
        for n in self.body:
            if n.op == "get_attr":
                v = self._fetch(str(n.target))
                if isinstance(v, torch.Tensor):
                    self.attr_tensor_ids.add(id(v))
        self.inplace = {n: self._is_inplace(n) for n in self.body}
        #: ReLU / add nodes that may write their result into their first input's memory during a replay (see :meth:`_reuses`)
        self.reuse = {n: a for n in self.body if (a := self._reuses(n)) is not None}
        self.meta: set[Any] = set()
        self.tensor_nodes: set[Any] = set()
        self.row_bytes: dict[Any, int] = {}
        self.checked = False
        self._plans: dict[Any, tuple] = {}
        #: replays keep every row's position modulo this (1: rows may go anywhere; see :meth:`_check_row_order`)
        self.period = 1
        #: block sizes whose clean rows every node reproduced in another order
        self._order_checked: set[int] = set()

    # ----- running single nodes -----
    def _fetch(self, target: str) -> Any:
        v: Any = self.gm
        for part in target.split("."):
            v = getattr(v, part)
        return v

    def _is_inplace(self, n: Any) -> bool:
        if n.op == "call_module":
            return bool(getattr(self.modules.get(str(n.target)), "inplace", False))
        if n.op == "call_method":
            return str(n.target).endswith("_") and not str(n.target).startswith("_")
        if n.op == "call_function":
            name = getattr(n.target, "__name__", "")
            return n.target in _INPLACE_FUNCTIONS or bool(n.kwargs.get("inplace")) or "out" in n.kwargs or (name.endswith("_") and not name.startswith("_"))
        return False

    def _fresh(self, a: Any) -> bool:
        """Does node ``a`` return a new tensor that only its one user reads (a plain convolution, batch norm, linear or add)?"""
        if not hasattr(a, "op") or len(a.users) != 1 or self.inplace.get(a, True):
            return False
        if a.op == "call_module":
            mod = self.modules.get(str(a.target))
            return any(isinstance(mod, t) and plain_forward(mod, t) for t in _FRESH_MODULES)
        return a.op == "call_function" and a.target in (operator.add, torch.add) and not a.kwargs

    def _reuses(self, n: Any) -> Any:
        """The input whose memory ReLU / add node ``n`` may reuse in a replay, or None.

        A replay owns the tensors it computes; where such a value's only reader is the next ReLU
        (or add), that node runs in place on it: the same kernel on the same values, so the same
        bits, without a fresh tensor's worth of memory traffic.
        """
        if not n.args or not self._fresh(n.args[0]):
            return None
        if n.op == "call_module":
            mod = self.modules.get(str(n.target))
            ok = type(mod) is nn.ReLU and not has_hooks(mod) and len(n.args) == 1 and not n.kwargs
        elif n.op == "call_function":
            ok = (n.target in (torch.relu, F.relu) and len(n.args) == 1 and not n.kwargs.get("inplace")) or (
                n.target in (operator.add, torch.add) and len(n.args) == 2 and not n.kwargs and hasattr(n.args[1], "op"))
        else:
            ok = n.op == "call_method" and str(n.target) == "relu" and len(n.args) == 1 and not n.kwargs
        return n.args[0] if ok else None

    def run_reusing(self, n: Any, first: torch.Tensor, lookup: Callable[[Any], Any]) -> Any:
        """Node ``n`` of :attr:`reuse` run in place on ``first``, its first input's value (owned by the replay), or None where the result would differ in shape, type or layout."""
        if n.target in (operator.add, torch.add):
            other = lookup(n.args[1])
            if not (isinstance(other, torch.Tensor) and other.shape == first.shape and other.dtype == first.dtype and other.stride() == first.stride()):
                return None
            return first.add_(other)
        return torch.relu_(first)

    def _mutated(self, n: Any) -> list[Any]:
        """The graph values an in-place node ``n`` writes into: its ``out=`` argument, else its first argument."""
        if n.op == "call_function" and "out" in n.kwargs:
            return _flat_nodes(n.kwargs["out"])
        return _flat_nodes(n.args[:1])

    def _check_inplace(self, env: dict[Any, Any]) -> None:
        """Refuse models where a value changed in place is read again afterwards through another node.

        The graph replays each node on copies of its inputs (cached clean values must not change), so a
        later reader of the original node (or of any view of its memory) gets the value from before the
        change, while the real model reads the changed one. An in-place op that is a no-op on clean values
        (``h.clamp_(-20, 20)`` whose result is not used) would pass the golden check and then give faulty
        rows a different outcome than the real model.
        """
        ptrs_of: dict[Any, set[int]] = {}
        for m, v in env.items():
            ptrs_of[m] = {t.untyped_storage().data_ptr() for t in _tensors(v) if t.numel()}
        for n in self.body:
            if not self.inplace[n]:
                continue
            written: set[int] = set()
            for a in self._mutated(n):
                written |= ptrs_of.get(a, set())
            if not written:
                continue
            for m, ptrs in ptrs_of.items():
                if m is n or not (ptrs & written):
                    continue
                late = [u for u in m.users if u is not n and self.order.get(u, -1) > self.order[n]]
                if late:
                    raise UnsupportedModel(f"node {n.name} changes {m.name} in place, and {late[0].name} reads it afterwards")

    def _can_mask(self, n: Any) -> bool:
        """Can this node turn a faulty row back into the clean one (ReLU, max-pooling, clamping)?

        Only such nodes are checked for early exit: a difference absorbed elsewhere (rounding
        in a sum) is caught at the next one, and checking costs a pass over the values.
        """
        if n.op == "call_module":
            return isinstance(self.modules.get(str(n.target)), _MASKING_MODULES)
        name = str(n.target) if n.op == "call_method" else getattr(n.target, "__name__", "")
        return name.rstrip("_") in _MASKING_NAMES

    def call(self, n: Any, lookup: Callable[[Any], Any]) -> Any:
        """Run node ``n`` on the values ``lookup`` gives for its inputs (never mutating them)."""
        args = self.fx.node.map_arg(n.args, lookup)
        kwargs = self.fx.node.map_arg(n.kwargs, lookup)
        if self.inplace[n]:
            args, kwargs = _clone(args), {k: _clone(v) for k, v in kwargs.items()}
        if n.op == "call_module":
            mod = self.modules[str(n.target)]
            if isinstance(mod, _MAX_POOLS_2D) and len(args) == 1 and not kwargs:
                return run_pool(mod, args[0])
            return mod(*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], str(n.target))(*args[1:], **kwargs)
        if n.op == "get_attr":
            return self._fetch(str(n.target))
        raise UnsupportedModel(f"unexpected fx node kind {n.op!r}")

    def output_of(self, lookup: Callable[[Any], Any]) -> torch.Tensor:
        out = first_tensor(self.fx.node.map_arg(self.output.args[0], lookup))
        if out is None:
            raise UnsupportedModel("the traced model returns no tensor")
        return out.reshape(out.shape[0], -1)

    # ----- clean (golden-prefix) values -----
    def clean(self, x: torch.Tensor, check_order: bool = True) -> tuple[dict[Any, Any], torch.Tensor]:
        """Every node's clean value for the block ``x`` and the block's (N, C) outputs (see :meth:`_check_row_order`)."""
        env: dict[Any, Any] = {self.input: x}
        for n in self.body:
            if n not in self.dynamic:
                if n not in self._consts:
                    self._consts[n] = self.call(n, env.__getitem__)
                env[n] = self._consts[n]
            else:
                env[n] = self.call(n, env.__getitem__)
        if not self.checked:
            self._classify(env, int(x.shape[0]))
            if x.shape[0] >= 2:
                self._check_batch_dim(x[: x.shape[0] - 1])
        if check_order:
            self._check_row_order(env, int(x.shape[0]))
        return env, self.output_of(env.__getitem__)

    def _check_row_order(self, env: dict[Any, Any], nb: int) -> None:
        """Every node on the block's clean values in another row order must give its clean rows in that order.

        Replays put an input's row elsewhere in a pass. On AVX-512 CPUs MKL's matmul rounds a row by its
        position's parity when the right operand is a (K, N) tensor with few columns (``h @ W`` with ``W`` of
        (32, 10): reversed, most rows came out one ulp apart, and the control rows did not notice), while
        ``F.linear`` does not. So, as for Keras graphs, the check tries periods 1, 2, 4, 8, 16 (reversing the
        rows of each residue class) and the smallest that every node passes becomes :attr:`period`; replays
        then keep each row's position modulo it (``fast._aligned_rows``, :func:`keep_rows`). A node that no
        period satisfies sends the model to the exact engine. Once per block size: kernels pick their blocking
        by the row count.
        """
        if nb < 2 or nb in self._order_checked:
            return
        period, bad = row_period(nb, env[self.input].device, lambda perm: self._moved_row_apart(env, perm))
        if period is None:
            raise UnsupportedModel(f"node {bad} computes a row apart by its place in the batch")
        self.period = max(self.period, period)
        self._order_checked.add(nb)

    def _moved_row_apart(self, env: dict[Any, Any], perm: torch.Tensor) -> str | None:
        """The first node whose rows, with its inputs' rows permuted by ``perm``, are not its clean rows permuted alike."""
        moved: dict[Any, Any] = {}

        def lookup(a: Any) -> Any:
            if a not in self.dynamic or a in self.meta:
                return env[a]
            if a not in moved:
                moved[a] = _gather(env[a], perm)
            return moved[a]

        with torch.no_grad():
            for n in self.body:
                if n not in self.dynamic or n in self.meta:
                    continue
                got = _tensors(self.call(n, lookup))
                want = _tensors(lookup(n))
                if len(got) != len(want) or any(g.shape != w.shape or not bool(rows_equal(g, w).all()) for g, w in zip(got, want)):
                    return n.name
        return None

    def _check_batch_dim(self, x: torch.Tensor) -> None:
        """Refuse values whose first dimension only happened to equal the block's size (time first, ``T == N``).

        Rows are gathered along the first dimension; a (T, N, F) value with as many steps as the block has inputs
        passed the size check, and its replay mixed time steps with inputs. With one input fewer, every batched
        value must have one row fewer.
        """
        env2, _ = self.clean(x, check_order=False)
        nb = int(x.shape[0])
        for n in self.body:
            if n in self.dynamic and n not in self.meta:
                bad = [tuple(t.shape) for t in _tensors(env2[n]) if t.dim() < 1 or t.shape[0] != nb]
                if bad:
                    raise UnsupportedModel(f"node {n.name} mixes inputs across the batch (its first dimension does not follow the batch: {bad} for {nb} inputs)")

    def _classify(self, env: dict[Any, Any], nb: int) -> None:
        """Sort input-dependent nodes into batched tensors and shape-like 'meta' values."""
        for n in self.body:
            if n not in self.dynamic:
                continue
            ts = _tensors(env[n])
            if not ts:
                self.meta.add(n)
            elif all(t.dim() >= 1 and t.shape[0] == nb for t in ts):
                if isinstance(env[n], torch.Tensor):
                    self.tensor_nodes.add(n)
                self.row_bytes[n] = sum(t.numel() * t.element_size() for t in ts) // max(nb, 1)
            else:
                raise UnsupportedModel(f"node {n.name} mixes inputs across the batch (shape {[tuple(t.shape) for t in ts]})")
        self.row_bytes[self.input] = env[self.input].numel() * env[self.input].element_size() // max(nb, 1)
        self._check_inplace(env)
        self.checked = True

    def cache_row_bytes(self) -> int:
        """Bytes the clean cache takes per input."""
        return sum(self.row_bytes.values())

    def replay_row_bytes(self, start: Any = None) -> int:
        """A generous bound on one replay row's working memory: the peak of live values in a full pass, x3.

        With ``start``, the peak over ``start``'s cone only (its live values and the clean values its
        nodes read): a fault near the output carries a few numbers per row, not whole feature maps, so
        its passes can hold many more rows in the same memory.
        """
        if start is not None:
            return self._cone_row_bytes(start)
        last = {}
        for i, n in enumerate(self.body):
            for a in n.all_input_nodes:
                last[a] = i
        live, peak = 0, 0
        alive: list[Any] = []
        for i, n in enumerate(self.body):
            live += self.row_bytes.get(n, 0)
            alive.append(n)
            peak = max(peak, live)
            for a in [a for a in alive if last.get(a, len(self.body)) <= i]:
                alive.remove(a)
                live -= self.row_bytes.get(a, 0)
        return 3 * max(peak, 1) + self._row_overhead()

    def _cone_row_bytes(self, start: Any) -> int:
        steps, last, _, _ = self._plan(start)
        pos = {n: i for i, n in enumerate(steps)}
        # clean values read by the cone stay gathered from their first reader to their last
        first: dict[Any, int] = {}
        end: dict[Any, float] = {start: last[start]}
        for i, n in enumerate(steps):
            end[n] = last[n]
            for a in n.all_input_nodes:
                if a is not start and a not in pos and a in self.dynamic:
                    first.setdefault(a, i)
                    end[a] = i
        alive = {start}
        peak = live = self.row_bytes.get(start, 0)
        for i, n in enumerate(steps):
            for a in [n] + [a for a, f in first.items() if f == i]:
                alive.add(a)
                live += self.row_bytes.get(a, 0)
            peak = max(peak, live)
            for a in [a for a in alive if end[a] <= i]:
                alive.discard(a)
                live -= self.row_bytes.get(a, 0)
        return 3 * max(peak, 1) + self._row_overhead()

    def _row_overhead(self) -> int:
        """Each replay row's own bookkeeping (ids, inputs, flags, codes) and the outcome's temporaries."""
        out = self.row_bytes.get(self.output.all_input_nodes[0], 0) if self.output.all_input_nodes else 0
        return 4 * out + 64

    # ----- replay -----
    def _plan(self, start: Any) -> tuple[list[Any], dict[Any, float], list[bool], bool]:
        """Nodes to replay after ``start`` (its downstream cone, plus shape nodes), their last uses, early-exit points."""
        if start in self._plans:
            return self._plans[start]
        desc: set[Any] = set()
        todo = [start]
        while todo:
            for u in todo.pop().users:
                if u.op != "output" and u not in desc:
                    desc.add(u)
                    todo.append(u)
        steps = sorted(desc | {m for m in self.meta if self.order[m] > self.order[start]}, key=self.order.__getitem__)
        pos = {n: i for i, n in enumerate(steps)}
        last: dict[Any, float] = {}
        for n in [start] + steps:
            uses = [pos[u] for u in n.users if u in pos]
            last[n] = float("inf") if self.output in n.users else (max(uses) if uses else -1)
        check = []
        alive = {start} if last[start] != -1 else set()
        can_exit = not any(m in self.meta for m in steps)
        check_start = can_exit and alive == {start}
        for i, n in enumerate(steps):
            alive = {a for a in alive if last[a] > i}
            if last[n] > i:
                alive.add(n)
            check.append(can_exit and alive == {n} and n not in self.meta and self._can_mask(n))
        check = [check_start] + check
        # a value read only by the next step, itself checked (ReLU -> max pooling), is not checked: a row equal to the
        # clean values there is equal after the next step too and leaves at it
        for i, n in enumerate([start] + steps[:-1] if steps else []):
            if check[i] and check[i + 1] and last[n] == i:
                check[i] = False
        plan = (steps, last, check, can_exit)
        self._plans[start] = plan
        return plan

    def replay(
        self,
        start: Any,
        value: torch.Tensor,
        inputs: torch.Tensor,
        pinned: torch.Tensor,
        cache: dict[Any, Any],
        *,
        early_exit: bool = True,
    ) -> "ReplayResult":
        """Final (R, C) outputs of rows whose node ``start`` holds ``value``; other nodes read the clean ``cache``.

        ``inputs`` gives each row's block-local input. Rows found bit-identical to the clean
        computation are dropped early and get the clean output; ``pinned`` rows are never dropped.
        Returns the rows still computed at the end (positions into the R rows) with their
        outputs, so the caller can check its pinned control rows against the golden outputs.
        """
        ids = torch.arange(value.shape[0], device=value.device)
        finished = torch.zeros(value.shape[0], dtype=torch.bool, device=value.device)
        return self.resume(start, {start: value}, 0, ids, inputs, pinned, finished, cache, early_exit=early_exit)

    def resume(
        self,
        start: Any,
        env: dict[Any, Any],
        first: int,
        ids: torch.Tensor,
        inputs: torch.Tensor,
        pinned: torch.Tensor,
        finished: torch.Tensor,
        cache: dict[Any, Any],
        *,
        early_exit: bool = True,
    ) -> "ReplayResult":
        """Go on with :meth:`replay` of ``start``'s cone from step ``first``, with the live values ``env`` of rows ``ids``.

        ``finished`` (over all original rows) is updated in place; with ``first`` > 0 the
        caller has already checked the values in ``env`` for early exit.
        """
        steps, last, check, _ = self._plan(start)
        cur_inp, cur_pin = inputs, pinned
        env = dict(env)
        gathered: dict[Any, Any] = {}

        def lookup(n: Any) -> Any:
            if n in env:
                return env[n]
            v = cache[n]
            if n in self.dynamic and n not in self.meta:
                g = gathered.get(n)
                if g is None:
                    g = gathered[n] = _gather(v, cur_inp)
                return g
            return v

        def drop(n: Any) -> bool:
            nonlocal ids, cur_inp, cur_pin, gathered
            v = env[n]
            if not isinstance(v, torch.Tensor):
                return False
            same = rows_equal_clean(v, cache[n], cur_inp, cur_pin)
            if not bool(same.any()):
                return bool(cur_pin.all())
            idx, ids, cur_inp, cur_pin = finish_rows(same, ids, cur_inp, cur_pin, finished, self.period)
            if idx is None:
                return bool(cur_pin.all())
            for a in list(env):
                env[a] = _gather(env[a], idx)
            gathered = {}
            return bool(cur_pin.all())

        done = False
        if early_exit and first == 0 and check[0]:
            done = drop(start)
        for i in range(first, len(steps)):
            if done:
                break
            n = steps[i]
            a = self.reuse.get(n) if REUSE else None
            v = self.run_reusing(n, env[a], lookup) if a is not None and a is not start and a in env and isinstance(env[a], torch.Tensor) else None
            env[n] = self.call(n, lookup) if v is None else v
            for a in [a for a in env if last.get(a, float("inf")) <= i]:
                del env[a]
                gathered.pop(a, None)
            for a in [a for a in gathered if a not in env and self._last_clean_use(a, steps, i)]:
                del gathered[a]
            if early_exit and check[i + 1]:
                done = drop(n)
        if done:
            return ReplayResult(None, ids, cur_pin, finished)
        return ReplayResult(self._final(start, steps, env, lookup), ids, cur_pin, finished)

    def _last_clean_use(self, a: Any, steps: list[Any], i: int) -> bool:
        return all(self.order[u] <= self.order[steps[i]] for u in a.users if u in steps)

    def _final(self, start: Any, steps: list[Any], env: dict[Any, Any], lookup: Callable[[Any], Any]) -> torch.Tensor:
        missing = [a for a in self.output.all_input_nodes if a not in env and (a is start or a in steps)]
        if missing:  # every row finished: their values equal the clean ones
            raise RuntimeError("internal: replay finished without the output's inputs")
        return self.output_of(lookup)


class PartialReplay:
    """Replays a fault's cone on a compact per-row *part* of each value, then hands over to whole rows.

    Subclasses say what a part is (spatial windows, single-channel blocks): how a node runs on
    parts (:meth:`_step`, None where it cannot), how a part compares with the clean values
    (:meth:`_equal_clean`), how it is written into whole rows (:meth:`_whole`) and what to
    remember when control rows disagree (:meth:`_refuse`). Parts have ``take(idx)``.
    """

    def __init__(self, tm: "TracedModel") -> None:
        self.tm = tm

    def _step(self, n: Any, env: dict[Any, Any], cache: dict[Any, Any], inp: torch.Tensor) -> Any:
        raise NotImplementedError

    def _equal_clean(self, n: Any, part: Any, cache: dict[Any, Any], inp: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _whole(self, clean: torch.Tensor, part: Any, inp: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _refuse(self, n: Any, part: Any) -> None:
        raise NotImplementedError

    def _compare(self, n: Any, part: Any, cache: dict[Any, Any], inp: torch.Tensor, ctrl: torch.Tensor, every_row: bool) -> torch.Tensor:
        """Rows whose part equals the clean values; with ``every_row`` False only the control rows are compared."""
        if every_row:
            return self._equal_clean(n, part, cache, inp)
        eq = torch.zeros(len(inp), dtype=torch.bool, device=inp.device)
        c = torch.nonzero(ctrl).squeeze(1)
        if len(c):
            eq[c] = self._equal_clean(n, part.take(c), cache, inp.index_select(0, c))
        return eq

    def replay(
        self, start: Any, part: Any, inputs: torch.Tensor, pinned: torch.Tensor, control: torch.Tensor,
        cache: dict[Any, Any], *, early_exit: bool = True,
    ) -> "ReplayResult | None":
        """Like :meth:`TracedModel.replay`, for rows whose node ``start`` differs from clean only inside ``part``.

        ``control`` marks the clean control rows (pinned too). A node whose control parts differ
        from the clean values (a kernel on parts rounding differently) is not used: the replay
        goes on with whole rows from that node. None is returned when the start values of the
        controls are already wrong.
        """
        tm = self.tm
        steps, last, _, _ = tm._plan(start)
        ids = torch.arange(len(inputs), device=inputs.device)
        finished = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
        cur_inp, cur_pin, cur_ctrl = inputs, pinned, control
        env: dict[Any, Any] = {start: part}

        def handed_on(v: Any, j: int) -> bool:
            # v is read only by step j, a node where values can turn clean (ReLU, max pooling): a row equal to the
            # clean values at v is equal after step j too, so v is compared on the control rows alone and the row
            # leaves at step j (or at the next such node); one comparison instead of one per node
            return early_exit and j < len(steps) and last.get(v) == j and tm._can_mask(steps[j])

        eqs: dict[Any, torch.Tensor] = {start: self._compare(start, part, cache, cur_inp, cur_ctrl, not handed_on(start, 0))}  # per live node
        if not bool(eqs[start][cur_ctrl].all()):
            return None
        i = -1
        while True:
            # rows whose every live part equals the clean values are finished (masked)
            same = None
            for e in eqs.values():
                same = e if same is None else same & e
            if early_exit and same is not None and bool((same & ~cur_pin).any()):
                idx, ids, cur_inp, cur_pin = finish_rows(same, ids, cur_inp, cur_pin, finished, tm.period)
                if idx is not None:
                    cur_ctrl = cur_ctrl[idx]
                    env = {a: p.take(idx) for a, p in env.items()}
                    eqs = {a: e[idx] for a, e in eqs.items()}
                if bool(cur_pin.all()):
                    return ReplayResult(None, ids, cur_pin, finished)
            if i + 1 >= len(steps):
                break
            n = steps[i + 1]
            out = self._step(n, env, cache, cur_inp)
            if out is None:
                break
            # every row is compared where values can turn clean again (ReLU, max-pooling), else only the controls
            eq = self._compare(n, out, cache, cur_inp, cur_ctrl, early_exit and tm._can_mask(n) and not handed_on(n, i + 2))
            if not bool(eq[cur_ctrl].all()):
                self._refuse(n, out)  # whole rows from here
                break
            i += 1
            env[n], eqs[n] = out, eq
            for a in [a for a in env if last.get(a, float("inf")) <= i]:
                del env[a], eqs[a]
        full_env = {a: self._whole(cache[a], p, cur_inp) for a, p in env.items()}
        return tm.resume(start, full_env, i + 1, ids, cur_inp, cur_pin, finished, cache, early_exit=early_exit)


__all__ = ["TracedModel", "PartialReplay", "ReplayResult", "gather_rows", "bucket", "keep_rows", "finish_rows", "reverse_residues", "row_period", "run_pool", "run_pool_maps", "POOL_GROUP", "UnsupportedModel", "has_hooks", "plain_forward", "MIN_ROWS", "rows_equal", "rows_equal_clean", "sample_positions", "CHECK_SAMPLE", "first_tensor"]
