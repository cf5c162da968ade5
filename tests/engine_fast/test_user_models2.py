"""User models, second audit: aliasing writes, models that change their own state in forward, recurrent and
embedding layers, attention.

The reference here is a plain loop written in this file, independent of faultlab's injection: a weight fault
is a bit XOR-ed into the parameter's storage through a numpy view (then XOR-ed back); an activation fault
is this file's own forward hook XOR-ing the bit into every row; each fault runs on a fresh deep copy of the
pristine model and a fresh copy of the inputs, and is classified against the golden outputs of such a copy.
Both engines must give the same class for every (fault, input) pair and leave every parameter and buffer
bit-identical.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from faultlab.engine import EvalSet
from faultlab.engine.exact import ExactEngine
from faultlab.engine.fast import FastEngine
from faultlab.errors import FaultlabError, FaultSpecError
from faultlab.faults import Fault
from faultlab.outcomes import classify
from faultlab.targets.torch import TorchTarget

BITS = (30, 23, 31, 29, 26, 28, 24, 27, 25, 22, 12, 0)  # exponent bits, sign, mantissa


def _xor(t: torch.Tensor, flat: int, bit: int) -> None:
    """XOR ``bit`` into element ``flat`` of every row of float32 ``t`` (rows x elements), through a numpy view of its memory."""
    a = t.detach().numpy().reshape(t.shape[0], -1).view(np.uint32)
    a[:, flat] ^= np.uint32(1 << bit)


def _first(o):
    return o[0] if isinstance(o, (tuple, list)) else o


def _plain_forward(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        out = _first(model(torch.from_numpy(x.copy())))  # a fresh copy of the inputs every time
    return out.reshape(out.shape[0], -1)


def _plain_codes(pristine: nn.Module, x: np.ndarray, faults: list[Fault]) -> list[np.ndarray]:
    """Copy the model, flip, run every input, classify against a copy's golden outputs."""
    golden = _plain_forward(copy.deepcopy(pristine), x)
    out = []
    for f in faults:
        m = copy.deepcopy(pristine)
        if f.site == "weight":
            params = dict(m.named_parameters())
            p = params[f.layer] if f.layer in params else params[f.layer + ".weight"]
            assert p.is_contiguous() and p.dtype == torch.float32
            _xor(p.data.view(1, -1), int(np.ravel_multi_index(f.index, p.shape)), f.bits[0])
        else:
            def hook(mod, inp, o, f=f):
                t = _first(o).clone().contiguous()
                _xor(t, int(np.ravel_multi_index(f.index, t.shape[1:])), f.bits[0])
                return (t,) + tuple(o[1:]) if isinstance(o, tuple) else t

            dict(m.named_modules())[f.layer].register_forward_hook(hook)
        out.append(classify(golden, _plain_forward(m, x)).numpy())
    return out


def _state(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in model.state_dict().items()}


def _faults(layer: str, site: str, indices: list[tuple[int, ...]], start: int = 0) -> list[Fault]:
    return [Fault(start + i, layer, idx, (BITS[i % len(BITS)],), site) for i, idx in enumerate(indices)]  # type: ignore[arg-type]


def _check(model: nn.Module, x: np.ndarray, y: np.ndarray, faults: list[Fault], *, train: bool = False, small_batches: bool = True) -> FastEngine:
    """Both engines against the plain loop on a copy of the pristine model; the model is unchanged afterwards."""
    model.train(train)
    pristine = copy.deepcopy(model)
    want = _plain_codes(pristine, x, faults)
    before = _state(model)
    target = TorchTarget(model, example_input=x[:1])  # puts the model in eval mode
    if train:
        model.train()
    x_before = x.copy()
    data = EvalSet.build(target, x, y)
    fast = FastEngine()
    assert _state(model) == before, "building the target and the golden outputs changed the model"
    # batch norm in training mode normalises by the batch: only passes over the same 32 inputs compare
    for eng in (ExactEngine(), fast) + ((ExactEngine(batch_size=16),) if small_batches and not train else ()):
        got = eng.run(target, data, faults)
        bad = [(f.layer, f.index, f.bits, int((r.codes != w).sum())) for f, r, w in zip(faults, got, want) if (r.codes != w).any()]
        assert not bad, f"{type(eng).__name__}(batch_size={eng.batch_size}): {sum(b[-1] for b in bad)} pairs differ from the plain loop, e.g. {bad[:3]}"
        after = _state(model)
        assert after.keys() == before.keys()
        changed = [k for k in before if after[k] != before[k]]
        assert not changed, f"{type(eng).__name__} left {changed} changed"
    assert np.array_equal(x, x_before)
    assert torch.equal(data.x, torch.from_numpy(x_before))
    return fast


