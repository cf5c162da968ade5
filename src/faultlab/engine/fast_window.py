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

from .fast_graph import MIN_ROWS, PartialReplay, TracedModel, gather_rows, has_hooks, plain_forward, run_pool, rows_equal

#: a node runs on its window only while the window covers less than this share of its map
MAX_SHARE = 0.55

#: elementwise modules whose value at an element depends on that element only, by plain arithmetic
#: (no transcendental functions, whose vector and scalar paths may round apart); each crop size is
#: still checked once on clean rows
_ELEMENTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d)
#: of those, the ones that only select or pass values: the same bits in any memory layout
_ANY_LAYOUT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d)
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


def read_region(
    clean: torch.Tensor, win: Window | None, inp: torch.Tensor, oy: np.ndarray, ox: np.ndarray, hh: int, ww: int,
    layout: torch.memory_format | None = None, tables: "MapTables | None" = None, any_layout: bool = False,
) -> torch.Tensor:
    """Rows' (R, C, hh, ww) values at per-row origins: ``win``'s crop where it lies, ``clean[inp]`` elsewhere, 0 off the map.

    Regions are gathered as runs of contiguous memory: from a zero-bordered channels-last copy of
    the map when ``tables`` has (or has room for) one -- long runs, one gather --, else straight from
    the map, rows that reach past its edge in a few groups by how far they reach. The crops are
    then written over them. The result has ``clean``'s memory layout unless ``layout`` names another,
    or is left in whichever layout it was gathered in with ``any_layout`` (for comparisons).
    """
    N, C, H, W = (int(d) for d in clean.shape)
    r = len(inp)
    src_fmt = _fmt(clean)
    if r == 0 or hh == 0 or ww == 0:
        return clean.new_zeros((r, C, hh, ww)).contiguous(memory_format=layout or src_fmt)
    m = max(0, -int(oy.min()), int(oy.max()) + hh - H, -int(ox.min()), int(ox.max()) + ww - W)
    hit = None if tables is None else tables.get(clean, m)
    if hit is not None:
        table, b = hit  # (N, H + 2b, W + 2b, C)
        g = _gather_runs(table.permute(0, 3, 1, 2), inp, oy + b, ox + b, hh, ww)
    else:
        g = _read_direct(clean, inp, oy, ox, hh, ww)
    if win is not None:
        _splice(g, win, oy, ox)
    return g if any_layout else g.contiguous(memory_format=layout or src_fmt)


def _read_direct(clean: torch.Tensor, inp: torch.Tensor, oy: np.ndarray, ox: np.ndarray, hh: int, ww: int) -> torch.Tensor:
    """:func:`read_region`'s clean part read from the map itself, in its layout (0 off the map)."""
    N, C, H, W = (int(d) for d in clean.shape)
    r, src_fmt = len(inp), _fmt(clean)
    src = clean if clean.is_contiguous(memory_format=src_fmt) else clean.contiguous(memory_format=src_fmt)
    top, bottom = np.clip(-oy, 0, hh), np.clip(oy + hh - H, 0, hh)
    left, right = np.clip(-ox, 0, ww), np.clip(ox + ww - W, 0, ww)
    if not (top.any() or bottom.any() or left.any() or right.any()):
        return _gather_runs(src, inp, oy, ox, hh, ww)
    # some rows reach past the edge: gather the part on the map, group by group, into zeros
    g = torch.zeros((r, C, hh, ww), dtype=clean.dtype, device=clean.device).contiguous(memory_format=src_fmt)
    clips, which = np.unique(np.stack([top, bottom, left, right], axis=1), axis=0, return_inverse=True)
    which = which.reshape(-1)
    for k, (t, b, lo, ri) in enumerate(clips.tolist()):
        hc, wc = hh - t - b, ww - lo - ri
        if hc <= 0 or wc <= 0:
            continue  # wholly off the map: zeros
        if len(clips) == 1:
            g[:, :, t : t + hc, lo : lo + wc] = _gather_runs(src, inp, oy + t, ox + lo, hc, wc)
            continue
        rows = np.flatnonzero(which == k)
        rt = torch.as_tensor(rows, device=clean.device)
        piece = _gather_runs(src, inp.index_select(0, rt), oy[rows] + t, ox[rows] + lo, hc, wc)
        g.index_copy_(0, rt, F.pad(piece, (lo, ri, t, b)))
    return g


