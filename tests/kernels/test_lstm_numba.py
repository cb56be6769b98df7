"""backend="numba" against the reference backend, for every cell it implements.

Comparisons run in float64 with tight tolerances (the kernels use exact tanh/sigmoid there), plus
float32 runs checked against a float64 reference with tolerances scaled to the reduction size
(float32 uses a rational tanh approximation). The numba kernels compile on first use, one per
(direction, cell, dtype), and are cached on disk, so the tests stay with few dtype combinations:
float64 for every cell, float32 for two cells.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.cells import CELLS as SPECS
from lstmkit.kernels import BACKENDS, lstm_numba, needs_reference, reference, resolve_backend
from lstmkit.kernels.panels import PANEL, panels

CELLS = lstm_numba.CELLS
LSTM_FAMILY = tuple(c for c in CELLS if SPECS[c].has_cell_state)
F64 = torch.float64


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def make_params(cell: str, I: int, H: int, proj: int = 0, bias: bool = True, dtype=F64, seed: int = 0):
    spec = SPECS[cell]
    g = torch.Generator().manual_seed(seed)
    G, P = spec.num_gates, proj or H
    k = 1 / math.sqrt(H)

    def u(*shape):
        return ((torch.rand(*shape, generator=g, dtype=F64) * 2 - 1) * k).to(dtype)

    p = {"weight_ih": u(G * H, I) * 2, "weight_hh": u(G * H, P) * 2}
    if bias:
        p["bias_ih"], p["bias_hh"] = u(G * H), u(G * H)
    if proj:
        p["weight_hr"] = u(P, H) * 2
    for e in spec.extra_params:
        width = G * H if e.width == "GH" else H
        p[e.name] = u(width) + (1.0 if e.init == "ones" else 0.0)
    return {n: t.requires_grad_() for n, t in p.items()}


def make_inputs(cell: str, T: int, B: int, I: int, H: int, proj: int = 0, dtype=F64, seed: int = 1, lengths=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g, dtype=F64).to(dtype)
    batch_sizes = None
    if lengths is not None:  # rows sorted by decreasing length, as the layer contract wants
        lengths = sorted(lengths, reverse=True)
        batch_sizes = torch.tensor([sum(L > t for L in lengths) for t in range(T)], dtype=torch.int64)
        for b, L in enumerate(lengths):
            x[L:, b] = 0
    state = (torch.randn(B, proj or H, generator=g, dtype=F64).to(dtype).requires_grad_(),)
    if SPECS[cell].has_cell_state:
        state += (torch.randn(B, H, generator=g, dtype=F64).to(dtype).requires_grad_(),)
    return x.requires_grad_(), state, batch_sizes


def run_layer(layer_fn, cell, x, state, params, batch_sizes, reverse):
    """Outputs, final state and the gradients of a loss that weighs every output differently."""
    y, final = layer_fn(SPECS[cell], x, state, params, batch_sizes, reverse)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    loss = (y * w).sum() + sum((s * (k + 1.5)).sum() for k, s in enumerate(final))
    inputs = [x, *state, *params.values()]
    grads = torch.autograd.grad(loss, inputs)
    names = ["y"] + [f"final{k}" for k in range(len(final))] + ["dx"] + [f"dstate{k}" for k in range(len(state))]
    names += [f"d{n}" for n in params]
    return dict(zip(names, [y, *final, *grads]))


def assert_all_close(got: dict, want: dict, rtol: float, atol: float):
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def compare_layer(cell, T, B, I, H, proj=0, reverse=False, lengths=None, bias=True):
    params = make_params(cell, I, H, proj, bias)
    x, state, bs = make_inputs(cell, T, B, I, H, proj, lengths=lengths)
    want = run_layer(reference.layer, cell, x, state, params, bs, reverse)
    got = run_layer(lstm_numba.layer, cell, x, state, params, bs, reverse)
    assert_all_close(got, want, rtol=1e-9, atol=1e-10)


def compare_layer_float32(cell, T, B, I, H, atol, proj=0, lengths=None, reverse=False, bias=True):
    """The float32 kernels against the float64 reference: outputs and every gradient within atol."""
    p64 = make_params(cell, I, H, proj, bias)
    x64, s64, bs = make_inputs(cell, T, B, I, H, proj, lengths=lengths)
    want = run_layer(reference.layer, cell, x64, s64, p64, bs, reverse)
    p32 = {n: t.detach().float().requires_grad_() for n, t in p64.items()}
    got = run_layer(lstm_numba.layer, cell, x64.detach().float().requires_grad_(),
                    tuple(s.detach().float().requires_grad_() for s in s64), p32, bs, reverse)
    for name in want:
        torch.testing.assert_close(got[name].double(), want[name], rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------
# the layer function against the reference, float64
# --------------------------------------------------------------------------------------

AWKWARD = [  # (T, B, I, H)
    (1, 1, 2, 3),  # one step, one row, tiny H
    (6, 3, 5, 17),  # H not a multiple of any vector width
    (4, 5, 1, 3),  # more rows than threads, I=1
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", AWKWARD, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_layer_matches_reference(cell, reverse, shape):
    compare_layer(cell, *shape, reverse=reverse)


@pytest.mark.parametrize("cell", CELLS)
def test_layer_packed_matches_reference(cell):
    # unsorted lengths are sorted by the module; the layer sees them sorted, both directions
    compare_layer(cell, 7, 4, 3, 5, lengths=[3, 7, 1, 6], reverse=False)
    compare_layer(cell, 7, 4, 3, 5, lengths=[3, 7, 1, 6], reverse=True)


@pytest.mark.parametrize("cell", LSTM_FAMILY)
def test_layer_projection_matches_reference(cell):
    compare_layer(cell, 5, 3, 4, 6, proj=4)
    compare_layer(cell, 6, 4, 3, 5, proj=2, reverse=True, lengths=[6, 2, 5, 1])


UNIT_LOCAL = tuple(c for c in CELLS if c != "layernorm")


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("cell", UNIT_LOCAL)
def test_unit_split_matches_reference(cell, two_threads):
    """The unit split (each thread owns a block of hidden units; one barrier per step)."""
    code = lstm_numba.CELL_CODES[cell]
    assert lstm_numba._plan(code, 3, 40, False, brgemm=False).units
    compare_layer(cell, 5, 3, 4, 40)  # few rows: the recurrent products in plain loops
    compare_layer(cell, 6, 3, 2, 40, reverse=True, lengths=[6, 2, 5])
    assert lstm_numba._plan(code, 7, 70, False, brgemm=False).units  # 70 units: blocks of 48 and 22
    compare_layer(cell, 4, 7, 3, 70)  # more rows: the recurrent products in BLAS
    compare_layer(cell, 5, 7, 3, 70, reverse=True, lengths=[5, 5, 5, 4, 3, 1, 1])


@pytest.fixture
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [2, 3], indirect=True)
@pytest.mark.parametrize("B, proj, lengths", [(1, 0, None), (3, 0, [6, 5, 2]), (2, 7, [6, 3])])
def test_layernorm_few_rows_share_columns(B, proj, lengths, threads):
    """Layer norm with few rows on several threads: the forward's row split whose threads also
    share each step's recurrent product by columns (two meetings per step), and without a
    projection the backward's (every thread runs the pointwise pass, one meeting per step); both
    directions in time, float64 and float32."""
    code = lstm_numba.CELL_CODES["layernorm"]
    assert lstm_numba._plan(code, B, 40, bool(proj), brgemm=True).cols
    assert lstm_numba._plan(code, B, 40, bool(proj), brgemm=True, width=40).cols == (not proj)
    for reverse in (False, True):
        compare_layer("layernorm", 6, B, 3, 40, proj, reverse=reverse, lengths=lengths)
    compare_layer_float32("layernorm", 6, B, 3, 40, 2e-4, proj, lengths)


@pytest.mark.skipif(not lstm_numba.K.BRGEMM, reason="torch exports no at::native::cpublas::brgemm")
@pytest.mark.parametrize("lengths", [None, [6, 6, 5, 5, 5, 4, 4, 3, 2, 2, 1, 1]], ids=["full", "packed"])
@pytest.mark.parametrize("cell, proj, threads, units", [
    ("lstm", 0, 2, False), ("peephole", 0, 2, False), ("cifg", 0, 2, False), ("layernorm", 0, 2, False),
    ("gru", 0, 2, False), ("rnn_tanh", 0, 2, False), ("lstm", 5, 2, False),
    # 8 threads, 12 rows: the unit split, with more rows than the plain loops take (brgemm per block)
    ("lstm", 0, 8, True), ("peephole", 0, 8, True), ("gru", 0, 8, True), ("rnn_relu", 0, 8, True),
], indirect=["threads"])
# 37: gate columns end in a part-filled panel; 520: the backward's W_hh (4H rows) in half-width panels
@pytest.mark.parametrize("H", [64, 37, 520], ids=["H64", "H37", "H520"])
def test_float32_brgemm_matches_reference(cell, proj, threads, units, lengths, H):
    """float32 runs its per-step GEMMs on oneDNN's brgemm (its operands as 64-column panels), in
    both splits, with the active batch shrinking (PackedSequence) and backwards in time."""
    T, B, I = 6, 12, 5
    assert lstm_numba._plan(lstm_numba.CELL_CODES[cell], B, H, bool(proj), brgemm=True).units == units
    p64 = make_params(cell, I, H, proj)
    x64, s64, bs = make_inputs(cell, T, B, I, H, proj, lengths=lengths)
    for reverse in (False, True):
        want = run_layer(reference.layer, cell, x64, s64, p64, bs, reverse)
        p32 = {n: t.detach().float().requires_grad_() for n, t in p64.items()}
        got = run_layer(lstm_numba.layer, cell, x64.detach().float().requires_grad_(),
                        tuple(s.detach().float().requires_grad_() for s in s64), p32, bs, reverse)
        for name in want:
            tol = 1e-6 * math.sqrt(T * B * H) * (want[name].abs().max().item() + 1)
            torch.testing.assert_close(got[name].double(), want[name], rtol=0, atol=tol,
                                       msg=lambda m: f"{name} (reverse={reverse}): {m}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_without_bias_matches_reference(cell):
    compare_layer(cell, 4, 3, 4, 5, bias=False)


@pytest.mark.parametrize("I", [lstm_numba.NARROW_INPUT, lstm_numba.NARROW_INPUT + 1], ids=["narrow", "wide"])
def test_input_weight_gradient_in_both_forms(I):
    """dW_ih directly as dG^T X, and for narrow inputs as (X^T dG)^T."""
    compare_layer("lstm", 4, 3, I, 5)


@pytest.mark.skipif(not lstm_numba.K.BRGEMM, reason="torch exports no at::native::cpublas::brgemm")
@pytest.mark.parametrize("cell", ["lstm", "layernorm", "gru"])
@pytest.mark.parametrize("I", [lstm_numba.PANEL, lstm_numba.PANEL + 1])
def test_float32_input_gradient_in_kernel_and_after(cell, I, two_threads):
    """float32, row split: dX per step in the backward kernel for inputs up to one panel wide,
    after it as one GEMM for wider ones; packed, so rows past their length need zeros."""
    assert not lstm_numba._plan(lstm_numba.CELL_CODES[cell], 6, 20, False, brgemm=True).units
    compare_layer_float32(cell, 5, 6, I, 20, 1e-4, lengths=[5, 5, 4, 2, 2, 1])
    compare_layer_float32(cell, 5, 6, I, 20, 1e-4, reverse=True)


@pytest.mark.parametrize("cell", ["lstm", "layernorm", "gru"])
def test_layer_long_sequence_matches_reference(cell):
    compare_layer(cell, 1000, 2, 2, 3)


@pytest.mark.parametrize("cell, dtype", [*((c, F64) for c in CELLS), ("lstm", torch.float32),
                                         ("layernorm", torch.float32)])
@pytest.mark.parametrize("H, proj", [(5, 2), (40, 0)], ids=["H5-proj", "H40"])
def test_empty_batch_matches_reference(cell, dtype, H, proj, two_threads):
    """B=0 (an empty last batch): zero-size y, final state and dX and zero weight gradients, the
    reference's. The backward crashed: float32's GEMMs refused the empty operands, float64's dX
    could not be reshaped. H=40 on two threads: the unit split."""
    proj = proj if cell in LSTM_FAMILY else 0
    params = make_params(cell, 3, H, proj, dtype=dtype)
    x, state, _ = make_inputs(cell, 4, 0, 3, H, proj, dtype=dtype)
    want = run_layer(reference.layer, cell, x, state, params, None, False)
    got = run_layer(lstm_numba.layer, cell, x, state, params, None, False)
    assert got["y"].shape == (4, 0, proj or H) and got["dx"].shape == x.shape
    assert_all_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [lstmkit.LSTM, lstmkit.GRU, lstmkit.RNN], ids=lambda c: c.__name__)
def test_module_empty_batch_matches_torch(cls):
    """The default backend (numba), float32, an input that needs no gradient: torch.nn's
    zero-size outputs and zero parameter gradients (the dW_ih GEMM crashed even so)."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls.__name__)(3, 4, num_layers=2)
    fast = cls(3, 4, num_layers=2)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(5, 0, 3)
    for m in (ref, fast):
        out, _ = m(x)
        assert out.shape == (5, 0, 4)
        out.sum().backward()
    for (name, a), b in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)