@pytest.fixture(scope="module")
def digits32(digits):
    x, y = digits
    return x[:32].copy(), y[:32]


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)


def _fc1_faults() -> list[Fault]:
    return _faults("fc1", "weight", [(i % 32, 5 * i % 64) for i in range(12)]) + _faults("fc1", "activation", [(3 * i % 32,) for i in range(12)], 100)


# ----- 1. writes through other names, into slices, into fresh tensors -----

class ZerosAccumulate(TwoLinear):
    def forward(self, x):
        h = self.fc1(x.flatten(1))
        out = torch.zeros_like(h)
        out += h  # in place into a tensor that no other name reads
        return self.fc2(torch.relu(out))


class SliceWrites(TwoLinear):
    def forward(self, x):
        h = self.fc1(x.flatten(1))
        h[:, 0] += 1
        h[..., 1:3] = 0
        return self.fc2(torch.relu(h))


class AddParamInPlace(TwoLinear):
    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.linspace(-1, 1, 32))

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        g = h.add_(self.shift)  # the result is used; h is not read again
        return self.fc2(torch.relu(g))


class AccumulateInContainers(TwoLinear):
    def forward(self, x):
        h = self.fc1(x.flatten(1))
        outs = [torch.relu(h), torch.tanh(h)]
        d = {"a": outs[0]}
        d["a"] += outs[1]  # changes outs[0] too
        return self.fc2(sum(outs))


class WhereAndMaskedFill(TwoLinear):
    def forward(self, x):
        h = self.fc1(x.flatten(1))
        h = torch.where(h > 0, h, 0.1 * h)
        h.masked_fill_(h.abs() > 30, 0.0)  # changes h, read again below
        return self.fc2(h)


class MaskedFillResult(TwoLinear):
    def forward(self, x):
        h = self.fc1(x.flatten(1))
        h = h.masked_fill_(h.abs() > 30, 0.0)
        return self.fc2(torch.relu(h))


@pytest.mark.parametrize("cls", [ZerosAccumulate, SliceWrites, AddParamInPlace, AccumulateInContainers, WhereAndMaskedFill, MaskedFillResult])
def test_aliasing_and_slice_writes(digits32, cls):
    x, y = digits32
    torch.manual_seed(0)
    _check(cls(), x, y, _fc1_faults())


# ----- 2. models that change their own state -----

class NormalisesInputInPlace(TwoLinear):
    """``x.sub_(...)`` on the input: every forward would shift the stored evaluation inputs once more."""

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1).sub_(0.5))))


def test_model_writing_its_input_in_place(digits32):
    x, y = digits32
    torch.manual_seed(0)
    _check(NormalisesInputInPlace(), x, y, _fc1_faults())


class CountsCalls(TwoLinear):
    """A call counter (reassigned) and a scale written in place and read: the output depends on the state."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        self.calls = self.calls + 1
        self.scale.mul_(1.5)
        return self.fc2(torch.relu(self.fc1(x.flatten(1)))) * self.scale


class RunningMax(TwoLinear):
    """A range observer: the largest |fc1| value seen so far (a faulty pass would leave a huge value behind)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        self.seen.copy_(torch.maximum(self.seen, h.detach().abs().max()))
        return self.fc2(torch.relu(h))


