"""lstmkit.LSTM(cell="lstm") against torch.nn.LSTM with copied weights: values and every gradient."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils import prune
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstmkit

I, H, T, B = 5, 7, 6, 4
LENGTHS = [3, 6, 1, 4]  # unsorted, with a length-1 row


def _inputs(kind: str, batch_first: bool, dtype: torch.dtype, gen: torch.Generator):
    if kind == "unbatched":
        return torch.randn(T, I, dtype=dtype, generator=gen)
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    if kind == "packed":
        return pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    return x.transpose(0, 1).contiguous() if batch_first else x


def _leaf(inp):
    """A fresh leaf copy of the input requiring grad, and the tensor whose .grad to compare."""
    if isinstance(inp, PackedSequence):
        data = inp.data.detach().clone().requires_grad_()
        return PackedSequence(data, inp.batch_sizes, inp.sorted_indices, inp.unsorted_indices), data
    leaf = inp.detach().clone().requires_grad_()
    return leaf, leaf


def _run(model, inp, hx, out_grad_seed):
    inp, leaf = _leaf(inp)
    hx = None if hx is None else tuple(h.detach().clone().requires_grad_() for h in hx)
    out, (h_n, c_n) = model(inp, hx)
    out_t = out.data if isinstance(out, PackedSequence) else out
    gen = torch.Generator().manual_seed(out_grad_seed)
    loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum() for t in (out_t, h_n, c_n))
    loss.backward()
    grads = {"input": leaf.grad}
    if hx is not None:
        grads["h_0"], grads["c_0"] = hx[0].grad, hx[1].grad
    grads.update({name: p.grad for name, p in model.named_parameters()})
    return (out_t, h_n, c_n), grads


CONFIGS = [
    # (num_layers, bidirectional, batch_first, bias, proj_size, kind, given_hx)
    (1, False, False, True, 0, "batched", False),
    (2, False, True, True, 0, "batched", True),
    (3, True, False, True, 0, "batched", True),
    (1, True, True, False, 0, "batched", False),
    (2, True, False, True, 3, "batched", True),
    (1, False, False, True, 4, "unbatched", True),
    (2, True, False, True, 0, "unbatched", False),
    (2, True, False, True, 0, "packed", True),
    (1, False, False, False, 3, "packed", False),
    (3, False, True, True, 2, "packed", True),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "L{}-bi{}-bf{}-bias{}-proj{}-{}-hx{}".format(*c))
def test_matches_torch(config, train, dtype):
    num_layers, bidirectional, batch_first, bias, proj_size, kind, given_hx = config
    torch.manual_seed(0)
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  bias=bias, proj_size=proj_size, dtype=dtype)
    ref = torch.nn.LSTM(I, H, **kwargs)
    ours = lstmkit.LSTM(I, H, **kwargs, backend="reference")
    ours.load_state_dict(ref.state_dict())
    ref.train(train)
    ours.train(train)

    gen = torch.Generator().manual_seed(1)
    inp = _inputs(kind, batch_first, dtype, gen)
    hx = None
    if given_hx:
        d = 2 if bidirectional else 1
        batch = () if kind == "unbatched" else (B,)
        hx = (torch.randn(num_layers * d, *batch, proj_size or H, dtype=dtype, generator=gen),
              torch.randn(num_layers * d, *batch, H, dtype=dtype, generator=gen))

    ref_vals, ref_grads = _run(ref, inp, hx, out_grad_seed=2)
    our_vals, our_grads = _run(ours, inp, hx, out_grad_seed=2)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for name, a, b in zip(("output", "h_n", "c_n"), our_vals, ref_vals):
        torch.testing.assert_close(a, b, **tol, msg=f"{name} differs")
    assert our_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], **tol, msg=f"grad of {name} differs")


def test_packed_output_keeps_indices():
    lstm = lstmkit.LSTM(I, H, backend="reference")
    packed = pack_padded_sequence(torch.randn(T, B, I), torch.tensor(LENGTHS), enforce_sorted=False)
    out, _ = lstm(packed)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.sorted_indices, packed.sorted_indices)
    assert torch.equal(out.unsorted_indices, packed.unsorted_indices)


@pytest.mark.parametrize("proj_size,bidirectional", list(itertools.product([0, 3], [False, True])))
def test_state_dict_round_trip(proj_size, bidirectional):
    ours = lstmkit.LSTM(I, H, num_layers=2, proj_size=proj_size, bidirectional=bidirectional)
    ref = torch.nn.LSTM(I, H, num_layers=2, proj_size=proj_size, bidirectional=bidirectional)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in ref.state_dict().items()]
    ref.load_state_dict(ours.state_dict())  # and the reverse direction
    x = torch.randn(T, B, I)
    torch.testing.assert_close(ref(x)[0], ours(x)[0])


def test_dropout_between_layers_only_in_training():
    lstm = lstmkit.LSTM(I, H, num_layers=2, dropout=0.5, backend="reference")
    x = torch.randn(T, B, I)
    lstm.eval()
    torch.testing.assert_close(lstm(x)[0], lstm(x)[0])
    lstm.train()
    torch.manual_seed(0)
    a = lstm(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, lstm(x)[0])


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_dropout_draws_as_torch(backend, packed):
    """One seed, the same units dropped as torch.nn.LSTM's (on packed input torch draws over the
    packed rows), so outputs and gradients agree in training mode too."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, num_layers=3, dropout=0.4, bidirectional=True).double()
    ours = lstmkit.LSTM(I, H, num_layers=3, dropout=0.4, bidirectional=True, backend=backend).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    if packed:
        x = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    results = []
    for m in (ref, ours):
        torch.manual_seed(1)
        out, (h, c) = m(x)
        out = out.data if packed else out
        results.append((out, h, c, *torch.autograd.grad((out.sum(), h.sum()), list(m.parameters()))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_gru_and_rnn_match_torch():
    torch.manual_seed(0)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(4, B, H, dtype=torch.float64)
    pairs = [
        (torch.nn.GRU(I, H, 2, bidirectional=True, dtype=torch.float64),
         lstmkit.GRU(I, H, 2, bidirectional=True, dtype=torch.float64)),
        (torch.nn.RNN(I, H, 2, nonlinearity="relu", bidirectional=True, dtype=torch.float64),
         lstmkit.RNN(I, H, 2, nonlinearity="relu", bidirectional=True, dtype=torch.float64)),
    ]
    for ref, ours in pairs:
        ours.load_state_dict(ref.state_dict())
        (ya, ha), (yb, hb) = ref(x, h0), ours(x, h0)
        torch.testing.assert_close(yb, ya)
        torch.testing.assert_close(hb, ha)
        packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
        (pa, ha), (pb, hb) = ref(packed, h0), ours(packed, h0)
        torch.testing.assert_close(pb.data, pa.data)
        torch.testing.assert_close(hb, ha)


def test_lstm_cell_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(I, H, dtype=torch.float64)
    ours = lstmkit.LSTMCell(I, H, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    hx = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    for a, b in zip(ours(x, hx), ref(x, hx)):
        torch.testing.assert_close(a, b)
    for a, b in zip(ours(x[0]), ref(x[0])):  # unbatched, default zero state
        torch.testing.assert_close(a, b)


def test_module_attributes_match_torch():
    ref = torch.nn.LSTM(I, H, 2, bidirectional=True, proj_size=3)
    ours = lstmkit.LSTM(I, H, 2, bidirectional=True, proj_size=3)
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    assert [p for ws in ours.all_weights for p in ws] == list(ours.parameters())
    replaced = torch.nn.Parameter(torch.zeros_like(ours.weight_ih_l0))
    ours.register_parameter("weight_ih_l0", replaced)  # a replacement that bypasses __setattr__
    assert ours._flat_weights[0] is replaced
    assert repr(lstmkit.LSTMCell(I, H)) == repr(torch.nn.LSTMCell(I, H)) == "LSTMCell(5, 7)"
    assert repr(lstmkit.LSTMCell(I, H, bias=False, cell="cifg")) == "LSTMCell(5, 7, bias=False, cell='cifg')"
    # Built as torch's: printed as torch's; lstmkit's keywords after, where not their defaults.
    for name, kwargs in [("LSTM", dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True,
                                       dropout=0.5, bias=False)), ("GRU", {}), ("RNN", dict(nonlinearity="relu"))]:
        ours, ref = getattr(lstmkit, name)(I, H, **kwargs), getattr(torch.nn, name)(I, H, **kwargs)
        if name != "RNN":  # torch leaves the nonlinearity out
            assert repr(ours) == repr(ref), (repr(ours), repr(ref))
    assert repr(ours) == "RNN(5, 7, nonlinearity='relu')"
    assert repr(lstmkit.LSTM(I, H, 2, cell="peephole", backend="reference")) == \
        "LSTM(5, 7, num_layers=2, cell='peephole', backend='reference')"


@pytest.mark.parametrize("cls, kwargs", [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=3, bias=False)),
    ("LSTM", dict(num_layers=3, proj_size=2)),
    ("LSTM", dict(bidirectional=True)),
    ("GRU", dict(num_layers=2, bias=False)),
    ("RNN", dict(nonlinearity="relu", bidirectional=True)),
    ("RNN", dict()),
])
def test_weight_bookkeeping_matches_torch(cls, kwargs):
    """torch's `_flat_weights_names`, `_all_weights`, `_flat_weights` and `mode`, which weight-drop
    wrappers and pruning code read: the same names and modes, the parameters in that order."""
    ref = getattr(torch.nn, cls)(I, H, **kwargs)
    ours = getattr(lstmkit, cls)(I, H, **kwargs)
    assert ours.mode == ref.mode
    assert ours._flat_weights_names == ref._flat_weights_names
    assert ours._all_weights == ref._all_weights
    assert [type(w) for w in ours._flat_weights] == [type(w) for w in ref._flat_weights]
    assert all(w is p for w, p in zip(ours._flat_weights, ours.parameters(), strict=True))