# --------------------------------------------------------------------------------------
# float32 (rational tanh approximation): close to a float64 reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_float32_close_to_float64_reference(cell):
    T, B, I, H = 12, 6, 9, 37
    p64 = make_params(cell, I, H)
    x64, s64, bs = make_inputs(cell, T, B, I, H, lengths=[12, 9, 12, 4, 7, 12])
    want = run_layer(reference.layer, cell, x64, s64, p64, bs, False)
    p32 = {n: t.detach().float().requires_grad_() for n, t in p64.items()}
    x32 = x64.detach().float().requires_grad_()
    s32 = tuple(s.detach().float().requires_grad_() for s in s64)
    got = run_layer(lstm_numba.layer, cell, x32, s32, p32, bs, False)
    for name in want:
        # float32 rounding grows with the length of the sums (T*B rows in the weight gradients)
        scale = want[name].abs().max().item() + 1
        tol = 1e-6 * math.sqrt(T * B * H) * scale
        torch.testing.assert_close(got[name].double(), want[name], rtol=0, atol=tol, msg=lambda m: f"{name}: {m}")


def test_float32_activations_over_the_whole_range():
    """The kernels' float32 sigmoid and tanh, compiled with the kernels' flags, against float64:
    sigmoid within 3e-7 relative to its value down to the smallest normal float (through tanh it
    bottomed out at 1.2e-7) and 0 below; tanh within 3e-7, exactly +-1 where float32's rounds to
    it (1 - t^2 is then 0); both in their ranges, odd or symmetric, and NaN in, NaN out."""
    from numba import njit

    from lstmkit.kernels import lstm_numba_cells as K

    @njit(**{**K.JIT, "cache": False})
    def activations(x, s, t):
        for k in range(x.size):
            s[k], t[k] = K.sigmoid(x[k]), K.tanh(x[k])

    tiny = np.finfo(np.float32).tiny
    x = np.concatenate([np.linspace(-100, 100, 400_001), [-87.4, -87.33, -88.7, 9.0109, 9.011, -9.0109],
                        [0.0, -0.0, 1e-30, -1e-30, tiny, np.inf, -np.inf, np.nan]]).astype(np.float32)
    s, t = np.empty_like(x), np.empty_like(x)
    activations(x, s, t)
    x64 = torch.from_numpy(x).double()
    s64, t64 = torch.sigmoid(x64).numpy(), torch.tanh(x64).numpy()
    nan = np.isnan(x)
    assert np.isnan(s[nan]).all() and np.isnan(t[nan]).all()
    s, t, s64, t64, x = s[~nan], t[~nan], s64[~nan], t64[~nan], x[~nan]
    normal = s64 >= tiny
    assert np.all(np.abs(s[normal] - s64[normal]) <= 3e-7 * s64[normal])
    assert np.all(s[~normal] == 0) and np.all((0 <= s) & (s <= 1))
    assert np.all(np.abs(t - t64) <= 3e-7) and np.all(np.abs(t) <= 1)
    saturated = (np.float32(t64) == np.sign(t64)) & (x != 0)  # where float32's tanh is +-1
    assert np.array_equal(t[saturated], np.sign(x[saturated])) and np.all(1 - t[saturated] ** 2 == 0)
    s_neg, t_neg = np.empty_like(x), np.empty_like(x)
    activations(-x, s_neg, t_neg)
    assert np.array_equal(t, -t_neg) and np.all(np.abs(s + s_neg - 1) <= 2.5e-7)  # tanh odd, s(x) + s(-x) = 1


