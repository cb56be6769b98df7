"""Coupled input-forget gate LSTM (CIFG; Greff et al. 2017, "LSTM: A Search Space Odyssey").

The input gate is tied to the forget gate, i = 1 - f: the cell writes exactly as much as it
forgets. Three gates instead of four, so `weight_ih` is `(3H, I)` with rows f, g, o.

The paper writes the coupling the other way, f = 1 - i, keeping the input gate; this is
TFLite's form (`use_cifg`), which keeps the forget gate and so its bias init. The two families
of functions are the same, since 1 - sigma(a) = sigma(-a): weights of the paper's form (rows
i, g, o) load with the same shapes but compute another function until their first H rows (in
`weight_ih`, `weight_hh` and both biases) are negated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import CIFG_GATES, plus_biases


def cifg_lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor],
    weight_ih: Tensor, weight_hh: Tensor,
    bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One CIFG step.

        [a_f; a_g; a_o] = W x_t + b_{ih} + U h_{t-1} + b_{hh}      W: (3H, I)
        f_t = \sigma(a_f),  g_t = \tanh(a_g),  o_t = \sigma(a_o)
        i_t = 1 - f_t
        c_t = f_t \odot c_{t-1} + i_t \odot g_t
        h_t = o_t \odot \tanh(c_t)                 (then W_hr h_t with a projection)
    """
    h, c = state
    gates = plus_biases(x @ weight_ih.T + h @ weight_hh.T, bias_ih, bias_hh)  # (B, 3H)
    a_f, a_g, a_o = gates.chunk(len(CIFG_GATES), 1)  # 3 x (B, H)
    f, g, o = torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    i = 1 - f
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    if weight_hr is not None:
        h_next = h_next @ weight_hr.T  # (B, P)
    return h_next, c_next
