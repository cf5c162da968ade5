"""Spatial-window replay for the fast engine: replay only the part of each feature map a fault can reach.

A change at one element of an (N, C, H, W) activation reaches, after a k x k convolution, only a
k x k neighbourhood; elementwise nodes (batch norm in eval mode, ReLU, residual adds) keep the
window as it is. :class:`WindowReplay` carries each row's faulty values as a small crop with a
per-row origin, computes every supported downstream node on its window only (a convolution runs
the layer's own kernel on the zero-padded input region, read from the clean cache with the faulty
crops spliced in), and hands over to the full replay of :class:`~.fast_graph.TracedModel` (the
crops written into the clean maps) once a window would cover most of its map or a node needs the
whole map (global pooling, flatten, linear).

Cropped CPU kernels do not always round like the full ones (a 1x1 stride-2 convolution on small
crops does not, measured with torch 2.13), so every (node, crop size) is first checked on clean rows
-- a convolution gets the smallest larger size that is bit-exact, or whole maps -- and pinned clean
control rows go through the same windows: their crops must equal the clean values at *every*
windowed node, else that node and everything after it run on whole maps.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fast_graph import MIN_ROWS, PartialReplay, TracedModel, gather_rows, run_pool, rows_equal

#: a node runs on its window only while the window covers less than this share of its map
MAX_SHARE = 0.55

#: elementwise modules whose value at an element depends on that element only, by plain arithmetic
#: (no transcendental functions, whose vector and scalar paths may round apart); each crop size is
#: still checked once on clean rows
_ELEMENTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d)
_UNARY_FUNCTIONS = {torch.relu: torch.relu, F.relu: torch.relu}
_UNARY_METHODS = {"relu": torch.relu, "relu_": torch.relu}
_BINARY_FUNCTIONS = {
    operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add,
    operator.sub: torch.sub, operator.isub: torch.sub, torch.sub: torch.sub,
    operator.mul: torch.mul, operator.imul: torch.mul, torch.mul: torch.mul,
}
_BINARY_METHODS = {"add": torch.add, "add_": torch.add, "sub": torch.sub, "sub_": torch.sub, "mul": torch.mul, "mul_": torch.mul}


@dataclass
class Window:
    """Rows' values of one (N, C, H, W) node: ``crop`` (R, C, h, w) at per-row origins ``oy``, ``ox`` (host int arrays); clean elsewhere."""

    crop: torch.Tensor
    oy: np.ndarray
    ox: np.ndarray

    def take(self, idx: torch.Tensor) -> "Window":
        i = idx.cpu().numpy()
        return Window(self.crop.index_select(0, idx), self.oy[i], self.ox[i])


