"""The Elman RNN (Elman 1990), the baseline LSTM was invented to beat."""

from __future__ import annotations

import torch
from torch import Tensor


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
    a = x @ weight_ih.T + h @ weight_hh.T  # (B, H)
    if bias_ih is not None:
        a = a + bias_ih + bias_hh
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)