@pytest.mark.parametrize("cls", [CountsCalls, RunningMax])
def test_buffers_written_in_forward_are_put_back(digits32, cls):
    x, y = digits32
    torch.manual_seed(0)
    _check(cls(), x, y, _fc1_faults())


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.bn = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


def test_batch_norm_in_training_mode_leaves_its_statistics(digits32):
    """Batch statistics in the output, running statistics updated each pass: put back after every pass."""
    x, y = digits32
    torch.manual_seed(0)
    fast = _check(WithBatchNorm(), x, y, _fc1_faults(), train=True)
    assert fast.stats["exact"] == 24


def test_dropout_in_training_mode_is_refused(digits32):
    x, y = digits32

    class Net(TwoLinear):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.3)

        def forward(self, x):
            return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))

    torch.manual_seed(0)
    model = Net()
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    model.drop.train()
    for eng in (ExactEngine(), FastEngine()):
        with pytest.raises(FaultlabError, match="'drop' .*training mode"):
            eng.run(target, data, _fc1_faults())
    with pytest.raises(FaultlabError, match="training mode"):
        EvalSet.build(target, x, y)
    model.drop.p = 0.0  # draws nothing
    assert torch.equal(EvalSet.build(target, x, y).golden, data.golden)


def test_attribute_stored_in_forward_is_not_left_a_tracing_proxy(digits32):
    """``self.last = h`` (kept for inspection): tracing must not leave an fx Proxy in the model."""
    x, y = digits32

    class Net(TwoLinear):
        def __init__(self) -> None:
            super().__init__()
            self.last = None

        def forward(self, x):
            h = self.fc1(x.flatten(1))
            self.last = h
            return self.fc2(torch.relu(h))

    torch.manual_seed(0)
    model = Net()
    target = TorchTarget(model, example_input=x[:1])
    data = EvalSet.build(target, x, y)
    kept = model.last
    eng = FastEngine()
    res = eng.run(target, data, _fc1_faults())
    assert eng.stats["exact"] == 0 and len(res) == 24
    assert model.last is kept  # the fast engine never runs the model itself; tracing set it to a Proxy


# ----- 3. recurrent, embedding and attention layers -----

class Recurrent(nn.Module):
    def __init__(self, cell: type, **kw) -> None:
        super().__init__()
        self.rnn = cell(8, 12, batch_first=True, **kw)
        self.fc = nn.Linear(12 * (2 if kw.get("bidirectional") else 1), 10)

    def forward(self, x):
        out, _ = self.rnn(x)  # a tuple output: the fault site is its first tensor
        return self.fc(out[:, -1])


@pytest.mark.parametrize("cell,kw", [(nn.LSTM, {}), (nn.GRU, {"num_layers": 2, "bidirectional": True})])
def test_recurrent_layers(digits32, cell, kw):
    x, y = digits32
    xs = x.reshape(-1, 8, 8).copy()  # 8 steps of 8 features
    torch.manual_seed(0)
    model = Recurrent(cell, **kw)
    faults: list[Fault] = []
    for k, (name, p) in enumerate(model.rnn.named_parameters()):
        n = p.numel()
        faults += _faults(f"rnn.{name}", "weight", [tuple(int(v) for v in np.unravel_index((37 * i + k) % n, p.shape)) for i in range(2)], 100 * k)
    width = 12 * (2 if kw.get("bidirectional") else 1)
    faults += _faults("rnn", "activation", [(7 - i % 3, (5 * i) % width) for i in range(6)], 5000)
    _check(model, xs, y, faults, small_batches=False)  # the fast engine runs them exact too


def _seq_first_lstm() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 12, num_layers=2)  # (time, batch, features)
            self.fc = nn.Linear(12, 10)

        def forward(self, x):
            out, _ = self.rnn(x.transpose(0, 1))
            return self.fc(out[-1])

    return Net()


def _seq_first_attention() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.att = nn.MultiheadAttention(16, 2)  # (time, batch, features)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            h = self.inp(x).transpose(0, 1)
            a, _ = self.att(h, h, h)
            return self.fc(a.mean(0))

    return Net()