@pytest.mark.parametrize("cell", CELLS)
def test_float32_saturated_gates_as_accurate_as_the_float32_reference(cell):
    """|x| ~ 10 and |c| ~ 1e4 saturate the gates. sigmoid through tanh bottomed out at 1.2e-7, so
    closed gates leaked that much of c each step: errors of 1e-3 (and 2 in peephole's dweight_cf)
    against float64, where the float32 reference's own are 1e-7 to 6e-5 (peephole's conditioning)."""
    T, B, I, H = 6, 5, 3, 20
    p64 = make_params(cell, I, H)
    x64, s64, bs = make_inputs(cell, T, B, I, H)
    x64 = (x64.detach() * 10).requires_grad_()
    s64 = tuple((s.detach() * (1e4 if k == 1 else 1)).requires_grad_() for k, s in enumerate(s64))
    want = run_layer(reference.layer, cell, x64, s64, p64, bs, False)

    def error(layer_fn):
        leaves = [t.detach().float().requires_grad_() for t in (x64, *s64, *p64.values())]
        got = run_layer(layer_fn, cell, leaves[0], tuple(leaves[1:1 + len(s64)]),
                        dict(zip(p64, leaves[1 + len(s64):])), bs, False)
        return {n: ((got[n].double() - want[n]).abs().max() / want[n].abs().max()).item() for n in want}

    own, kernel = error(reference.layer), error(lstm_numba.layer)
    for name in want:
        assert kernel[name] <= 4 * own[name] + 2e-6, (name, kernel[name], own[name])


def test_float32_closed_gates_close():
    """H = 1, zero weights: i = f = sigmoid(-30) = 9.4e-14, g = tanh(0) = 0, so c_1 = f c_0 = 9.4e-10
    at c_0 = 1e4. It was 1.2e-3, sigmoid's floor times c_0."""
    params = {"weight_ih": torch.zeros(4, 1), "weight_hh": torch.zeros(4, 1),
              "bias_ih": torch.tensor([-30.0, -30.0, 0.0, 30.0]), "bias_hh": torch.zeros(4)}
    x, state = torch.zeros(1, 1, 1), (torch.zeros(1, 1), torch.full((1, 1), 1e4))
    _, (h_1, c_1) = lstm_numba.layer(SPECS["lstm"], x, state, params)
    want = torch.sigmoid(torch.tensor(-30.0, dtype=F64)) * 1e4
    torch.testing.assert_close(c_1.double().squeeze(), want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_relu_rnn_at_infinities_and_nan_is_torchs_relu(dtype):
    """relu(-inf) was v - v = NaN, which then filled every later step; the backward gave NaN for
    an infinite dh where h <= 0, and 0 for h = NaN, where torch passes dh on."""
    torch.manual_seed(0)
    want_rnn = torch.nn.RNN(1, 2, nonlinearity="relu", dtype=dtype)
    got_rnn = lstmkit.RNN(1, 2, nonlinearity="relu", dtype=dtype, backend="numba")
    got_rnn.load_state_dict(want_rnn.state_dict())
    inf, nan = math.inf, math.nan
    for x, h0, dy in [([-inf, 1.0, 2.0], None, 1.0), ([-1.0, 0.5, 1.0], None, inf), ([nan, 1.0, 0.0], 1.0, 1.0)]:
        results = []
        for rnn in (want_rnn, got_rnn):
            rnn.zero_grad()
            xs = torch.tensor(x, dtype=dtype).reshape(3, 1, 1).requires_grad_()
            h = None if h0 is None else torch.full((1, 1, 2), h0, dtype=dtype, requires_grad=True)
            y, _ = rnn(xs, h)
            (y * dy).sum().backward()
            results.append([y, xs.grad, *(() if h is None else (h.grad,)), *(p.grad for p in rnn.parameters())])
        for want, got in zip(*results):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=0, equal_nan=True)


# --------------------------------------------------------------------------------------
# gradcheck through the layer function, float64
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell):
    T, B, I, H = 3, 2, 2, 2
    params = make_params(cell, I, H)
    x, state, _ = make_inputs(cell, T, B, I, H)
    names = list(params)

    def f(x, *rest):
        st, vals = rest[:len(state)], rest[len(state):]
        y, final = lstm_numba.layer(SPECS[cell], x, st, dict(zip(names, vals)), None, False)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *state, *params.values()))
    assert torch.autograd.gradgradcheck(f, (x, *state, *params.values()))  # create_graph: the reference's backward


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_gradcheck_packed_reverse_projection(cell):
    T, B, I, H, P = 4, 3, 2, 3, 2
    params = make_params(cell, I, H, proj=P)
    x, state, bs = make_inputs(cell, T, B, I, H, proj=P, lengths=[4, 1, 3])
    names = list(params)

    def f(x, *rest):
        st, vals = rest[:len(state)], rest[len(state):]
        y, final = lstm_numba.layer(SPECS[cell], x, st, dict(zip(names, vals)), bs, True)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *state, *params.values()))


