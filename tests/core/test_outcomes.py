"""Outcome classification against an independent numpy computation; regression tolerance end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from faultlab.cli import main
from faultlab.outcomes import DUE, MASKED, NON_CRITICAL, SDC1, SDC5, aggregate, classify, classify_pairs, in_top_k, pair_flags


def reference(golden: np.ndarray, faulty: np.ndarray, k: int = 5, tol: float | None = None) -> np.ndarray:
    out = []
    kk = min(k, golden.shape[1])
    for g, f in zip(golden, faulty):
        if g.tobytes() == f.tobytes():
            out.append(MASKED)
        elif not np.isfinite(f).all():
            out.append(DUE)
        elif tol is not None or golden.shape[1] == 1:
            t = 0.0 if tol is None else tol
            out.append(NON_CRITICAL if np.abs(f.astype(np.float64) - g).max() <= t * np.abs(g.astype(np.float64)).max() else SDC1)
        elif np.argmax(f) == np.argmax(g):
            out.append(NON_CRITICAL)
        else:
            top = np.argsort(-f, kind="stable")[:kk]
            out.append(SDC1 if np.argmax(g) in top else SDC5)
    return np.array(out, np.uint8)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_classify_matches_reference(n_classes, n_rows, seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n_rows, n_classes)).astype(np.float32)
    f = g.copy()
    kind = rng.integers(0, 4, size=n_rows)
    for i, c in enumerate(kind):
        if c == 1:
            f[i, rng.integers(n_classes)] += np.float32(rng.normal() * 0.01)
        elif c == 2:
            f[i] = rng.permutation(f[i])
        elif c == 3:
            f[i, rng.integers(n_classes)] = np.inf if rng.random() < 0.5 else np.nan
    got = classify(torch.from_numpy(g), torch.from_numpy(f)).numpy()
    np.testing.assert_array_equal(got, reference(g, f))


def test_fewer_than_five_classes_use_top_k_of_all_classes():
    g = torch.tensor([[3.0, 2.0, 1.0]])
    f = torch.tensor([[1.0, 3.0, 2.0]])  # golden top-1 is now last of 3: in the top-3, so SDC-1 not SDC-5
    assert classify(g, f).tolist() == [SDC1]
    g4 = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]])
    f4 = torch.tensor([[0.0, 3.0, 2.0, 1.0, 0.5, 4.0]])  # golden top-1 at rank 6 of 6: outside the top-5
    assert classify(g4, f4).tolist() == [SDC5]


def test_regression_tolerance():
    g = torch.tensor([[100.0], [100.0], [100.0], [0.0]])
    f = torch.tensor([[100.0], [100.5], [103.0], [0.0]])
    assert classify(g, f, tolerance=0.01).tolist() == [MASKED, NON_CRITICAL, SDC1, MASKED]
    assert classify(g, f).tolist() == [MASKED, SDC1, SDC1, MASKED]  # no tolerance: any change is an SDC


class Forecaster(torch.nn.Module):
    """A one-output regression model, like a price forecaster."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))) + 50.0


def forecaster() -> Forecaster:
    return Forecaster()


def test_regression_campaign_through_cli(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.normal(size=40).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "f.csv").write_text('Injection,Layer,TensorIndex,Bit\n0,fc2,"(0, 3)",30\n1,fc2,"(0, 3)",2\n2,fc1,"(1, 1)",20\n')
    model_ref = f"{__file__}:forecaster"
    with pytest.raises(SystemExit) as e:
        main(["run", "--model", model_ref, "--data", str(tmp_path / "d.npz"), "--faults", str(tmp_path / "f.csv"),
              "--out", str(tmp_path / "o"), "--tolerance", "0.001", "--engine", "exact"])
    assert e.value.code in (0, None), capsys.readouterr().err
    rep = pd.read_csv(tmp_path / "o" / "report.csv")
    assert (rep["criterion"] == "relative error <= 0.001").all()
    # independent: copy-flip-forward and the relative-error rule
    import copy

    base = forecaster().eval()
    with torch.no_grad():
        golden = base(torch.tensor(x)).numpy()
    for fid, layer, idx, bit in [(0, "fc2", (0, 3), 30), (1, "fc2", (0, 3), 2), (2, "fc1", (1, 1), 20)]:
        m = copy.deepcopy(base)
        w = getattr(m, layer).weight.data.numpy()
        w[idx] = np.array([w[idx]], np.float32).view(np.uint32).__xor__(np.uint32(1 << bit)).view(np.float32)[0]
        with torch.no_grad():
            faulty = m(torch.tensor(x)).numpy()
        codes = reference(golden, faulty, tol=0.001)
        row = rep[rep["inj_id"] == fid].iloc[0]
        assert row["critical"] == int((codes == SDC1).sum())
        assert row["masked"] + row["non_critical"] == int((codes <= NON_CRITICAL).sum())


def ref_in_top_k(row: np.ndarray, c: int, k: int) -> bool:
    """Rank by sorting: NaN first, then higher scores, ties to the lower index (as argmax)."""
    order = sorted(range(len(row)), key=lambda j: (not np.isnan(row[j]), 0.0 if np.isnan(row[j]) else -float(row[j]), j))
    return order.index(c) < k


def ref_flags(golden: np.ndarray, faulty: np.ndarray, codes: np.ndarray, labels: np.ndarray | None, k: int = 5) -> np.ndarray:
    out = []
    for g, f, code, i in zip(golden, faulty, codes, range(len(codes))):
        if labels is None or f.shape[0] == 1:
            out.append(15 if code <= NON_CRITICAL else 0)
            continue
        kk = min(k, f.shape[0])
        g_top = int(np.argmax(g))
        f_top = int(np.argmax(f))  # numpy's argmax, like torch's, returns the first NaN or the first maximum
        bits = [f_top == labels[i], ref_in_top_k(f, int(labels[i]), kk), f_top == g_top, ref_in_top_k(f, g_top, kk)]
        out.append(sum(int(b) << n for n, b in enumerate(bits)))
    return np.array(out, np.uint8)