@pytest.mark.parametrize("make", [_seq_first_lstm, _seq_first_attention])
def test_time_first_outputs_are_not_activation_sites(digits32, make):
    """Their first dimension is time, not the batch: a row of it is no input, so no fault can name one of its elements."""
    x, y = digits32
    xs = x.reshape(-1, 8, 8).copy()
    torch.manual_seed(0)
    model = make()
    name = "rnn" if hasattr(model, "rnn") else "att"
    target = TorchTarget(model, example_input=xs[:1])
    assert name not in [s.name for s in target.sites() if s.kind == "activation"]
    assert "fc" in [s.name for s in target.sites() if s.kind == "activation"]
    data = EvalSet.build(target, xs, y)
    for fault in (Fault(0, name, (0, 3), (30,), "activation"), Fault(1, name, (0, 3), (30,), "activation", input=2)):
        for eng in (ExactEngine(), FastEngine()):
            with pytest.raises(FaultSpecError, match=f"{name!r}.*first dimension is not the batch"):
                eng.run(target, data, [fault])
    # its weights are sites as usual
    w = [s for s in target.sites() if s.kind == "weight" and s.layer == name]
    faults = _faults(w[0].name, "weight", [tuple(int(v) for v in np.unravel_index(7 * i, w[0].shape)) for i in range(6)])
    _check(copy.deepcopy(model), xs, y, faults)


def test_embedding_weights_and_outputs(digits32):
    x, y = digits32
    tokens = x.reshape(-1, 64)[:, ::4].astype(np.int64).copy()  # 16 tokens in 0..16

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(17, 8, padding_idx=0)
            self.fc = nn.Linear(16 * 8, 10)

        def forward(self, t):
            return self.fc(self.emb(t).flatten(1))

    torch.manual_seed(0)
    used = sorted(set(tokens.ravel().tolist()))
    faults = _faults("emb", "weight", [(used[i % len(used)], i % 8) for i in range(12)])
    faults += _faults("emb", "activation", [(i % 16, 3 * i % 8) for i in range(12)], 100)
    _check(Net(), tokens, y, faults)


def test_transformer_encoder_layer(digits32):
    """Eval mode: torch's fused encoder path runs when no hook sits on the layer; faults on its parts add hooks."""
    x, y = digits32
    xs = x.reshape(-1, 8, 8).copy()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(self.enc(self.inp(x)).mean(1))

    torch.manual_seed(0)
    faults = _faults("enc.self_attn.in_proj_weight", "weight", [(5 * i % 48, 3 * i % 16) for i in range(6)])
    faults += _faults("enc.linear1", "weight", [(5 * i % 32, 3 * i % 16) for i in range(6)], 100)
    faults += _faults("enc.linear1", "activation", [(i % 8, 5 * i % 32) for i in range(6)], 200)
    faults += _faults("enc.self_attn", "activation", [(i % 8, 5 * i % 16) for i in range(6)], 300)
    faults += _faults("enc", "activation", [(i % 8, 5 * i % 16) for i in range(6)], 400)
    model = Net()
    _check(model, xs, y, faults)
    # a hook on a part turns torch's fused path off (the golden passes take it): a fault that writes the bit already
    # there must still be masked on every input
    target = TorchTarget(model, example_input=xs[:1])
    data = EvalSet.build(target, xs, y)
    outs = target.layer_outputs(xs)
    same = []
    for layer in ("enc.self_attn", "enc.linear1", "enc.norm1", "enc.linear2"):
        o = outs[layer].reshape(len(xs), -1).contiguous().view(torch.int32)
        for col in range(0, o.shape[1], 7):
            bits = (o[:, col] >> 30) & 1
            if bool((bits == bits[0]).all()):
                idx = tuple(int(v) for v in np.unravel_index(col, outs[layer].shape[1:]))
                same.append(Fault(len(same), layer, idx, (30,), "activation", "stuck1" if int(bits[0]) else "stuck0"))
    assert len(same) >= 20
    for eng in (ExactEngine(), FastEngine()):
        assert all((r.codes == 0).all() for r in eng.run(target, data, same))