@pytest.mark.parametrize("cell", CELLS)
def test_double_backward_matches_reference(cell):
    """create_graph=True (a gradient penalty): the backward is the reference's, differentiable,
    so second derivatives equal the reference's; the first derivatives still come out right."""
    proj = 2 if cell in LSTM_FAMILY else 0
    params = make_params(cell, 3, 4, proj)
    x, state, bs = make_inputs(cell, 4, 3, 3, 4, proj, lengths=[4, 2, 1])
    inputs = [x, *state, *params.values()]

    def second(layer_fn):
        y, final = layer_fn(SPECS[cell], x, state, params, bs, True)
        loss = y.pow(2).sum() + sum(s.pow(2).sum() for s in final)
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        penalty = sum(g.pow(2).sum() for g in first)
        return [*first, *torch.autograd.grad(penalty, inputs)]

    for got, want in zip(second(lstm_numba.layer), second(reference.layer)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "layernorm", "gru"])
def test_create_graph_with_weights_that_made_the_input(cell):
    """The same layer applied to its own output, from its own final state (weights shared across
    calls): with create_graph=True each call's backward counts only its own use of the weights, so
    the gradients equal a plain backward's, and the second derivatives the reference's."""
    params = make_params(cell, 4, 4, 0)
    x, state, _ = make_inputs(cell, 3, 2, 4, 4, 0)

    def grads(layer_fn, create_graph):
        y1, final = layer_fn(SPECS[cell], x, state, params, None, False)
        y2, _ = layer_fn(SPECS[cell], y1, final, params, None, False)
        first = torch.autograd.grad(y2.pow(2).sum(), list(params.values()), create_graph=create_graph)
        if not create_graph:
            return first
        return [*first, *torch.autograd.grad(sum(g.pow(2).sum() for g in first), list(params.values()))]

    plain = grads(lstm_numba.layer, False)
    got, want = grads(lstm_numba.layer, True), grads(reference.layer, True)
    for a, b in zip(got[:len(plain)], plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------
# torch.func and forward-mode AD: the reference's numbers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_func_reverse_transforms_match_reference(cell):
    """torch.func.grad, vjp and jacrev through the module on backend="numba" (the CPU default),
    as torch.nn.LSTM takes them: the reference's numbers (the backend hands the layer over)."""
    ref, fast = module_pair(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=F64)
    params = {n: p.detach() for n, p in fast.named_parameters()}

    def results(m):
        def out(p, x):
            return functional_call(m, p, (x,))[0]
        y, pullback = vjp(out, params, x)
        return (grad(lambda p, x: out(p, x).pow(2).sum(), argnums=(0, 1))(params, x),
                pullback(torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)),
                jacrev(out, argnums=(0, 1))(params, x))

    torch.testing.assert_close(results(fast), results(ref), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_vmap_matches_reference(cell):
    """torch.func.vmap, alone (inference) and over grad (per-sample gradients): the reference's
    numbers, where the kernels could not read vmap's batched tensors."""
    ref, fast = module_pair(cell, input_size=3, hidden_size=4)
    xs = torch.randn(3, 4, 2, 3, dtype=F64)
    params = {n: p.detach() for n, p in fast.named_parameters()}

    def results(m):
        def loss(p, x):
            return functional_call(m, p, (x,))[0].pow(2).sum()
        with torch.no_grad():
            ys = vmap(lambda x: m(x)[0])(xs)
        return ys, vmap(grad(loss), in_dims=(None, 0))(params, xs)

    torch.testing.assert_close(results(fast), results(ref), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("params_need_grad", [False, True], ids=["frozen", "trainable"])
def test_forward_mode_ad_matches_reference(cell, params_need_grad):
    """Forward-mode AD (torch.autograd.forward_ad, torch.func.jvp and jacfwd): the reference's
    tangents, whether or not the parameters require grad. Before, frozen parameters took the
    no-grad path, which dropped the tangent (None), and trainable ones raised in the Function."""
    ref, fast = module_pair(cell, input_size=3, hidden_size=4, num_layers=2)
    for m in (ref, fast):
        m.requires_grad_(params_need_grad)
    g = torch.Generator().manual_seed(4)
    x, tangent = (torch.randn(5, 2, 3, generator=g, dtype=F64) for _ in range(2))

    def results(m):
        with fwAD.dual_level():
            y = fwAD.unpack_dual(m(fwAD.make_dual(x, tangent))[0])
            assert y.tangent is not None
            dual = (y.primal.clone(), y.tangent.clone())
        return dual, jvp(lambda x: m(x)[0], (x,), (tangent,)), jacfwd(lambda x: m(x)[0])(x[:2, :1])

    torch.testing.assert_close(results(fast), results(ref), rtol=1e-9, atol=1e-10)


def test_batched_gradients_take_the_reference_backward():
    """A backward whose incoming gradients vmap batches (autograd.grad's is_grads_batched,
    jacobian(vectorize=True)): the reference's backward, as the kernel cannot read them."""
    ref, fast = module_pair("lstm", input_size=3, hidden_size=4)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)

    def results(m):
        y = m(x)[0]
        assert m is ref or type(y.grad_fn).__name__ == "_LayerFunctionBackward"  # the kernel's Function
        basis = torch.eye(y.numel(), dtype=F64)[:4].view(4, *y.shape)
        return (torch.autograd.grad(y, x, basis, is_grads_batched=True),
                torch.autograd.functional.jacobian(lambda x: m(x)[0], x, vectorize=True))

    torch.testing.assert_close(results(fast), results(ref), rtol=1e-9, atol=1e-10)


def test_first_use_inside_a_transform_leaves_the_kernels_working():
    """A process whose first call is inside torch.func.grad imports the backend there: a tensor
    the module makes at import would be one of the transform's wrappers, with no memory for the
    kernels of every later call."""
    import subprocess
    import sys
    code = ("import torch, lstmkit; from torch.func import functional_call, grad;"
            "m = lstmkit.LSTM(3, 4); x = torch.randn(4, 2, 3);"
            "grad(lambda p: functional_call(m, p, (x,))[0].sum())({n: t.detach() for n, t in m.named_parameters()});"
            "m(x)[0].sum().backward()")
    subprocess.run([sys.executable, "-c", code], check=True)


# A child process's numba layers: outputs, final states and every gradient of each cell run() is given,
# saved to argv[1], so that two processes can be compared bit for bit.
_CHILD_RUN = textwrap.dedent("""
    import sys, torch, lstmkit
    def run(cells):
        out = {}
        for cell in cells:
            for B in (1, 5):
                torch.manual_seed(0)
                m = lstmkit.LSTM(6, 37, cell=cell, backend="numba")
                x = torch.randn(7, B, 6, requires_grad=True)
                y, (h, c) = m(x)
                (y.square().sum() + h.sum() + 2 * c.sum()).backward()
                got = {"y": y, "h": h, "c": c, "dx": x.grad, **{n: p.grad for n, p in m.named_parameters()}}
                out.update({f"{cell}.{B}.{n}": t.detach() for n, t in got.items()})
        torch.save(out, sys.argv[1])
""")


def _child_run(tmp_path, name, cache, code):
    """Run _CHILD_RUN then `code` in a fresh process with NUMBA_CACHE_DIR=tmp_path/cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / cache))
    path = tmp_path / f"{name}.pt"
    subprocess.run([sys.executable, "-c", _CHILD_RUN + code, str(path)], env=env, check=True, timeout=600)
    return torch.load(path)


def _differing(a, b):
    assert a.keys() == b.keys()
    return [n for n in a if not torch.equal(a[n], b[n])]


def test_a_process_that_compiles_and_one_that_loads_the_cache_agree_bit_for_bit(tmp_path):
    """A run resumed from a checkpoint loads the kernels its first process compiled and cached;
    it continues that run exactly only if both round alike (see JIT_EXACT)."""
    fresh, cached = (_child_run(tmp_path, f"run{k}", "cache", 'run(("lstm", "peephole", "layernorm"))')
                     for k in range(2))
    assert any((tmp_path / "cache").rglob("*.nbi")), "the first process cached nothing"
    differ = _differing(fresh, cached)
    assert not differ, f"fresh and cached kernels differ on {differ}"


def test_a_cell_computes_alike_whichever_kernel_its_process_compiled_first(tmp_path):
    """The activations are compiled once per process and shared by every kernel. Without flags of
    their own they took those of their first caller: a process that ran a layer-norm LSTM first
    (its kernels allow FMAs) computed a plain LSTM's gates with other roundings than one that ran
    the LSTM alone, and numba's disk cache kept each kernel as compiled, so a run's numbers depended
    on which models had filled the cache before it. Each process compiles everything (its own cache)."""
    alone = _child_run(tmp_path, "alone", "alone", 'run(("lstm",))')
    first = ("with torch.no_grad():\n"
             "    lstmkit.LSTM(6, 37, cell='layernorm', backend='numba')(torch.randn(3, 2, 6))\n")
    after = _child_run(tmp_path, "after", "after", first + 'run(("lstm",))')
    differ = _differing(alone, after)
    assert not differ, f"the LSTM's numbers depend on the kernel compiled first: {differ}"


def test_needs_reference_only_for_what_the_kernels_cannot_take():
    """Plain tensors, duals without a tangent and torch.compile's tracing take the kernels;
    tangents and torch.func's transforms the reference."""
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    assert not needs_reference((x, w))
    with fwAD.dual_level():
        assert not needs_reference((x, w))
        assert needs_reference((fwAD.make_dual(x, torch.ones(3)), w))
    found = []
    grad(lambda x: found.append(needs_reference((x, w))) or x.sum())(x)
    vmap(lambda x: found.append(needs_reference((x, w))) or x)(torch.randn(2, 3))
    assert found == [True, True]


def _traced(m: torch.nn.Module, x: torch.Tensor, how: str) -> torch.nn.Module:
    if how == "jit.trace":
        with warnings.catch_warnings():  # torch 2.13 deprecates it, and warns about its own tracing
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.trace(m, (x,))
    return torch.export.export(m, (x,), strict=how == "export strict").module()


@pytest.mark.parametrize("how", ["jit.trace", "export", "export strict"])
@pytest.mark.parametrize("backend", ["numba", "auto"])
def test_traces_and_exports_record_the_reference(backend, how):
    """A trace or an exported program is torch ops: a kernel call would be missing from its graph
    (while tracing, sizes are tensors, which the kernels' host code cannot take; export's fake
    tensors have no memory to read; strict export cannot step over the kernels' dynamo guard)."""
    torch.manual_seed(0)
    m = lstmkit.LSTM(3, 5, num_layers=2, bidirectional=True, backend=backend).double()
    traced = _traced(m, torch.randn(4, 2, 3, dtype=torch.float64), how)
    other = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)  # the graph, not the example's values
    want, (hn, cn) = m(other)
    got, (hn_t, cn_t) = traced(other)
    for a, b in ((got, want), (hn_t, hn), (cn_t, cn)):
        torch.testing.assert_close(a, b)
    (dx,) = torch.autograd.grad(got.sum(), other)
    torch.testing.assert_close(dx, torch.autograd.grad(want.sum(), other)[0])