class MapTables:
    """Zero-bordered channels-last copies of clean maps, made on a map's first read while they fit in ``budget`` bytes.

    Regions of small channels-first maps are many short runs; from such a copy they are a few
    long ones, several times faster to gather. Copies count against the engine's memory budget,
    and a map that does not fit is read directly (no eviction: no copy is made twice per block).
    """

    def __init__(self, budget: int = 0) -> None:
        self.budget = budget
        self.used = 0
        self._tables: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def get(self, clean: torch.Tensor, margin: int) -> tuple[torch.Tensor, int] | None:
        """(table, border) with border >= ``margin`` for ``clean``, or None when no copy fits."""
        hit = self._tables.get(id(clean))
        if hit is not None and hit[0] is clean and hit[1] >= margin:
            return hit[2], hit[1]
        N, C, H, W = (int(d) for d in clean.shape)
        size = N * C * (H + 2 * margin) * (W + 2 * margin) * clean.element_size()
        old = hit[2].numel() * hit[2].element_size() if hit is not None and hit[0] is clean else 0
        if self.used - old + size > self.budget:
            return None
        table = clean.permute(0, 2, 3, 1)
        if margin:
            table = F.pad(table, (0, 0, margin, margin, margin, margin))
        self._tables[id(clean)] = (clean, margin, table.contiguous())
        self.used += size - old
        return self._tables[id(clean)][2], margin

    def clear(self) -> None:
        """Drop every copy (the engine calls this when a block's clean cache is dropped)."""
        self._tables.clear()
        self.used = 0

    def __len__(self) -> int:
        return len(self._tables)


def _gather_runs(src: torch.Tensor, inp: torch.Tensor, oy: np.ndarray, ox: np.ndarray, hh: int, ww: int) -> torch.Tensor:
    """Rows' (R, C, hh, ww) regions lying wholly on the map ``src`` (contiguous, or channels-last), in ``src``'s layout.

    A region is a set of runs of contiguous memory: hh runs of ww*C values channels-last, C*hh
    runs of ww values channels-first. One ``index_select`` over a strided view whose rows are all
    runs of that length gathers them all.
    """
    N, C, H, W = (int(d) for d in src.shape)
    r, dev = len(inp), src.device
    ys = torch.as_tensor(oy, device=dev)[:, None] + torch.arange(hh, device=dev)  # (R, hh)
    xs = torch.as_tensor(ox, device=dev)[:, None]
    if not src.is_contiguous():  # channels-last: pixel p's run holds pixels p..p+ww-1, all channels
        runs = src.permute(0, 2, 3, 1).as_strided((N * H * W - (ww - 1), ww * C), (C, 1))
        starts = (inp[:, None] * H + ys) * W + xs
        return runs.index_select(0, starts.reshape(-1)).view(r, hh, ww, C).permute(0, 3, 1, 2)
    runs = src.as_strided((N * C * H * W - (ww - 1), ww), (1, 1))
    chan = torch.arange(C, device=dev)[None, :, None]
    starts = ((inp[:, None, None] * C + chan) * H + ys[:, None, :]) * W + xs[:, :, None]
    return runs.index_select(0, starts.reshape(-1)).view(r, C, hh, ww)


def _splice(g: torch.Tensor, win: Window, oy: np.ndarray, ox: np.ndarray) -> None:
    """Write ``win``'s crop into the rows' regions ``g`` (R, C, hh, ww; contiguous or channels-last) at origins (oy, ox), in place."""
    r, c, hh, ww = (int(d) for d in g.shape)
    h, w = int(win.crop.shape[2]), int(win.crop.shape[3])
    dy, dx = win.oy - oy, win.ox - ox  # crop origin inside the region, per row
    inside = dy.min() >= 0 and (dy + h).max() <= hh and dx.min() >= 0 and (dx + w).max() <= ww
    if inside and (dy == dy[0]).all() and (dx == dx[0]).all():  # one offset for every row: one strided copy
        y, x = int(dy[0]), int(dx[0])
        g[:, :, y : y + h, x : x + w] = win.crop
        return
    if inside:
        _write_crops(g, win.crop, dy, dx)
        return
    # otherwise pixel by pixel, keeping the pixels that land inside the region
    dev = g.device
    ys = torch.as_tensor(dy, device=dev)[:, None] + torch.arange(h, device=dev)  # (R, h)
    xs = torch.as_tensor(dx, device=dev)[:, None] + torch.arange(w, device=dev)  # (R, w)
    rows = torch.arange(r, device=dev)[:, None, None]
    channels_first = g.is_contiguous()
    # where each crop pixel lands: its pixel's index channels-last, its channel-0 element's channels-first
    span = c * hh if channels_first else hh
    at = ((rows * span + ys.clamp(0, hh - 1)[:, :, None]) * ww + xs.clamp(0, ww - 1)[:, None, :]).reshape(-1)  # (R*h*w,)
    src = win.crop.permute(0, 2, 3, 1).reshape(-1, c)  # (R*h*w, C), pixels in the order of ``at``
    if not inside:  # keep only the pixels that land inside the region
        ok = torch.nonzero((((ys >= 0) & (ys < hh))[:, :, None] & ((xs >= 0) & (xs < ww))[:, None, :]).reshape(-1)).squeeze(1)
        at, src = at.index_select(0, ok), src.index_select(0, ok)
    if channels_first:  # element (row, channel, pixel): channel k is k*hh*ww further on
        g.view(-1).index_copy_(0, (at[:, None] + torch.arange(c, device=dev) * (hh * ww)).reshape(-1), src.reshape(-1))
    else:  # one pixel is C contiguous values
        g.permute(0, 2, 3, 1).view(-1, c).index_copy_(0, at, src)