def test_embedding_with_max_norm_renormalising_its_weight_in_forward(digits32):
    """``nn.Embedding(max_norm=1)`` rescales every row it looks up whose norm exceeds 1, in the weight itself: a faulty
    row was rescaled in place and restoring the one faulted element left the rest of the row (the model) changed."""
    x, y = digits32
    tokens = x.reshape(-1, 64)[:, ::4].astype(np.int64).copy()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(17, 8, max_norm=1.0)
            self.fc = nn.Linear(16 * 8, 10)

        def forward(self, t):
            return self.fc(self.emb(t).flatten(1))

    torch.manual_seed(0)
    used = sorted(set(tokens.ravel().tolist()))
    faults = _faults("emb", "weight", [(used[i % len(used)], i % 8) for i in range(12)])
    faults += _faults("emb", "activation", [(i % 16, 3 * i % 8) for i in range(6)], 100)
    fast = _check(Net(), tokens, y, faults)
    assert fast.stats["exact"] == len(faults)


def test_weight_clipped_in_forward(digits32):
    """``fc1.weight.data.clamp_(...)`` in forward (a no-op on clean weights) clamps a faulty weight in place:
    restoring the saved element, not XOR-ing the bit back, leaves the model as it was."""
    x, y = digits32

    class Net(TwoLinear):
        def forward(self, x):
            self.fc1.weight.data.clamp_(-0.3, 0.3)
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc1.weight.clamp_(-0.3, 0.3)
    _check(model, x, y, _fc1_faults())


def test_transformer_encoder_with_padding_mask(digits32):
    """In eval mode ``nn.TransformerEncoder`` runs a padded batch as nested tensors (rows of several lengths): building
    the target failed on them ("NestedTensorImpl doesn't support sizes"); its layers' outputs are not sites, the
    encoder's padded output and every weight are."""
    import warnings

    x, y = digits32
    tokens = x.reshape(-1, 64)[:, ::4].astype(np.int64) % 16 + 1
    tokens[::2, 10:] = 0  # padding

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(18, 16)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2)
            self.fc = nn.Linear(16, 10)

        def forward(self, t):
            return self.fc(self.enc(self.emb(t), src_key_padding_mask=t == 0)[:, 0])

    torch.manual_seed(0)
    model = Net()
    faults = _faults("enc.layers.0.linear1", "weight", [(5 * i % 32, 3 * i % 16) for i in range(6)])
    faults += _faults("enc", "activation", [(i % 16, 5 * i % 16) for i in range(6)], 100)
    faults += _faults("emb", "activation", [(i % 16, 7 * i % 16) for i in range(6)], 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's nested-tensor prototype warning
        _check(model, tokens, y, faults)
        target = TorchTarget(model, example_input=tokens[:1])
    assert [s.name for s in target.sites() if s.kind == "activation"] == ["emb", "enc", "fc"]
    with pytest.raises(FaultSpecError, match="'enc.layers.0.linear1'.*nested tensor"):
        target.check_fault(Fault(0, "enc.layers.0.linear1", (0, 1), (30,), "activation"))


class StreamingMean(TwoLinear):
    """Blends in the mean fc1 activation of the previous pass, kept in a plain attribute: a faulty pass leaked into
    the next fault's passes (299 of 768 pairs wrong)."""

    def __init__(self) -> None:
        super().__init__()
        self.prev = torch.zeros(32)

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        out = self.fc2(torch.relu(h + 0.5 * self.prev))
        self.prev = h.detach().mean(0)
        return out


def test_state_kept_in_a_plain_attribute(digits32):
    x, y = digits32
    torch.manual_seed(0)
    model = StreamingMean()
    kept = model.prev
    _check(model, x, y, _fc1_faults())
    assert model.prev is kept


def test_tensor_constants_trace_without_staying_in_the_model(digits32):
    """A tensor made in forward from constants is a constant of the traced graph, which the tracer stores on the
    model as ``_tensor_constant0``: the graph keeps it, the user's model must not."""
    x, y = digits32

    class Net(TwoLinear):
        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.flatten(1) - torch.full((64,), 0.25))))

    torch.manual_seed(0)
    model = Net()
    names = set(vars(model))
    fast = _check(model, x, y, _fc1_faults())
    assert fast.stats["exact"] == 0
    assert set(vars(model)) == names