def test_torch_compile_resolves_without_warnings_and_graphs_the_kernels():
    """torch.compile of a module: the resolve path caches in plain dicts (dynamo warned once
    about the functools cache wrappers and broke the graph at importlib), and the layer is one
    operator of the graph (dynamo traced the reference instead when it took torch.func's state
    for a transform; later it broke the graph before the kernels, which ran eagerly)."""
    counters = torch._dynamo.utils.counters
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    m = lstmkit.LSTM(3, 4, backend="numba")
    x = torch.randn(5, 2, 3)
    want = m(x)[0]
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = torch.compile(m, backend=backend)(x)[0]
    breaks = list(counters["graph_break"])
    torch._dynamo.reset()
    assert not [w for w in caught if "cache" in str(w.message)], [str(w.message) for w in caught]
    assert not breaks, breaks
    targets = [str(n.target) for gm in graphs for n in gm.graph.nodes]
    assert "lstmkit.numba_layer.default" in targets, targets
    assert "unbind" not in targets  # the reference's loop over the steps was not traced
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_compile_of_a_first_use_does_not_trace_numba():
    """In a fresh process the numba backend is first used inside torch.compile, with
    fullgraph=True: the module imported it when built (an import inside the compiled call broke
    the graph), and numba's compiler is not traced (it was, frame by frame: recompile-limit
    warnings, and seconds more)."""
    code = textwrap.dedent("""
        import torch, lstmkit
        m = lstmkit.LSTM(3, 4)
        x = torch.randn(5, 2, 3, requires_grad=True)
        y, _ = torch.compile(m, fullgraph=True)(x)
        y.sum().backward()
        ref = lstmkit.LSTM(3, 4, backend="reference")
        ref.load_state_dict(m.state_dict())
        torch.testing.assert_close(y, ref(x)[0], rtol=1e-5, atol=1e-6)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-4000:]
    assert "recompile_limit" not in r.stderr and "numba" not in r.stderr, r.stderr[-4000:]


def _compiled_case_grads(model, fn, x, lengths):
    """Outputs, final h and every gradient of a loss that reads the output (changed in place
    first, as a caller may) and the final states."""
    xx = x.clone().requires_grad_()
    inp = pack_padded_sequence(xx, lengths, enforce_sorted=False) if lengths else xx
    y, state = fn(inp)
    y = y.data if lengths else y
    y.relu_()
    h = state[0] if isinstance(state, tuple) else state
    loss = y.sin().sum() + 0.3 * h.sum() + (0.7 * state[1].sum() if isinstance(state, tuple) else 0)
    return [y, h, *torch.autograd.grad(loss, [xx, *model.parameters()])]


@pytest.mark.parametrize("cls, kwargs, shape", [
    (lstmkit.LSTM, dict(), (1, 1, 5)),
    (lstmkit.LSTM, dict(cell="peephole", num_layers=2, bidirectional=True), (4, 3, 5)),
    (lstmkit.LSTM, dict(cell="cifg", batch_first=True), (3, 4, 5)),
    (lstmkit.LSTM, dict(cell="layernorm", proj_size=3), (4, 2, 5)),
    (lstmkit.LSTM, dict(proj_size=3, num_layers=2), (4, 3, 5)),
    (lstmkit.GRU, dict(num_layers=2), (4, 3, 5)),
    (lstmkit.RNN, dict(bidirectional=True, nonlinearity="relu"), (4, 3, 5)),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
@pytest.mark.parametrize("hidden", [7, 40])  # 40: the unit split's blocked gate layout at small batches
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_compile_fullgraph_matches_eager(cls, kwargs, shape, hidden, dtype):
    """A whole module in one graph: outputs, final states and every gradient are the eager
    kernels' (aot_eager: the operators as inductor receives them, without its compile time)."""
    torch.manual_seed(0)
    model = cls(5, hidden, backend="numba", **kwargs).to(dtype)
    x = torch.randn(*shape, dtype=dtype)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    want = _compiled_case_grads(model, model, x, None)
    got = _compiled_case_grads(model, compiled, x, None)
    torch._dynamo.reset()
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"item {k}: {m}")
    with torch.no_grad():  # inference: the operator saves nothing
        torch.testing.assert_close(compiled(x)[0], model(x)[0], rtol=0, atol=0)
    torch._dynamo.reset()