def tricky_rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    golden = torch.randn(400, 10, generator=g)
    faulty = golden.clone()
    faulty[:100] += 0.3 * torch.randn(100, 10, generator=g)  # some flips of the ranking
    faulty[100:150] = torch.round(faulty[100:150])  # ties
    faulty[150:160, 3] = torch.nan
    faulty[155:158, 7] = torch.nan  # two NaNs in a row
    faulty[160:170, 1] = torch.inf
    faulty[170:180, 2] = -torch.inf
    faulty[180:190] = golden[180:190].roll(1, dims=1)
    faulty[190:200, 0] = -faulty[190:200, 0]
    golden[200:220] = torch.round(golden[200:220])  # ties in the golden ranking too
    faulty[200:220] = golden[200:220]
    faulty[220:230] = 0.0
    faulty[220:230, ::2] = -0.0  # signed zeros tie
    return golden, faulty


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("tolerance", [None, 0.01])
def test_classify_pairs_equals_classify_then_pair_flags(with_labels, tolerance):
    """The fused ranking gives the same codes and flags as the separate calls, and the flags match a sorting reference."""
    golden, faulty = tricky_rows()
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (400,), generator=g) if with_labels else None
    codes, flags = classify_pairs(golden, faulty, labels, k=5, tolerance=tolerance)
    want = classify(golden, faulty, k=5, tolerance=tolerance)
    assert torch.equal(codes, want)
    assert torch.equal(flags, pair_flags(want, faulty, golden, labels, k=5))
    ref = ref_flags(golden.numpy(), faulty.numpy(), want.numpy(), None if labels is None else labels.numpy())
    np.testing.assert_array_equal(flags.numpy(), ref)
    assert len(set(want.tolist())) == 5 or tolerance is not None  # every outcome class is exercised
    # every row (NaN, infinities, ties, signed zeros included) against the numpy reference, with and without tolerance
    np.testing.assert_array_equal(want.numpy(), reference(golden.numpy(), faulty.numpy(), tol=tolerance))
    if tolerance is not None:  # the rows that the tolerance tells apart are there: some within it, some beyond
        assert {NON_CRITICAL, SDC1} <= set(want.tolist())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_in_top_k_matches_sorting(n_classes, k, seed):
    """Ties (values drawn from a few), NaN and infinities: rank as a stable sort with NaN first would."""
    rng = np.random.default_rng(seed)
    pool = np.array([0.0, -0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan], np.float32)
    f = pool[rng.integers(0, len(pool), size=(20, n_classes))]
    cls = rng.integers(0, n_classes, size=20)
    got = in_top_k(torch.from_numpy(f), torch.from_numpy(cls), k).numpy()
    want = [ref_in_top_k(row, int(c), k) for row, c in zip(f, cls)]
    np.testing.assert_array_equal(got, want)


def test_aggregate_counts_per_fault_against_a_loop():
    """Histogram counts per fault equal per-fault sums; codes come back in input order."""
    rng = np.random.default_rng(0)
    n_f, per = 7, 50
    codes = rng.integers(0, 5, size=n_f * per).astype(np.uint8)
    flags = rng.integers(0, 16, size=n_f * per).astype(np.uint8)
    owner = np.repeat(np.arange(n_f), per)
    # pairs of different faults interleaved at random, each fault's own pairs still in input order
    pf = rng.permutation(owner)
    order = np.empty(len(pf), np.int64)
    for j in range(n_f):
        order[pf == j] = np.flatnonzero(owner == j)
    res = aggregate(list(range(100, 100 + n_f)), torch.from_numpy(pf), torch.from_numpy(codes[order]), torch.from_numpy(flags[order]))
    for j, r in enumerate(res):
        mine = order[pf == j]
        c, fl = codes[mine], flags[mine]
        assert r.fault_id == 100 + j and r.n == per
        assert (r.masked, r.non_critical, r.sdc1, r.sdc5, r.due) == (
            (c == MASKED).sum(), (c == NON_CRITICAL).sum(), ((c == SDC1) | (c == SDC5)).sum(), (c == SDC5).sum(), (c == DUE).sum())
        assert (r.top1_correct, r.top5_correct, r.top1_robust, r.top5_robust) == tuple(int(((fl >> b) & 1).sum()) for b in range(4))
        np.testing.assert_array_equal(r.codes, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("width", [1, 3, 10, 16])
def test_finite_rows_reads_the_exponent_bits_as_isfinite_does(dtype, width):
    """DUE rows are found from exponent bits: the same rows as isfinite().all(), for every special value and layout."""
    from faultlab.outcomes import finite_rows

    g = torch.Generator().manual_seed(width)
    x = (torch.randn(400, width, generator=g) * 10.0 ** torch.randint(-40, 40, (400, width), generator=g)).to(dtype)
    specials = torch.tensor([float("inf"), -float("inf"), float("nan"), -float("nan"), 0.0, -0.0, torch.finfo(dtype).max, torch.finfo(dtype).tiny / 4], dtype=dtype)
    pick = torch.rand(400, width, generator=g) < 0.05
    x[pick] = specials[torch.randint(0, len(specials), (int(pick.sum()),), generator=g)]
    for v in (x, x.t().contiguous().t(), x[::2], x[:, : max(1, width - 1)]):
        assert finite_rows(v).tolist() == torch.isfinite(v).all(dim=1).tolist()
