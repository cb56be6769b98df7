"""The Elman RNN (Elman 1990), the baseline LSTM was invented to beat."""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import plus_biases

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_cell(
    x: Tensor, h: Tensor,
    weight_ih: Tensor, weight_hh: Tensor,
    bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    r"""One Elman step: h_t = \phi(W x_t + b_{ih} + U h_{t-1} + b_{hh}), \phi = tanh or relu.

    The gradient through T steps is a product of T Jacobians diag(\phi') U: it vanishes or
    explodes geometrically, which is what the LSTM's additive cell path avoids.
    """
    if nonlinearity not in NONLINEARITIES:  # a misspelt name must not run as the other one
        raise ValueError(f"nonlinearity: expected one of {list(NONLINEARITIES)}, got {nonlinearity!r}")
    a = plus_biases(x @ weight_ih.T + h @ weight_hh.T, bias_ih, bias_hh)  # (B, H)
    return NONLINEARITIES[nonlinearity](a)