def test_torch_compile_with_inductor_and_packed_input_matches_eager():
    """The default backend (inductor) around the operators, and a PackedSequence, whose
    batch sizes dynamo reads as data (a graph break, so no fullgraph)."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(5, 40, num_layers=2, backend="numba")
    x = torch.randn(4, 3, 5)
    for lengths, fullgraph in ((None, True), ([4, 2, 1], False)):
        want = _compiled_case_grads(model, model, x, lengths)
        got = _compiled_case_grads(model, torch.compile(model, fullgraph=fullgraph), x, lengths)
        torch._dynamo.reset()
        for k, (a, b) in enumerate(zip(got, want)):
            torch.testing.assert_close(a, b, msg=lambda m: f"{lengths} item {k}: {m}")


@pytest.mark.parametrize("cell, proj", [("lstm", False), ("layernorm", True), ("gru", False)])
def test_graph_operators_pass_torchs_opcheck(cell, proj):
    """The operators' schema, fakes (shapes and strides of every output, for every saving mode)
    and autograd registration, by torch.library.opcheck against the real kernels. Unpacked: a
    packed call leaves its buffers' padding unwritten, which opcheck would compare (the packed
    operators are checked through the module, in the tests above)."""
    torch.manual_seed(0)
    model = (lstmkit.GRU(3, 4) if cell == "gru" else lstmkit.LSTM(3, 4, cell=cell, proj_size=2 * proj)).double()
    names = ",".join(n.removesuffix("_l0") for n, _ in model.named_parameters())
    values = [p.detach() for p in model.parameters()]
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    h0 = torch.randn(3, 2 if proj else 4, dtype=torch.float64)
    c0 = None if cell == "gru" else torch.randn(3, 4, dtype=torch.float64)
    for save, copy_y in ((True, True), (True, False), (False, False)):
        def recorded(t):  # a saving call records autograd, a call that saves nothing does not
            return None if t is None else t.clone().requires_grad_(save)
        args = (cell, names, False, save, copy_y, recorded(x), recorded(h0), recorded(c0),
                [recorded(v) for v in values], None)
        torch.library.opcheck(lstm_numba._layer_op, args,
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_importing_and_running_the_library_loads_no_dynamo():
    """Keeping dynamo out of a traced call must not import it (a second of every command's start)."""
    code = ("import sys, torch, lstmkit; lstmkit.LSTM(3, 4)(torch.randn(2, 1, 3)); "
            "print('torch._dynamo' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr[-2000:]


def test_cpu_autocast_computes_in_float32():
    """Under CPU autocast the kernels run in the parameters' float32, forward and backward (a
    bf16 GEMM would meet the float32 kernel half way): the numbers of a run without autocast."""
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, 5, num_layers=2, backend="numba")
    x = torch.randn(4, 2, 3)

    def run(autocast):
        lstm.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y, _ = lstm(x)
            y.sum().backward()
        return [y, *(p.grad for p in lstm.parameters())]

    for got, want in zip(run(True), run(False)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_mixed_dtypes_raise():
    """The kernels are chosen by x's dtype: any other tensor's dtype is an error, not a misread."""
    params = make_params("lstm", 3, 4)
    params["weight_hh"] = params["weight_hh"].float()
    x, state, _ = make_inputs("lstm", 2, 2, 3, 4)
    with pytest.raises(TypeError, match="weight_hh: expected dtype torch.float64 .the input's., got torch.float32"):
        lstm_numba.layer(SPECS["lstm"], x, state, params)
    with pytest.raises(TypeError, match="c0: expected dtype torch.float64"):
        lstm_numba.layer(SPECS["lstm"], x, (state[0], state[1].float()), make_params("lstm", 3, 4))


def test_a_tensor_on_another_device_raises_instead_of_being_read_as_host_memory():
    """The kernels read raw addresses: a meta (or CUDA) state or weight was a segfault."""
    x, state, _ = make_inputs("lstm", 2, 2, 3, 4)
    params = make_params("lstm", 3, 4)
    with pytest.raises(ValueError, match=r"^c0: expected a tensor on cpu \(the input's device\), got meta$"):
        lstm_numba.layer(SPECS["lstm"], x, (state[0], state[1].to("meta")), params)
    with pytest.raises(ValueError, match=r"^weight_hh: expected a tensor on cpu \(the input's device\), got meta$"):
        lstm_numba.layer(SPECS["lstm"], x, state, {**params, "weight_hh": params["weight_hh"].to("meta")})


# --------------------------------------------------------------------------------------
# the modules: multi-layer, bidirectional, projection, PackedSequence (unsorted)
# --------------------------------------------------------------------------------------


def make_module(cls_kwargs, backend):
    cell = cls_kwargs.pop("cell")
    if cell == "gru":
        cls = lstmkit.GRU
    elif cell.startswith("rnn_"):
        cls = lstmkit.RNN
        cls_kwargs["nonlinearity"] = cell[4:]
    else:
        cls = lstmkit.LSTM
        cls_kwargs["cell"] = cell
    return cls(**cls_kwargs, backend=backend, dtype=F64)


def module_pair(cell, **kwargs):
    torch.manual_seed(0)
    ref = make_module(dict(kwargs, cell=cell), "reference")
    fast = make_module(dict(kwargs, cell=cell), "numba")
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def module_grads(m, out, inputs):
    data = out[0].data if isinstance(out[0], torch.nn.utils.rnn.PackedSequence) else out[0]
    final = out[1] if isinstance(out[1], tuple) else (out[1],)
    w = torch.linspace(-1, 1, data.numel(), dtype=data.dtype).view_as(data)
    loss = (data * w).sum() + sum((s * (k + 1.5)).sum() for k, s in enumerate(final))
    names = [n for n, _ in m.named_parameters()]
    grads = torch.autograd.grad(loss, inputs + [p for _, p in m.named_parameters()])
    return dict(zip(["out", *[f"final{k}" for k in range(len(final))], *[f"din{k}" for k in range(len(inputs))],
                     *names], [data, *final, *grads]))


@pytest.mark.parametrize("cell", CELLS)
def test_module_stacked_bidirectional(cell):
    proj = 3 if cell in LSTM_FAMILY else 0
    ref, fast = module_pair(cell, input_size=4, hidden_size=5, num_layers=2, bidirectional=True, batch_first=True,
                            **({"proj_size": proj} if proj else {}))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 4, generator=g, dtype=F64, requires_grad=True)  # (B, T, I): batch_first
    h0 = torch.randn(4, 3, proj or 5, generator=g, dtype=F64, requires_grad=True)
    hx = (h0, torch.randn(4, 3, 5, generator=g, dtype=F64, requires_grad=True)) if cell in LSTM_FAMILY else h0
    inputs = [x, *(hx if isinstance(hx, tuple) else (hx,))]
    want = module_grads(ref, ref(x, hx), inputs)
    got = module_grads(fast, fast(x, hx), inputs)
    assert_all_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layout", ["time-major", "batch_first", "unbatched", "packed"])
@pytest.mark.parametrize("cell", CELLS)
def test_output_changed_in_place_before_the_backward(cell, layout):
    """y.relu_() between forward and backward: the gradients are those of relu(y), as on the
    reference and torch.nn.GRU/RNN (the kernels used to save y itself, and autograd refused);
    batch_first and unbatched outputs are views of the last layer's y, packed data is gathered
    from it (and y saved uncopied)."""
    ref, fast = module_pair(cell, input_size=3, hidden_size=5, num_layers=2, batch_first=layout == "batch_first")
    shape = (4, 3) if layout == "unbatched" else (4, 2, 3)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(4), dtype=F64, requires_grad=True)

    def grads(m):
        y = m(pack_padded_sequence(x, torch.tensor([4, 3])) if layout == "packed" else x)[0]
        y = y.data if layout == "packed" else y
        y.relu_()
        return dict(zip(["x", *[n for n, _ in m.named_parameters()]],
                        torch.autograd.grad((y * torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)).sum(),
                                            [x, *m.parameters()])))

    assert_all_close(grads(fast), grads(ref), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_hidden_outputs_are_saved_once(cell, packed):
    """A hidden layer's y is saved as the tensor the next layer saves as its x: only the output
    the caller gets is saved as a copy (every layer's used to be, so a hidden y was held twice)."""
    torch.manual_seed(0)
    m = make_module(dict(cell=cell, input_size=3, hidden_size=5, num_layers=3), "numba")
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        m(pack_padded_sequence(x, torch.tensor([4, 3])) if packed else x)
    seqs = list({t.data_ptr(): t for t in saved if t.dim() == 3 and t.shape[:2] == (4, 2) and t.numel()}.values())
    twins = [a.shape for k, a in enumerate(seqs) for b in seqs[k + 1:] if a.shape == b.shape and torch.equal(a, b)]
    assert len(seqs) > 3 and twins == []


@pytest.mark.parametrize("cell", ["lstm", "peephole", "layernorm", "gru"])
def test_module_packed_unsorted(cell):
    proj = 2 if cell in LSTM_FAMILY else 0
    ref, fast = module_pair(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                            **({"proj_size": proj} if proj else {}))
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([2, 6, 1, 5, 6])
    x = torch.randn(6, 5, 3, generator=g, dtype=F64, requires_grad=True)
    want = module_grads(ref, ref(pack_padded_sequence(x, lengths, enforce_sorted=False)), [x])
    got = module_grads(fast, fast(pack_padded_sequence(x, lengths, enforce_sorted=False)), [x])
    assert_all_close(got, want, rtol=1e-9, atol=1e-10)


def test_module_matches_torch_lstm_float32():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(8, 16, num_layers=2, proj_size=6)
    fast = lstmkit.LSTM(8, 16, num_layers=2, proj_size=6, backend="numba")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(9, 4, 8)
    y_ref, (h_ref, c_ref) = ref(x)
    y, (h, c) = fast(x)
    for a, b in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)


