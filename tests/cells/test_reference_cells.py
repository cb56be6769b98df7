"""Reference cells against their equations, against each other, and under gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lstmkit
from lstmkit.cells import (CELLS, cifg_lstm_cell, gru_cell, layer_norm, layernorm_lstm_cell, lstm_cell,
                           lstm_cell_plain, peephole_lstm_cell, rnn_cell, split_gates)
from lstmkit.cells.sequence import reference_layer

B, I, H = 3, 4, 5
f64 = torch.float64


def _params(cell: str, hidden: int = H, inp: int = I, proj: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random parameters for one layer of `cell`, built by the module so names/shapes are the real ones."""
    torch.manual_seed(seed)
    module = lstmkit.nn.RecurrentBase(cell, inp, hidden, proj_size=proj, dtype=f64)
    params = {k: v.detach().clone() for k, v in module.layer_params(0, 0).items()}
    for name, p in params.items():
        if name.startswith("ln_"):  # LN gains/biases start at 1/0: perturb them so the test sees them
            p.add_(0.3 * torch.randn_like(p))
    return params


def _state(cell: str, batch: int = B, hidden: int = H, out: int | None = None):
    h = torch.randn(batch, out or hidden, dtype=f64)
    return (h, torch.randn(batch, hidden, dtype=f64)) if CELLS[cell].has_cell_state else (h,)


def test_plain_and_fused_lstm_agree():
    p = _params("lstm")
    x, (h, c) = torch.randn(B, I, dtype=f64), _state("lstm")
    fused = lstm_cell(x, (h, c), **p)
    plain = lstm_cell_plain(x, (h, c), **split_gates(p["weight_ih"], p["weight_hh"], p["bias_ih"] + p["bias_hh"]))
    for a, b in zip(plain, fused):
        torch.testing.assert_close(a, b)


def test_fused_lstm_matches_torch_lstm_cell():
    p = _params("lstm")
    x, (h, c) = torch.randn(B, I, dtype=f64), _state("lstm")
    ref = torch.lstm_cell(x, (h, c), p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    for a, b in zip(lstm_cell(x, (h, c), **p), ref):
        torch.testing.assert_close(a, b)


def test_peephole_with_zero_peepholes_is_lstm():
    p = _params("peephole")
    for name in ("weight_ci", "weight_cf", "weight_co"):
        p[name] = torch.zeros_like(p[name])
    x, state = torch.randn(B, I, dtype=f64), _state("peephole")
    base = {k: v for k, v in p.items() if not k.startswith("weight_c")}
    for a, b in zip(peephole_lstm_cell(x, state, **p), lstm_cell(x, state, **base)):
        torch.testing.assert_close(a, b)


def test_peephole_gates_read_previous_and_new_cell_state():
    p = _params("peephole")
    x, (h, c) = torch.randn(B, I, dtype=f64), _state("peephole")
    a = x @ p["weight_ih"].T + h @ p["weight_hh"].T + p["bias_ih"] + p["bias_hh"]
    a_i, a_f, a_g, a_o = a.chunk(4, 1)
    i = torch.sigmoid(a_i + p["weight_ci"] * c)
    f = torch.sigmoid(a_f + p["weight_cf"] * c)
    c_next = f * c + i * torch.tanh(a_g)
    h_next = torch.sigmoid(a_o + p["weight_co"] * c_next) * torch.tanh(c_next)
    got = peephole_lstm_cell(x, (h, c), **p)
    torch.testing.assert_close(got[0], h_next)
    torch.testing.assert_close(got[1], c_next)


def test_cifg_couples_input_to_forget_gate():
    p = _params("cifg")
    assert p["weight_ih"].shape == (3 * H, I)
    x, (h, c) = torch.randn(B, I, dtype=f64), _state("cifg")
    a_f, a_g, a_o = (x @ p["weight_ih"].T + h @ p["weight_hh"].T + p["bias_ih"] + p["bias_hh"]).chunk(3, 1)
    f = torch.sigmoid(a_f)
    c_next = f * c + (1 - f) * torch.tanh(a_g)
    got = cifg_lstm_cell(x, (h, c), **p)
    torch.testing.assert_close(got[1], c_next)
    torch.testing.assert_close(got[0], torch.sigmoid(a_o) * torch.tanh(c_next))


def test_layer_norm_matches_torch():
    x, w, b = torch.randn(B, 4 * H, dtype=f64), torch.randn(4 * H, dtype=f64), torch.randn(4 * H, dtype=f64)
    torch.testing.assert_close(layer_norm(x, w, b), F.layer_norm(x, (4 * H,), w, b, eps=1e-5))


def test_layernorm_lstm_places_ln_as_documented():
    p = _params("layernorm")
    x, (h, c) = torch.randn(B, I, dtype=f64), _state("layernorm")
    ln = lambda v, n: F.layer_norm(v, v.shape[-1:], p[f"ln_weight_{n}"], p[f"ln_bias_{n}"])  # noqa: E731
    a = ln(x @ p["weight_ih"].T, "ih") + ln(h @ p["weight_hh"].T, "hh") + p["bias_ih"] + p["bias_hh"]
    a_i, a_f, a_g, a_o = a.chunk(4, 1)
    c_next = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
    got = layernorm_lstm_cell(x, (h, c), **p)
    torch.testing.assert_close(got[1], c_next)
    torch.testing.assert_close(got[0], torch.sigmoid(a_o) * torch.tanh(ln(c_next, "c")))


def test_gru_and_rnn_match_torch_cells():
    x, h = torch.randn(B, I, dtype=f64), torch.randn(B, H, dtype=f64)
    p = _params("gru")
    torch.testing.assert_close(gru_cell(x, h, **p), torch.gru_cell(x, h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]))
    p = _params("rnn_tanh")
    torch.testing.assert_close(rnn_cell(x, h, **p), torch.rnn_tanh_cell(x, h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]))
    torch.testing.assert_close(rnn_cell(x, h, **p, nonlinearity="relu"),
                               torch.rnn_relu_cell(x, h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]))