#: rows per run of one crop position (on average) from which crops are written one run at a time
SLICE_RUN_ROWS = 128


def _write_crops(g: torch.Tensor, crop: torch.Tensor, dy: np.ndarray, dx: np.ndarray) -> None:
    """Write row r's ``crop[r]`` (C, h, w) into ``g[r]`` (C, H, W) at offset (dy[r], dx[r]), every crop lying inside, in place.

    ``g``'s rows must be dense (contiguous or channels-last). Rows of one fault share a position.
    Where such runs are long and a crop row is at least 3 values contiguous in ``g``, each run is
    one strided slice copy. Otherwise one ``scatter_`` along each row: the element offsets of a
    crop depend only on its position, so they are built once per run and repeated (a slice per
    short run, or per run of a 2x2 crop copying 2 values at a time, is several times slower).
    """
    r, c, H, W = (int(v) for v in g.shape)
    h, w = int(crop.shape[2]), int(crop.shape[3])
    if r == 0:
        return
    dev = g.device
    if not (g.is_contiguous() or g.is_contiguous(memory_format=torch.channels_last)):  # other layouts: pixel by pixel, one call
        rr = torch.arange(r, device=dev)[:, None, None]
        yy = (torch.as_tensor(dy, device=dev)[:, None] + torch.arange(h, device=dev))[:, :, None]
        xx = (torch.as_tensor(dx, device=dev)[:, None] + torch.arange(w, device=dev))[:, None, :]
        g.permute(0, 2, 3, 1)[rr, yy, xx] = crop.permute(0, 2, 3, 1)
        return
    starts = _runs(dy, dx)  # rows of one fault share a position
    chunk = w * c if not g.is_contiguous() else w  # values a crop row covers contiguously in g
    if r >= SLICE_RUN_ROWS * len(starts) and chunk >= 3 and c * h * w >= 64:
        # long runs: one strided copy per run, no index tensor (measured on 32,768 rows of 3x3 to 5x5 crops in
        # runs of 256 rows: 1.5-4x faster than the scatter below, which wins on short runs and 2-wide crops)
        for a, b in zip(starts.tolist(), np.r_[starts[1:], r].tolist()):
            y, x = int(dy[a]), int(dx[a])
            g[a:b, :, y : y + h, x : x + w] = crop[a:b]
        return
    s0, s1, s2, s3 = g.stride()
    ar = lambda n, st: torch.arange(n, device=dev) * st  # noqa: E731
    within = (ar(c, s1)[:, None, None] + ar(h, s2)[None, :, None] + ar(w, s3)[None, None, :]).reshape(-1)  # (C*h*w,) in crop order
    # offsets once per run of equal positions, repeated over its rows
    y0 = torch.as_tensor(dy[starts], device=dev)
    x0 = torch.as_tensor(dx[starts], device=dev)
    offsets = (y0 * s2 + x0 * s3)[:, None] + within[None, :]  # (runs, C*h*w)
    lengths = torch.as_tensor(np.diff(np.r_[starts, r]), device=dev)
    idx = offsets.repeat_interleave(lengths, dim=0) if len(starts) < r else offsets
    g.as_strided((r, c * H * W), (s0, 1)).scatter_(1, idx, crop.reshape(r, -1))


