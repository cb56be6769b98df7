"""Bad input raises ValueError/TypeError naming the argument, with expected vs got."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.kernels import resolve_backend


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(input_size=0, hidden_size=4), ValueError, "input_size: expected a positive int, got 0"),
    (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size: expected a positive int, got -1"),
    (dict(input_size=3, hidden_size=4, num_layers=0), ValueError, "num_layers"),
    (dict(input_size=3.0, hidden_size=4), TypeError, "input_size: expected an int, got float"),
    (dict(input_size=3, hidden_size=4, num_layers=2, dropout=1.5), ValueError, r"dropout: expected a float in \[0, 1\], got 1.5"),
    (dict(input_size=3, hidden_size=4, dropout="0.1"), TypeError, "dropout: expected a float in .* got str"),
    (dict(input_size=3, hidden_size=4, dropout=-0.1), ValueError, "dropout"),
    (dict(input_size=3, hidden_size=4, proj_size=4), ValueError, "proj_size: expected 0 <= proj_size < hidden_size=4, got 4"),
    (dict(input_size=3, hidden_size=4, cell="gru"), ValueError, "cell: expected one of"),
    (dict(input_size=3, hidden_size=4, cell="lsmt"), ValueError, "cell: expected one of .* got 'lsmt'"),
    (dict(input_size=3, hidden_size=4, backend="cuda-magic"), ValueError, "backend: expected one of .* got 'cuda-magic'"),
])
def test_constructor_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        lstmkit.LSTM(**kwargs)


@pytest.mark.parametrize("cls", [lstmkit.LSTM, lstmkit.GRU, lstmkit.RNN], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kwargs, pattern", [
    (dict(bias=0), "bias: expected a bool, got int"),
    (dict(batch_first=None), "batch_first: expected a bool, got NoneType"),
    (dict(bias=np.bool_(True)), "bias: expected a bool, got numpy.bool"),
])
def test_flags_must_be_bools_as_torch_wants(cls, kwargs, pattern):
    """bias and batch_first: a TypeError for anything but a bool, where torch.nn's RNNs raise one
    too (bool() took them as truth values)."""
    with pytest.raises(TypeError):
        getattr(torch.nn, cls.__name__)(3, 4, **kwargs)
    with pytest.raises(TypeError, match=pattern):
        cls(3, 4, **kwargs)


def test_bidirectional_takes_a_truth_value_as_torch():
    """torch.nn's RNNs take any truth value for bidirectional (not checked there): so does lstmkit."""
    assert torch.nn.LSTM(3, 4, bidirectional=1).weight_ih_l0_reverse is not None
    assert lstmkit.LSTM(3, 4, bidirectional=1).bidirectional is True


@pytest.fixture
def lstm():
    return lstmkit.LSTM(3, 4, num_layers=2, backend="reference")


def test_wrong_rank(lstm):
    with pytest.raises(ValueError, match=r"input: expected a 3-D \(batched\) or 2-D \(unbatched\) tensor, got 4-D"):
        lstm(torch.randn(2, 2, 2, 3))


def test_wrong_feature_size(lstm):
    with pytest.raises(ValueError, match="input: expected last dimension input_size=3, got 5"):
        lstm(torch.randn(2, 2, 5))


def test_integer_input(lstm):
    with pytest.raises(TypeError, match="input: expected a floating-point tensor, got dtype torch.int64"):
        lstm(torch.ones(2, 2, 3, dtype=torch.long))


def test_dtype_mismatch(lstm):
    with pytest.raises(TypeError, match="input: expected dtype torch.float32"):
        lstm(torch.ones(2, 2, 3, dtype=torch.float64))


def test_state_shapes(lstm):
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"h_0: expected shape \(2, 2, 4\), got \(1, 2, 4\)"):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"c_0: expected shape \(2, 2, 4\), got \(2, 3, 4\)"):
        lstm(x, (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h_0, c_0\)"):
        lstm(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"h_0: expected shape \(2, 4\)"):
        lstm(torch.randn(5, 3), (torch.zeros(2, 1, 4), torch.zeros(2, 1, 4)))


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_a_state_or_the_weights_on_another_device_are_refused_as_torch_refuses_them(backend):
    """torch.nn.LSTM raises; backend "auto" (numba here) read the meta tensor's address: a segfault."""
    x = torch.randn(5, 2, 3)
    lstm = lstmkit.LSTM(3, 4, backend=backend)
    for given in range(2):
        hx = [torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)]
        hx[given] = hx[given].to("meta")
        with pytest.raises(ValueError, match=rf"^{('h_0', 'c_0')[given]}: expected a tensor on cpu "
                                             r"\(the input's device\), got meta$"):
            lstm(x, tuple(hx))
    with torch.no_grad(), pytest.raises(ValueError, match=r"^input: expected a tensor on meta "
                                                          r"\(the parameters' device\), got cpu$"):
        lstmkit.LSTM(3, 4, backend=backend, device="meta")(x)


def test_unknown_backend_name_at_dispatch():
    with pytest.raises(ValueError, match="backend: expected one of"):
        resolve_backend("fastest", "cpu", "lstm")


def test_rnn_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"):
        lstmkit.RNN(3, 4, nonlinearity="sigmoid")


def test_constructor_takes_what_torch_takes():
    """numpy scalars and dropout=1.0 as torch accepts them; dropout on one layer warns as torch does."""
    lstm = lstmkit.LSTM(np.int64(3), 4, num_layers=np.int64(2), dropout=np.float32(1.0), proj_size=np.int64(2))
    assert (lstm.num_layers, lstm.dropout, lstm.proj_size) == (2, 1.0, 2)
    with pytest.warns(UserWarning, match="expects num_layers > 1, got dropout=0.5 and num_layers=1"):
        lstmkit.GRU(3, 4, dropout=0.5)


def test_empty_sequence(lstm):
    with pytest.raises(ValueError, match=r"input: expected a sequence length > 0, got input of shape \(0, 2, 3\)"):
        lstm(torch.randn(0, 2, 3))


def test_state_tuple_of_one(lstm):
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h_0, c_0\) of two tensors, got a tuple of 1"):
        lstm(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4),))


def test_lstm_cell_state_must_be_a_pair():
    cell = lstmkit.LSTMCell(3, 4)
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h, c\) of two tensors, got Tensor"):
        cell(x, torch.zeros(2, 2, 4))  # a stacked (h, c) would otherwise unpack silently
    with pytest.raises(TypeError, match=r"got a tuple of 1"):
        cell(x, (torch.zeros(2, 4),))
