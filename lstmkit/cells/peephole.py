"""Peephole LSTM (Gers & Schmidhuber 2000): the gates also see the cell state.

Not to be confused with the variant some tutorials call "peephole", which replaces h by c in
the recurrent product: here h still drives the gates, and diagonal (elementwise) peephole
weights add the cell state on top. With zero peephole weights this is the standard LSTM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import LSTM_GATES, plus_biases


def peephole_lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor],
    weight_ih: Tensor, weight_hh: Tensor,
    weight_ci: Tensor, weight_cf: Tensor, weight_co: Tensor,
    bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One peephole LSTM step.

        [a_i; a_f; a_g; a_o] = W x_t + b_{ih} + U h_{t-1} + b_{hh}
        i_t = \sigma(a_i + p_i \odot c_{t-1})       p_i = weight_ci, (H,)
        f_t = \sigma(a_f + p_f \odot c_{t-1})       p_f = weight_cf, (H,)
        g_t = \tanh(a_g)
        c_t = f_t \odot c_{t-1} + i_t \odot g_t
        o_t = \sigma(a_o + p_o \odot c_t)           p_o = weight_co, (H,): the new cell state
        h_t = o_t \odot \tanh(c_t)                  (then W_hr h_t with a projection)
    """
    h, c = state
    gates = plus_biases(x @ weight_ih.T + h @ weight_hh.T, bias_ih, bias_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = gates.chunk(len(LSTM_GATES), 1)  # 4 x (B, H)
    i = torch.sigmoid(a_i + weight_ci * c)
    f = torch.sigmoid(a_f + weight_cf * c)
    g = torch.tanh(a_g)
    c_next = f * c + i * g
    o = torch.sigmoid(a_o + weight_co * c_next)
    h_next = o * torch.tanh(c_next)
    if weight_hr is not None:
        h_next = h_next @ weight_hr.T  # (B, P)
    return h_next, c_next