def materialize(clean: torch.Tensor, win: Window, inp: torch.Tensor) -> torch.Tensor:
    """The rows' full maps: ``clean[inp]`` (in its layout) with each row's crop written at its origin."""
    full = gather_rows(clean, inp)
    _write_crops(full, win.crop, win.oy, win.ox)
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
        #: (node, h, w) -> is the node's cropped kernel bit-exact on regions in either memory layout?
        self._any_layout: dict[tuple[Any, int, int], bool] = {}
        #: copies of the clean maps regions are read from (the engine sets the budget, and clears them per block)
        self.tables = MapTables()

    # ----- one node on windows -----
    def _sliding(self, n: Any, mod: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """(kernel, stride, padding, dilation) of a Conv2d / MaxPool2d node that can run on a window, else None."""
        if isinstance(mod, nn.Conv2d):
            if not plain_forward(mod, nn.Conv2d) or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
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

        def exact(h: int, w: int, layout: torch.memory_format | None) -> bool:
            for oy, ox in ((0, 0), (OH - h, OW - w), ((OH - h) // 2, (OW - w) // 2)):
                region = read_region(clean_in, None, rows, np.full(len(rows), oy * s[0] - p[0]), np.full(len(rows), ox * s[1] - p[1]),
                                     (h - 1) * s[0] + d[0] * (k[0] - 1) + 1, (w - 1) * s[1] + d[1] * (k[1] - 1) + 1, layout)
                want = clean_out.index_select(0, rows)[:, :, oy : oy + h, ox : ox + w]
                if not bool(rows_equal(self._apply(mod, region), want).all()):
                    return False
            return True

        while h * w < MAX_SHARE * OH * OW:
            if exact(h, w, None):
                found = (h, w)
                # a convolution exact on regions of the other layout too takes them as they are read (no layout copies)
                other = torch.channels_last if _fmt(clean_in) == torch.contiguous_format else torch.contiguous_format
                self._any_layout[(n, h, w)] = isinstance(mod, nn.Conv2d) and exact(h, w, other)
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
            if len(n.args) != 1 or n.kwargs or n.args[0] not in env or has_hooks(mod):
                return None  # a module with hooks runs on whole maps (a hook may look at the whole output)
            a = n.args[0]
            win = env[a]
            if isinstance(mod, _ELEMENTWISE_MODULES):
                if not self._elementwise_ok(n, mod, a, int(win.crop.shape[2]), int(win.crop.shape[3]), cache):
                    return None
                crop = win.crop
                if not isinstance(mod, _ANY_LAYOUT_MODULES):  # arithmetic is checked in the clean layout only
                    crop = crop.contiguous(memory_format=_fmt(cache[a]))
                return Window(mod(crop.clone() if tm.inplace[n] and crop is win.crop else crop), win.oy, win.ox)
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
            any_layout = self._any_layout.get((n, nh, nw), False)
            region = read_region(cache[a], win, inp, oy * s[0] - p[0], ox * s[1] - p[1], (nh - 1) * s[0] + ke[0], (nw - 1) * s[1] + ke[1], layout, self.tables,
                                 any_layout=any_layout)
            out = self._apply(mod, region)
            # crops stay in the layout they came out in where the next steps do not care (see _ANY_LAYOUT_MODULES)
            return Window(out if any_layout or isinstance(mod, nn.MaxPool2d) else out.contiguous(memory_format=_fmt(out_clean)), oy, ox)
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
                vals.append(read_region(cache[a], w, inp, oy, ox, nh, nw, tables=self.tables))
        return Window(fn(vals[0], vals[1]), oy, ox)

    # ----- what a window is, for the replay loop -----
    def _equal_clean(self, n: Any, part: Window, cache: dict[Any, Any], inp: torch.Tensor) -> torch.Tensor:
        h, w = int(part.crop.shape[2]), int(part.crop.shape[3])
        return rows_equal(part.crop, read_region(cache[n], None, inp, part.oy, part.ox, h, w, tables=self.tables, any_layout=True))

    def _whole(self, clean: torch.Tensor, part: Window, inp: torch.Tensor) -> torch.Tensor:
        return materialize(clean, part, inp)

    def _refuse(self, n: Any, part: Window) -> None:
        self._sizes[(n, int(part.crop.shape[2]), int(part.crop.shape[3]))] = None  # never again on this window size


__all__ = ["WindowReplay", "Window", "MapTables", "read_region", "materialize", "MAX_SHARE"]
