"""Block replay for the fast engine: carry only the channel a fault changed, not whole rows.

A weight fault in a Conv/Linear layer changes one output channel; an activation fault in a
Linear output changes one feature. The per-channel nodes after it (ReLU, batch norm in eval
mode, pooling, flatten, adding a clean tensor) keep the change inside that channel, so each
row carries just that *block* -- the ``g`` values at flat positions ``ch*g .. ch*g+g`` of the
row -- is compared with the clean block for early exit, and reads nothing else. At the first
node that mixes channels (a convolution, a linear layer) or that this module does not know, the
blocks are written into whole rows and :meth:`~.fast_graph.TracedModel.resume` goes on.

On a small CNN a weight fault's rows then move 1/C of the data through ReLU and pooling (and
pooling kernels are slow on many small maps). Nodes that do arithmetic (batch norm, average
pooling) are checked once per node on clean rows of every channel, and pinned clean control
rows go through the same blocks: their blocks must equal the clean values at *every* node,
else that node and everything after it run on whole rows.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .fast_graph import MIN_ROWS, PartialReplay, TracedModel, gather_rows, has_hooks, plain_forward, rows_equal, run_pool_maps

#: modules applied to a block as they are: elementwise, no arithmetic that could round apart
_EXACT_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: per-channel modules run on one channel at a time (a block reshaped to one map)
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
_EXACT_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_UNARY = {torch.relu: torch.relu, F.relu: torch.relu, "relu": torch.relu, "relu_": torch.relu}
_BINARY = {
    operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add, "add": torch.add, "add_": torch.add,
    operator.sub: torch.sub, operator.isub: torch.sub, torch.sub: torch.sub, "sub": torch.sub, "sub_": torch.sub,
    operator.mul: torch.mul, operator.imul: torch.mul, torch.mul: torch.mul, "mul": torch.mul, "mul_": torch.mul,
}
_FLATTEN = {torch.flatten, "flatten"}


@dataclass
class Block:
    """Rows' values of one node that differ from the clean ones only at flat positions ``ch[r]*g .. ch[r]*g+g``: ``val`` is (R, g)."""

    val: torch.Tensor
    ch: torch.Tensor

    def take(self, idx: torch.Tensor) -> "Block":
        return Block(self.val.index_select(0, idx), self.ch.index_select(0, idx))


def is_channel(t: torch.Tensor, g: int) -> bool:
    """Is a block of ``g`` values one whole channel of ``t`` (an (N, C, ...) map, or one feature of (N, F))?"""
    return t.dim() >= 3 and g == math.prod(t.shape[2:]) or t.dim() == 2 and g == 1