def test_aliasing_writes_on_feature_maps(digits):
    """The same writes on 4-D maps, where activation faults replay on windows and weight faults on blocks."""
    x, y = digits

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3, padding=1)
            self.r1 = nn.ReLU()
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.shift = nn.Parameter(torch.linspace(-0.1, 0.1, 8))
            self.fc = nn.Linear(8 * 16, 10)

        def forward(self, x):
            h = self.r1(self.c1(x))
            out = torch.zeros_like(h)
            out += h
            g = self.c2(out)
            g = torch.where(g > 0, g, 0.05 * g)
            g = g.masked_fill_(g.abs() > 40, 0.0)
            g = self.bn(g).add_(self.shift.view(1, -1, 1, 1))
            return self.fc(nn.functional.max_pool2d(torch.relu(g), 2).flatten(1))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 2)
    faults = _faults("c1", "activation", [(i % 8, 3 * i % 8, 5 * i % 8) for i in range(12)])
    faults += _faults("r1", "activation", [(i % 8, 5 * i % 8, 3 * i % 8) for i in range(12)], 100)
    faults += _faults("c2", "weight", [(i % 8, i % 8, i % 3, i // 3 % 3) for i in range(12)], 200)
    fast = _check(model, x, y, faults)
    assert fast.stats["exact"] == 0 and fast.stats["windowed_passes"] > 0 and fast.stats["block_passes"] > 0


def test_time_first_values_as_long_as_the_block(digits):
    """Digits as 64 steps of one pixel, time first: with 64 inputs a (64, N, F) value passed the fast engine's
    size check as if batched, and its replay gathered time steps as inputs (an IndexError deep in the engine)."""
    x, y = digits
    xs = x.reshape(len(x), 64, 1).copy()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(1, 8)
            self.mix = nn.Linear(8, 8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            h = torch.relu(self.mix(self.inp(x.transpose(0, 1))))  # (time, batch, features)
            return self.fc(h.cumsum(0)[-1])

    torch.manual_seed(0)
    faults = _faults("mix", "weight", [(i % 8, 3 * i % 8) for i in range(8)])
    faults += _faults("fc", "weight", [(i % 10, 3 * i % 8) for i in range(8)], 100)
    faults += _faults("fc", "activation", [(i % 10,) for i in range(8)], 200)
    fast = _check(Net(), xs, y, faults, small_batches=False)
    assert fast.stats["exact"] == len(faults)


def test_packed_sequences(digits32):
    """An LSTM fed a PackedSequence returns one: not an activation site; its weights and the embedding's outputs are."""
    from torch.nn.utils.rnn import pack_padded_sequence

    x, y = digits32
    tokens = x.reshape(-1, 64)[:, ::4].astype(np.int64) % 16 + 1
    tokens[::3, 10:] = 0  # padding

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(18, 8, padding_idx=0)
            self.rnn = nn.LSTM(8, 12, batch_first=True)
            self.fc = nn.Linear(12, 10)

        def forward(self, t):
            lengths = (t != 0).sum(1).cpu()
            _, (h, _) = self.rnn(pack_padded_sequence(self.emb(t), lengths, batch_first=True, enforce_sorted=False))
            return self.fc(h[-1])

    torch.manual_seed(0)
    model = Net()
    faults = _faults("rnn.weight_hh_l0", "weight", [(5 * i % 48, i % 12) for i in range(8)])
    faults += _faults("rnn.bias_ih_l0", "weight", [(7 * i % 48,) for i in range(4)], 50)
    faults += _faults("emb", "activation", [(i % 16, 3 * i % 8) for i in range(6)], 100)
    _check(model, tokens, y, faults, small_batches=False)
    assert "rnn" not in [s.name for s in TorchTarget(model, example_input=tokens[:1]).sites() if s.kind == "activation"]