@pytest.mark.parametrize("cell", list(CELLS))
def test_either_bias_alone_is_added_as_torchs_cells_add_it(cell):
    """Only bias_ih was tested: bias_hh alone was dropped in silence, bias_ih alone raised."""
    spec, p = CELLS[cell], _params(cell)
    x, state = torch.randn(B, I, dtype=f64), _state(cell)
    for given in ("bias_ih", "bias_hh"):
        alone = {**p, "bias_ih": None, "bias_hh": None, given: p[given]}
        zero = {**p, "bias_ih": torch.zeros_like(p["bias_ih"]), "bias_hh": torch.zeros_like(p["bias_hh"]),
                given: p[given]}
        for got, want in zip(spec.step(x, state, alone), spec.step(x, state, zero)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert not torch.equal(spec.step(x, state, alone)[0], spec.step(x, state, {**alone, given: None})[0])


def test_rnn_cell_refuses_an_unknown_nonlinearity():
    """Any name but "tanh" ran as relu: "Tanh" and "sigmoid" gave relu's numbers."""
    x, h, p = torch.randn(B, I, dtype=f64), torch.randn(B, H, dtype=f64), _params("rnn_tanh")
    for name in ("Tanh", "sigmoid"):
        with pytest.raises(ValueError, match=f"^nonlinearity: expected one of \\['tanh', 'relu'\\], got '{name}'$"):
            rnn_cell(x, h, **p, nonlinearity=name)


@pytest.mark.parametrize("proj", [0, 2])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gradcheck_every_cell(cell, proj):
    if proj and not CELLS[cell].has_cell_state:
        pytest.skip("projection exists only for LSTM cells")
    spec = CELLS[cell]
    p = {k: v.requires_grad_() for k, v in _params(cell, hidden=3, inp=2, proj=proj).items()}
    x = torch.randn(2, 2, dtype=f64, requires_grad=True)
    state = tuple(s.requires_grad_() for s in _state(cell, batch=2, hidden=3, out=proj or 3))
    names = list(p)

    def f(x, *rest):
        return spec.step(x, tuple(rest[: len(state)]), dict(zip(names, rest[len(state):])))

    assert torch.autograd.gradcheck(f, (x, *state, *p.values()))


@pytest.mark.parametrize("cell", list(CELLS))
def test_sequence_layer_equals_per_step_cell_calls(cell):
    spec = CELLS[cell]
    p = _params(cell)
    T = 4
    x = torch.randn(T, B, I, dtype=f64)
    state = _state(cell)
    y, final = reference_layer(spec, x, state, p)
    s = state
    for t in range(T):
        s = spec.step(x[t], s, p)
        torch.testing.assert_close(y[t], s[0])
    for a, b in zip(final, s):
        torch.testing.assert_close(a, b)
    # Reverse direction: the same steps, last to first.
    y_rev, _ = reference_layer(spec, x, state, p, reverse=True)
    y_flip, _ = reference_layer(spec, x.flip(0), state, p)
    torch.testing.assert_close(y_rev, y_flip.flip(0))


@pytest.mark.parametrize("cell", ["peephole", "cifg", "layernorm"])
def test_variant_layer_with_lengths_equals_each_row_alone(cell):
    """With batch_sizes, each row gets exactly what running it alone for its own length gives."""
    spec = CELLS[cell]
    p = _params(cell)
    lengths = [5, 3, 3, 1]  # sorted, as PackedSequence keeps them
    x = torch.randn(5, len(lengths), I, dtype=f64)
    state = _state(cell, batch=len(lengths))
    batch_sizes = torch.tensor([sum(n > t for n in lengths) for t in range(5)])
    for reverse in (False, True):
        y, final = reference_layer(spec, x, state, p, batch_sizes, reverse)
        for b, n in enumerate(lengths):
            yb, fb = reference_layer(spec, x[:n, b:b + 1], tuple(s[b:b + 1] for s in state), p, reverse=reverse)
            torch.testing.assert_close(y[:n, b:b + 1], yb)
            assert torch.count_nonzero(y[n:, b]) == 0
            for a, c in zip(final, fb):
                torch.testing.assert_close(a[b:b + 1], c)