def clean_block(clean: torch.Tensor, inp: torch.Tensor, ch: torch.Tensor, g: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(R, g): block ``ch[r]`` of size ``g`` of clean row ``inp[r]``, whatever the memory layout (written into ``out`` if given)."""
    r = len(inp)
    if clean.is_contiguous():  # one row gather from a (N * blocks, g) view: cheaper than 2-index indexing
        per_row = clean[0].numel() // g
        idx = inp * per_row + ch
        return clean.view(-1, g).index_select(0, idx) if out is None else torch.index_select(clean.view(-1, g), 0, idx, out=out)
    if clean.dim() >= 3 and g == math.prod(clean.shape[2:]):
        val = clean[inp, ch].reshape(r, g)
    else:
        val = clean.reshape(clean.shape[0], -1, g)[inp, ch]
    if out is None:
        return val
    out.copy_(val)
    return out


def write_blocks(clean: torch.Tensor, blk: Block, inp: torch.Tensor) -> torch.Tensor:
    """Whole rows: ``clean[inp]`` (in its memory layout) with each row's block written in."""
    full = gather_rows(clean, inp)
    r, g = blk.val.shape
    ar = torch.arange(r, device=full.device)
    if full.dim() >= 3 and g == math.prod(full.shape[2:]):
        full[ar, blk.ch] = blk.val.view((r,) + tuple(full.shape[2:]))
    else:
        full.view(r, -1, g)[ar, blk.ch] = blk.val
    return full


class BlockReplay(PartialReplay):
    """Replays a fault's downstream cone on per-row blocks while the nodes keep channels apart (see the module docstring)."""

    def __init__(self, tm: TracedModel) -> None:
        super().__init__(tm)
        #: node -> did the block kernel reproduce the clean values on clean rows of every channel?
        self._ok: dict[Any, bool] = {}

    # ----- one node on blocks -----
    def _checked(self, n: Any, a: Any, fn: Any, cache: dict[Any, Any], g_in: int, g_out: int) -> bool:
        """Once per node: ``fn`` on clean blocks of every channel of 64 rows equals the clean output blocks."""
        if n not in self._ok:
            clean_in, clean_out = cache[a], cache[n]
            rows = min(MIN_ROWS, int(clean_in.shape[0]))
            c = clean_in[0].numel() // g_in
            inp = torch.arange(rows, device=clean_in.device).repeat_interleave(c)
            ch = torch.arange(c, device=clean_in.device).repeat(rows)
            got = fn(Block(clean_block(clean_in, inp, ch, g_in), ch))
            self._ok[n] = got.shape == (len(inp), g_out) and bool(rows_equal(got, clean_block(clean_out, inp, ch, g_out)).all())
        return self._ok[n]

    @staticmethod
    def _batch_norm(mod: nn.Module, b: Block) -> torch.Tensor:
        """Eval-mode batch norm of each row's channel ``ch``: rows become channels of one (1, R, g) input."""
        r, g = b.val.shape
        pick = lambda t: None if t is None else t.index_select(0, b.ch)  # noqa: E731
        out = F.batch_norm(b.val.reshape(1, r, g), pick(mod.running_mean), pick(mod.running_var), pick(mod.weight), pick(mod.bias), False, 0.0, mod.eps)
        return out.reshape(r, g)

    def _step(self, n: Any, env: dict[Any, Any], cache: dict[Any, Any], inp: torch.Tensor) -> Block | None:
        """Node ``n`` on blocks, or None when it mixes channels (or is not known here)."""
        tm = self.tm
        out_clean = cache.get(n)
        if n in tm.meta or n not in tm.tensor_nodes or not isinstance(out_clean, torch.Tensor) or self._ok.get(n) is False:
            return None
        if n.op == "call_module":
            mod = tm.modules[str(n.target)]
            if len(n.args) != 1 or n.kwargs or n.args[0] not in env or has_hooks(mod):
                return None  # a module with hooks runs on whole rows (a hook may look at the whole output)
            a = n.args[0]
            b, clean_in = env[a], cache[a]
            g = int(b.val.shape[1])
            if isinstance(mod, _EXACT_ELEMENTWISE) and out_clean.shape == clean_in.shape:
                return Block(mod(b.val.clone() if tm.inplace[n] else b.val), b.ch)
            if isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1:
                return b  # a row's flat positions do not move
            if not is_channel(clean_in, g) or out_clean.dim() != clean_in.dim() or out_clean.shape[1] != clean_in.shape[1]:
                return None
            g_out = out_clean[0].numel() // int(out_clean.shape[1])
            if isinstance(mod, _BATCH_NORMS) and plain_forward(mod, nn.modules.batchnorm._BatchNorm) and not mod.training and mod.running_mean is not None:
                fn = lambda blk: self._batch_norm(mod, blk)  # noqa: E731
            elif isinstance(mod, _POOLS) and not getattr(mod, "return_indices", False):
                shape = (1,) + tuple(clean_in.shape[2:])
                fn = lambda blk: run_pool_maps(mod, blk.val.reshape((len(blk.val),) + shape)).reshape(len(blk.val), -1)  # noqa: E731
                if isinstance(mod, _EXACT_POOLS):
                    return Block(fn(b), b.ch)
            else:
                return None
            if not self._checked(n, a, fn, cache, g, g_out):
                return None
            return Block(fn(b), b.ch)
        if n.op not in ("call_function", "call_method"):
            return None
        key = n.target if n.op == "call_function" else str(n.target)
        extra = set(n.kwargs) - {"inplace"}
        if key in _UNARY and len(n.args) == 1 and not extra and n.args[0] in env:
            b = env[n.args[0]]
            return Block(_UNARY[key](b.val), b.ch)
        if key in _FLATTEN and n.args and n.args[0] in env and not n.kwargs and tuple(n.args[1:]) in ((1,), (1, -1)):
            return env[n.args[0]]
        if key in _BINARY and len(n.args) == 2 and not n.kwargs:
            return self._binary(_BINARY[key], n, env, cache, inp)
        return None

    def _binary(self, fn: Any, n: Any, env: dict[Any, Any], cache: dict[Any, Any], inp: torch.Tensor) -> Block | None:
        """add/sub/mul of a block with a clean tensor of the same shape, a number, or the same block."""
        blocks = [env[a] for a in n.args if a in env]
        b = blocks[0]
        g = int(b.val.shape[1])
        vals = []
        for a in n.args:
            if a in env:
                o = env[a]
                if o.val.shape != b.val.shape or not (o is b or torch.equal(o.ch, b.ch)):
                    return None
                vals.append(o.val)
            elif isinstance(a, (int, float)) and not isinstance(a, bool):
                vals.append(a)
            elif hasattr(a, "op") and a in self.tm.dynamic and isinstance(cache.get(a), torch.Tensor) and cache[a].shape == cache[n].shape:
                vals.append(clean_block(cache[a], inp, b.ch, g))
            else:
                return None  # broadcast parameters, constants: leave to the whole-row replay
        return Block(fn(vals[0], vals[1]), b.ch)

    # ----- what a block is, for the replay loop -----
    def _equal_clean(self, n: Any, part: Block, cache: dict[Any, Any], inp: torch.Tensor) -> torch.Tensor:
        return rows_equal(part.val, clean_block(cache[n], inp, part.ch, int(part.val.shape[1])))

    def _whole(self, clean: torch.Tensor, part: Block, inp: torch.Tensor) -> torch.Tensor:
        return write_blocks(clean, part, inp)

    def _refuse(self, n: Any, part: Block) -> None:
        self._ok[n] = False  # never again on blocks


__all__ = ["BlockReplay", "Block", "clean_block", "write_blocks", "is_channel"]