def _fmt(t: torch.Tensor) -> torch.memory_format:
    """The memory format of the clean map (kernels pick their algorithm, and rounding, by layout)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _runs(*cols: np.ndarray) -> np.ndarray:
    """Starts of the runs of rows with equal values in every column (rows of one fault share their origins)."""
    n = len(cols[0])
    if n == 0:
        return np.zeros(0, np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in cols:
        change[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(change)


#: beyond this many runs of equal origins per pass, regions are gathered element-wise in one call
_MAX_RUNS = 512


def read_region(
    clean: torch.Tensor, win: Window | None, inp: torch.Tensor, oy: np.ndarray, ox: np.ndarray, hh: int, ww: int,
    layout: torch.memory_format | None = None,
) -> torch.Tensor:
    """Rows' (R, C, hh, ww) values at per-row origins: ``win``'s crop where it lies, ``clean[inp]`` elsewhere, 0 off the map.

    The result has ``clean``'s memory layout unless ``layout`` names another.
    """
    H, W = int(clean.shape[2]), int(clean.shape[3])
    cols = (oy, ox) if win is None else (oy, ox, win.oy, win.ox)
    starts = _runs(*cols)
    if len(starts) > _MAX_RUNS:
        return _read_indexed(clean, win, inp, oy, ox, hh, ww, layout)
    ends = np.r_[starts[1:], len(oy)]
    pieces = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        y0, x0 = int(oy[a]), int(ox[a])
        ylo, yhi, xlo, xhi = max(y0, 0), min(y0 + hh, H), max(x0, 0), min(x0 + ww, W)
        if ylo >= yhi or xlo >= xhi:  # wholly off the map
            sl = clean.new_zeros((b - a, clean.shape[1], hh, ww))
        else:
            sl = clean[:, :, ylo:yhi, xlo:xhi].index_select(0, inp[a:b])
        if sl.shape[2:] != (hh, ww):
            sl = F.pad(sl, (xlo - x0, x0 + ww - xhi, ylo - y0, y0 + hh - yhi))
        if win is not None:
            wy, wx = int(win.oy[a]), int(win.ox[a])
            h, w = int(win.crop.shape[2]), int(win.crop.shape[3])
            iy0, iy1, ix0, ix1 = max(y0, wy), min(y0 + hh, wy + h), max(x0, wx), min(x0 + ww, wx + w)
            if iy0 < iy1 and ix0 < ix1:
                sl[:, :, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = win.crop[a:b, :, iy0 - wy : iy1 - wy, ix0 - wx : ix1 - wx]
        pieces.append(sl)
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return out.contiguous(memory_format=layout or _fmt(clean))


#: channels-last (N*H*W, C) tables of recently read clean maps, keyed by the map's id
_TABLES: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _pixel_table(clean: torch.Tensor) -> torch.Tensor:
    """``clean`` as an (N*H*W, C) table, one row per pixel (a view when the map is channels-last)."""
    hit = _TABLES.get(id(clean))
    if hit is not None and hit[0] is clean:
        return hit[1]
    table = clean.permute(0, 2, 3, 1).reshape(-1, clean.shape[1])
    if len(_TABLES) >= 16:
        _TABLES.clear()
    _TABLES[id(clean)] = (clean, table)
    return table


def forget_tables() -> None:
    """Drop the pixel tables of clean maps (called when a block's clean cache is dropped, so memory stays bounded)."""
    _TABLES.clear()


def _read_indexed(
    clean: torch.Tensor, win: Window | None, inp: torch.Tensor, oy: np.ndarray, ox: np.ndarray, hh: int, ww: int,
    layout: torch.memory_format | None = None,
) -> torch.Tensor:
    """:func:`read_region` with one gather of pixel rows (many distinct origins): the clean map's, then the crop's over them."""
    dev = clean.device
    N, C, H, W = (int(d) for d in clean.shape)
    r = len(inp)
    ys = torch.as_tensor(oy, device=dev)[:, None] + torch.arange(hh, device=dev)  # (R, hh)
    xs = torch.as_tensor(ox, device=dev)[:, None] + torch.arange(ww, device=dev)  # (R, ww)
    valid = (((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]).reshape(-1)
    idx = (inp[:, None, None] * H + ys.clamp(0, H - 1)[:, :, None]) * W + xs.clamp(0, W - 1)[:, None, :]
    g = _pixel_table(clean).index_select(0, idx.reshape(-1))
    if win is not None:
        h, w = int(win.crop.shape[2]), int(win.crop.shape[3])
        cy = ys - torch.as_tensor(win.oy, device=dev)[:, None]
        cx = xs - torch.as_tensor(win.ox, device=dev)[:, None]
        inside = (((cy >= 0) & (cy < h))[:, :, None] & ((cx >= 0) & (cx < w))[:, None, :]).reshape(-1)
        rr = torch.arange(r, device=dev)[:, None, None]
        cidx = ((rr * h + cy.clamp(0, h - 1)[:, :, None]) * w + cx.clamp(0, w - 1)[:, None, :]).reshape(-1)
        sel = torch.nonzero(inside).squeeze(1)
        g.index_copy_(0, sel, win.crop.permute(0, 2, 3, 1).reshape(-1, C).index_select(0, cidx.index_select(0, sel)))
    if hh and ww and (int(oy.min()) < 0 or int(oy.max()) + hh > H or int(ox.min()) < 0 or int(ox.max()) + ww > W):
        g.masked_fill_(~valid[:, None], 0)
    return g.view(r, hh, ww, C).permute(0, 3, 1, 2).contiguous(memory_format=layout or _fmt(clean))


def materialize(clean: torch.Tensor, win: Window, inp: torch.Tensor) -> torch.Tensor:
    """The rows' full maps: ``clean[inp]`` (in its layout) with each row's crop written at its origin."""
    full = gather_rows(clean, inp)
    h, w = int(win.crop.shape[2]), int(win.crop.shape[3])
    starts = _runs(win.oy, win.ox)
    if len(starts) <= _MAX_RUNS:
        for a, b in zip(starts.tolist(), np.r_[starts[1:], len(win.oy)].tolist()):
            y0, x0 = int(win.oy[a]), int(win.ox[a])
            full[a:b, :, y0 : y0 + h, x0 : x0 + w] = win.crop[a:b]
        return full
    dev = clean.device
    rr = torch.arange(len(inp), device=dev)[:, None, None]
    yy = (torch.as_tensor(win.oy, device=dev)[:, None] + torch.arange(h, device=dev))[:, :, None]
    xx = (torch.as_tensor(win.ox, device=dev)[:, None] + torch.arange(w, device=dev))[:, None, :]
    full.permute(0, 2, 3, 1)[rr, yy, xx] = win.crop.permute(0, 2, 3, 1)
    return full


def _span(lo: np.ndarray, size: int, k_eff: int, stride: int, pad: int, out_len: int) -> tuple[np.ndarray, int]:
    """Origins and length of the output window of a sliding op (kernel extent ``k_eff``) over input rows [lo, lo+size)."""
    n = min(out_len, (size - 1 + k_eff - 1) // stride + 1)
    first = -((-(lo + pad - (k_eff - 1))) // stride)  # ceil division
    return np.clip(first, 0, out_len - n), n


class WindowReplay(PartialReplay):
    """Replays a fault's downstream cone on per-row windows while they stay small (see the module docstring)."""

    def __init__(self, tm: TracedModel) -> None:
        super().__init__(tm)
        #: (node, h, w) -> the smallest window size >= (h, w) whose cropped kernel reproduced the clean values, or None
        self._sizes: dict[tuple[Any, int, int], tuple[int, int] | None] = {}

    # ----- one node on windows -----
    def _sliding(self, n: Any, mod: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """(kernel, stride, padding, dilation) of a Conv2d / MaxPool2d node that can run on a window, else None."""
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                return None
            return mod.kernel_size, mod.stride, mod.padding, mod.dilation  # type: ignore[return-value]
        if isinstance(mod, nn.MaxPool2d):
            if mod.ceil_mode or mod.return_indices or mod.padding not in (0, (0, 0)) or mod.dilation not in (1, (1, 1)):
                return None
            pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
            return pair(mod.kernel_size), pair(mod.stride if mod.stride is not None else mod.kernel_size), (0, 0), (1, 1)
        return None

    @staticmethod
    def _apply(mod: nn.Module, region: torch.Tensor) -> torch.Tensor:
        if isinstance(mod, nn.Conv2d):
            return F.conv2d(region, mod.weight, mod.bias, mod.stride, 0, mod.dilation, mod.groups)
        return run_pool(mod, region)

    def _size(self, n: Any, mod: nn.Module, geo: tuple, nh: int, nw: int, a: Any, cache: dict[Any, Any]) -> tuple[int, int] | None:
        """The window size to use for ``n`` (at least nh x nw): one whose cropped kernel is bit-exact on clean rows."""
        key = (n, nh, nw)
        if key in self._sizes:
            return self._sizes[key]
        (k, s, p, d) = geo
        clean_in, clean_out = cache[a], cache[n]
        OH, OW = int(clean_out.shape[2]), int(clean_out.shape[3])
        rows = torch.arange(min(MIN_ROWS, int(clean_in.shape[0])), device=clean_in.device)
        found = None
        h, w = nh, nw
        while h * w < MAX_SHARE * OH * OW:
            ok = True
            for oy, ox in ((0, 0), (OH - h, OW - w), ((OH - h) // 2, (OW - w) // 2)):
                region = read_region(clean_in, None, rows, np.full(len(rows), oy * s[0] - p[0]), np.full(len(rows), ox * s[1] - p[1]),
                                     (h - 1) * s[0] + d[0] * (k[0] - 1) + 1, (w - 1) * s[1] + d[1] * (k[1] - 1) + 1)
                want = clean_out.index_select(0, rows)[:, :, oy : oy + h, ox : ox + w]
                if not bool(rows_equal(self._apply(mod, region), want).all()):
                    ok = False
                    break
            if ok:
                found = (h, w)
                break
            h, w = min(h + 1, OH), min(w + 1, OW)
        self._sizes[key] = found
        return found

    def _elementwise_ok(self, n: Any, mod: nn.Module, a: Any, h: int, w: int, cache: dict[Any, Any]) -> bool:
        """Does ``mod`` on h x w crops of clean rows reproduce the clean values bit for bit (checked once per size)?"""
        key = (n, h, w)
        if key not in self._sizes:
            clean_in, clean_out = cache[a], cache[n]
            rows = torch.arange(min(MIN_ROWS, int(clean_in.shape[0])), device=clean_in.device)
            oy = np.full(len(rows), (int(clean_in.shape[2]) - h) // 2)
            ox = np.full(len(rows), (int(clean_in.shape[3]) - w) // 2)
            got = mod(read_region(clean_in, None, rows, oy, ox, h, w))
            ok = bool(rows_equal(got, read_region(clean_out, None, rows, oy, ox, h, w)).all())
            self._sizes[key] = (h, w) if ok else None
        return self._sizes[key] is not None

    def _step(self, n: Any, env: dict[Any, Any], cache: dict[Any, Any], inp: torch.Tensor) -> Window | None:
        """Node ``n`` on windows, or None when it needs the whole map (or its window would cover most of it)."""
        tm = self.tm
        out_clean = cache.get(n)
        if not isinstance(out_clean, torch.Tensor) or out_clean.dim() != 4:
            return None
        OH, OW = int(out_clean.shape[2]), int(out_clean.shape[3])
        if n.op == "call_module":
            mod = tm.modules[str(n.target)]
            if len(n.args) != 1 or n.kwargs or n.args[0] not in env:
                return None
            a = n.args[0]
            win = env[a]
            if isinstance(mod, _ELEMENTWISE_MODULES):
                if not self._elementwise_ok(n, mod, a, int(win.crop.shape[2]), int(win.crop.shape[3]), cache):
                    return None
                return Window(mod(win.crop.clone() if tm.inplace[n] else win.crop), win.oy, win.ox)
            geo = self._sliding(n, mod)
            if geo is None:
                return None
            k, s, p, d = geo
            ke = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
            _, nh = _span(win.oy, int(win.crop.shape[2]), ke[0], s[0], p[0], OH)
            _, nw = _span(win.ox, int(win.crop.shape[3]), ke[1], s[1], p[1], OW)
            if nh * nw >= MAX_SHARE * OH * OW:
                return None
            size = self._size(n, mod, geo, nh, nw, a, cache)
            if size is None:
                return None
            nh, nw = size
            first_y = -((-(win.oy + p[0] - (ke[0] - 1))) // s[0])
            first_x = -((-(win.ox + p[1] - (ke[1] - 1))) // s[1])
            oy, ox = np.clip(first_y, 0, OH - nh), np.clip(first_x, 0, OW - nw)
            # max pooling reads its regions channels-last (the faster kernel; see run_pool), its output goes back to the clean layout
            layout = torch.channels_last if isinstance(mod, nn.MaxPool2d) else None
            region = read_region(cache[a], win, inp, oy * s[0] - p[0], ox * s[1] - p[1], (nh - 1) * s[0] + ke[0], (nw - 1) * s[1] + ke[1], layout)
            return Window(self._apply(mod, region).contiguous(memory_format=_fmt(out_clean)), oy, ox)
        if n.op in ("call_function", "call_method"):
            table_u = _UNARY_FUNCTIONS if n.op == "call_function" else _UNARY_METHODS
            table_b = _BINARY_FUNCTIONS if n.op == "call_function" else _BINARY_METHODS
            key = n.target if n.op == "call_function" else str(n.target)
            if key in table_u and len(n.args) == 1 and set(n.kwargs) <= {"inplace"} and n.args[0] in env:
                win = env[n.args[0]]
                return Window(table_u[key](win.crop), win.oy, win.ox)
            if key in table_b and len(n.args) == 2 and not n.kwargs:
                return self._binary(table_b[key], n, env, cache, inp, OH, OW)
        return None

    def _binary(self, fn: Any, n: Any, env: dict[Any, Any], cache: dict[Any, Any], inp: torch.Tensor, OH: int, OW: int) -> Window | None:
        wins = [env[a] for a in n.args if a in env]
        if not wins:
            return None
        shape = cache[n].shape
        for a in n.args:
            if a in env:
                continue
            if not hasattr(a, "op") or a not in self.tm.dynamic or not isinstance(cache.get(a), torch.Tensor) or cache[a].shape != shape:
                return None  # scalars and broadcast parameters: leave to the full replay
        lo_y = np.min([w.oy for w in wins], axis=0)
        lo_x = np.min([w.ox for w in wins], axis=0)
        hi_y = np.max([w.oy + w.crop.shape[2] for w in wins], axis=0)
        hi_x = np.max([w.ox + w.crop.shape[3] for w in wins], axis=0)
        nh, nw = int((hi_y - lo_y).max()), int((hi_x - lo_x).max())
        if nh * nw >= MAX_SHARE * OH * OW:
            return None
        oy, ox = np.minimum(lo_y, OH - nh), np.minimum(lo_x, OW - nw)
        vals = []
        for a in n.args:
            w = env.get(a)
            if w is not None and w.crop.shape[2:] == (nh, nw) and np.array_equal(w.oy, oy) and np.array_equal(w.ox, ox):
                vals.append(w.crop)
            else:
                vals.append(read_region(cache[a], w, inp, oy, ox, nh, nw))
        return Window(fn(vals[0], vals[1]), oy, ox)

    # ----- what a window is, for the replay loop -----
    def _equal_clean(self, n: Any, part: Window, cache: dict[Any, Any], inp: torch.Tensor) -> torch.Tensor:
        h, w = int(part.crop.shape[2]), int(part.crop.shape[3])
        return rows_equal(part.crop, read_region(cache[n], None, inp, part.oy, part.ox, h, w))

    def _whole(self, clean: torch.Tensor, part: Window, inp: torch.Tensor) -> torch.Tensor:
        return materialize(clean, part, inp)

    def _refuse(self, n: Any, part: Window) -> None:
        self._sizes[(n, int(part.crop.shape[2]), int(part.crop.shape[3]))] = None  # never again on this window size


__all__ = ["WindowReplay", "Window", "read_region", "materialize", "forget_tables", "MAX_SHARE"]