# --------------------------------------------------------------------------------------
# inference path, threads, dispatch
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_equals_grad_path(cell):
    params = make_params(cell, 3, 5, proj=2 if cell in LSTM_FAMILY else 0)
    x, state, bs = make_inputs(cell, 5, 4, 3, 5, proj=2 if cell in LSTM_FAMILY else 0, lengths=[5, 4, 2, 2])
    y, final = lstm_numba.layer(SPECS[cell], x, state, params, bs, False)
    assert y.requires_grad
    with torch.no_grad():
        y2, final2 = lstm_numba.layer(SPECS[cell], x, state, params, bs, False)
    assert not y2.requires_grad
    # nothing requiring grad takes the same no-save path as no_grad
    y3, _ = lstm_numba.layer(SPECS[cell], x.detach(), tuple(s.detach() for s in state),
                             {n: p.detach() for n, p in params.items()}, bs, False)
    torch.testing.assert_close(y2, y.detach(), rtol=0, atol=0)
    torch.testing.assert_close(y3, y.detach(), rtol=0, atol=0)
    for a, b in zip(final2, final):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("B", [1, 3, 4, 5])
def test_float32_few_rows_match_reference(B, threads):
    """float32 at the few-row boundary: plain loops (a team of one, or the unit split) and brgemm
    (rows split between threads), forward and backward."""
    compare_layer_float32("lstm", 5, B, 3, 40, 2e-5)


@pytest.mark.skipif(not lstm_numba.K.BRGEMM, reason="torch exports no at::native::cpublas::brgemm")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B, lengths, bias, reverse", [(1, 1, None, True, False), (7, 2, [7, 3], False, True)],
                         ids=["T1B1", "packed-nobias-reverse"])
def test_float32_input_part_by_columns_matches_reference(cell, T, B, lengths, bias, reverse, two_threads):
    """With brgemm and few rows, the unit split (every cell but layer norm) and layer norm's column
    split form the input part of their own gate columns for every step, in the kernel, before the
    first step: blocked columns gathered from natural ones, a last block part-filled (H=37)."""
    plan = lstm_numba._plan(lstm_numba.CELL_CODES[cell], B, 37, False, brgemm=True)
    assert plan.cols if cell == "layernorm" else plan.units
    compare_layer_float32(cell, T, B, 5, 37, 1e-4, lengths=lengths, reverse=reverse, bias=bias)