@pytest.mark.parametrize("cell", ["peephole", "layernorm"])
def test_weight_bookkeeping_names_a_cells_own_parameters_after_torchs(cell):
    """The cell's own parameters (peepholes, layer-norm gains and biases) follow torch's names in
    each layer and direction, as in `all_weights`; the mode is LSTM's."""
    ours = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, cell=cell)
    torchs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)._all_weights
    extra = [e.name for e in ours.spec.extra_params]
    assert ours.mode == "LSTM"
    assert ours._all_weights == [names + [e + names[0][len("weight_ih"):] for e in extra] for names in torchs]
    assert ours._flat_weights_names == [n for names in ours._all_weights for n in names] == \
        [n for n, _ in ours.named_parameters()]
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [[getattr(ours, n).shape for n in names]
                                                                 for names in ours._all_weights]


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_flat_weights_follow_replaced_weights(backend):
    """`_flat_weights` stays the module's weights, as torch's: a parameter replaced by setattr,
    .double(), a conversion that puts new parameters in place, pruning, a weight-drop wrapper's
    plain tensor (the parameter deleted, a tensor set in its place); and the forward uses each of
    them, as torch.nn.LSTM's does."""
    torch.manual_seed(0)
    ref, ours = torch.nn.LSTM(I, H, num_layers=2), lstmkit.LSTM(I, H, num_layers=2, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)

    def same(*modules):
        for m in modules:
            assert all(w is getattr(m, n) for w, n in zip(m._flat_weights, m._flat_weights_names, strict=True))
        torch.testing.assert_close(ours(x.to(ours.weight_ih_l0.dtype))[0], ref(x.to(ref.weight_ih_l0.dtype))[0])

    for m in (ref, ours):
        m.weight_hh_l1 = torch.nn.Parameter(m.weight_hh_l1.detach() * 0.5)
    same(ref, ours)
    for m in (ref, ours):
        m.double()
    same(ref, ours)
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        for m in (ref, ours):
            m.float()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    same(ref, ours)
    for m in (ref, ours):
        prune.l1_unstructured(m, "weight_ih_l0", 0.5)
    same(ref, ours)
    raw = ref.weight_hh_l0.detach().clone().requires_grad_()
    keep = torch.rand(raw.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    for m in (ref, ours):  # weight drop: the raw weight kept elsewhere, a dropped copy set by name
        del m.weight_hh_l0
        m.weight_hh_l0 = raw * keep / 0.5
    same(ref, ours)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_final_state_detaches_in_place(backend):
    """h_n.detach_() between truncated-BPTT chunks, as with torch (h_n is not a view)."""
    for module in (lstmkit.LSTM(I, H, backend=backend), lstmkit.GRU(I, H, backend=backend)):
        _, state = module(torch.randn(T, B, I))
        for s in (state if isinstance(state, tuple) else (state,)):
            s.detach_()
            assert not s.requires_grad