@pytest.mark.skipif(not lstm_numba.K.BRGEMM, reason="torch exports no at::native::cpublas::brgemm")
@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_equals_grad_path_float32(cell, two_threads):
    """float32, row split: the no-save forward keeps one step of gates as scratch; same numbers."""
    params = {n: t.float() for n, t in make_params(cell, 3, 9).items()}
    x, state, bs = make_inputs(cell, 6, 12, 3, 9, dtype=torch.float32, lengths=[6] * 5 + [4] * 4 + [1] * 3)
    assert not lstm_numba._plan(lstm_numba.CELL_CODES[cell], 12, 9, False, brgemm=True).units
    x.requires_grad_()
    y, final = lstm_numba.layer(SPECS[cell], x, state, params, bs, True)
    with torch.no_grad():
        y2, final2 = lstm_numba.layer(SPECS[cell], x, state, params, bs, True)
    torch.testing.assert_close(y2, y.detach(), rtol=0, atol=0)
    for a, b in zip(final2, final):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts(threads):
    """One thread runs the kernel in the caller; more split the rows over torch's OpenMP pool."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        compare_layer("lstm", 5, 7, 3, 4, lengths=[5, 5, 4, 3, 3, 1, 1])
    finally:
        torch.set_num_threads(old)


def test_weights_changed_through_data_are_used(two_threads):
    """`p.data` updates keep the version counter: nothing derived from the weights may be cached."""
    torch.manual_seed(0)
    m = lstmkit.LSTM(3, 40, backend="numba")
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        y1, _ = m(x)
        for p in m.parameters():
            p.data.mul_(0.5)
        y2, _ = m(x)
        ref = lstmkit.LSTM(3, 40, backend="reference")
        ref.load_state_dict(m.state_dict())
        torch.testing.assert_close(y2, ref(x)[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y1, y2)


@pytest.mark.skipif(not lstm_numba.K.BRGEMM, reason="torch exports no at::native::cpublas::brgemm")
def test_reused_panels_follow_data_writes(two_threads):
    """brgemm's weight panels are reused across calls only while the values are the same."""
    torch.manual_seed(0)
    m = lstmkit.LSTM(5, 24, proj_size=7, backend="numba")
    ref = lstmkit.LSTM(5, 24, proj_size=7, backend="reference")
    x = torch.randn(6, 12, 5)  # 12 rows on 2 threads: the row split, on brgemm
    m(x)[0].sum().backward()
    for p in m.parameters():
        version = p._version
        p.data.mul_(-0.5)
        assert p._version == version  # what a version-keyed cache would miss
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)
    m.zero_grad()
    m(x)[0].sum().backward()
    ref(x)[0].sum().backward()
    for (name, a), b in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    wt = panels(m.weight_hh_l0, transpose=True)  # W_hh^T (7, 96): a full panel and a padded one
    assert wt is panels(m.weight_hh_l0, transpose=True)  # reused while unchanged
    w_t = m.weight_hh_l0.detach().t()
    assert wt.shape == (2, 7, PANEL) and torch.equal(wt[0], w_t[:, :64]) and torch.equal(wt[1, :, :32], w_t[:, 64:])
    assert not wt[1, :, 32:].any()


def test_auto_picks_numba_on_cpu():
    assert BACKENDS["numba"] == "lstmkit.kernels.lstm_numba"
    for cell in CELLS:
        assert resolve_backend("auto", "cpu", cell) is lstm_numba.layer
        assert resolve_backend("numba", "cpu", cell) is lstm_numba.layer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_takes_the_reference_under_auto_and_raises_when_named(dtype):
    """The kernels run float32 and float64: "auto" hands other dtypes to the reference, an
    explicit backend="numba" says it cannot take them (the dispatch, and the layer called directly)."""
    assert resolve_backend("auto", "cpu", "lstm", dtype) is reference.layer
    assert resolve_backend("auto", "cpu", "lstm", torch.float32) is lstm_numba.layer
    message = rf"x: backend 'numba' takes dtypes \[torch.float32, torch.float64\], got {dtype}"
    with pytest.raises(TypeError, match=message):
        resolve_backend("numba", "cpu", "lstm", dtype)
    params = {n: p.detach().to(dtype) for n, p in make_params("lstm", 3, 4).items()}
    x, state, _ = make_inputs("lstm", 3, 2, 3, 4)
    x, state = x.detach().to(dtype), tuple(s.detach().to(dtype) for s in state)
    with pytest.raises(TypeError, match=message):
        lstm_numba.layer(SPECS["lstm"], x, state, params, None, False)
    torch.manual_seed(0)
    auto = lstmkit.LSTM(3, 4, backend="auto").to(dtype)
    ref = lstmkit.LSTM(3, 4, backend="reference").to(dtype)
    ref.load_state_dict(auto.state_dict())
    y, (h, c) = auto(x)
    y_ref, (h_ref, c_ref) = ref(x)
    assert torch.equal(y, y_ref) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    with pytest.raises(TypeError, match=message):
        lstmkit.LSTM(3, 4, backend="numba").to(dtype)(x)


def test_a_device_other_than_cpu_is_named_in_the_error():
    x, state, _ = make_inputs("lstm", 2, 1, 3, 4)
    with pytest.raises(ValueError, match=r"x: expected a cpu tensor \(backend 'numba' runs on CPU\), got meta"):
        lstm_numba.layer(SPECS["lstm"], x.detach().to("meta"), state, make_params("lstm", 3, 4))


def test_import_compiles_nothing():
    """Importing the backend compiles no kernel: each compiles (or loads from cache) on first use."""
    import subprocess
    import sys
    code = ("import lstmkit.kernels.lstm_numba as m, lstmkit.kernels.lstm_numba_cells as c, numba;"
            "from numba.core.registry import CPUDispatcher;"
            "ds = [v for v in vars(c).values() if isinstance(v, CPUDispatcher)];"
            "assert ds and not any(d.signatures for d in ds), [d for d in ds if d.signatures];"
            "assert not m._bodies")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scratch_is_reused_per_slot_and_thread(monkeypatch):
    """The backward's gate-gradient buffers come from a per-thread workspace: the same memory call
    after call, one buffer per slot, a new one when a call needs more, none kept past the cap."""
    import threading

    monkeypatch.setattr(lstm_numba, "_workspace", lstm_numba._Workspace())  # empty, whatever ran before
    like = torch.zeros(1)
    a = lstm_numba._scratch(0, (3, 2, 4), like)
    b = lstm_numba._scratch(0, (2, 2, 4), like)
    assert a.shape == (3, 2, 4) and b.shape == (2, 2, 4) and a.data_ptr() == b.data_ptr()
    assert lstm_numba._scratch(1, (3, 2, 4), like).data_ptr() != a.data_ptr()
    assert lstm_numba._scratch(0, (5, 2, 4), like).data_ptr() != a.data_ptr()  # grown
    other = []
    t = threading.Thread(target=lambda: other.append(lstm_numba._scratch(0, (3, 2, 4), like).data_ptr()))
    t.start()
    t.join()
    assert other[0] != lstm_numba._scratch(0, (3, 2, 4), like).data_ptr()
    monkeypatch.setattr(lstm_numba, "WORKSPACE_MAX_BYTES", 16)
    big = lstm_numba._scratch(2, (2, 4), like)
    assert big.shape == (2, 4) and (2, torch.float32, like.device) not in lstm_numba._workspace.buffers


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_gradients_stay_right_when_backward_calls_share_the_workspace(cell):
    """Two models of different sizes, backward one after the other twice, against the reference."""
    torch.manual_seed(0)
    runs = []
    for T, B, H in ((5, 3, 7), (2, 4, 5), (5, 3, 7)):
        fast = lstmkit.LSTM(4, H, cell=cell, backend="numba", bidirectional=True)
        ref = lstmkit.LSTM(4, H, cell=cell, backend="reference", bidirectional=True)
        ref.load_state_dict(fast.state_dict())
        x = torch.randn(T, B, 4)
        for m in (fast, ref):
            out, _ = m(x)
            (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        runs.append((fast, ref))
    for fast, ref in runs:
        for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
