"""The standard LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000),
in PyTorch's formulation and gate order.

Two forms that compute the same numbers: the plain form with one matrix product per gate and
input (eight in all), as tutorials write it, and the fused form with one `[4H, I]` and one
`[4H, H]` product, as `torch.nn.LSTM` stores its weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import LSTM_GATES, plus_biases


def lstm_cell_plain(
    x: Tensor, state: tuple[Tensor, Tensor],
    W_ii: Tensor, W_if: Tensor, W_ig: Tensor, W_io: Tensor,
    W_hi: Tensor, W_hf: Tensor, W_hg: Tensor, W_ho: Tensor,
    b_i: Tensor, b_f: Tensor, b_g: Tensor, b_o: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""One LSTM step with a separate matrix per gate, as the equations are written.

        i_t = \sigma(W_{ii} x_t + W_{hi} h_{t-1} + b_i)        input gate
        f_t = \sigma(W_{if} x_t + W_{hf} h_{t-1} + b_f)        forget gate
        g_t = \tanh(W_{ig} x_t + W_{hg} h_{t-1} + b_g)         candidate cell
        o_t = \sigma(W_{io} x_t + W_{ho} h_{t-1} + b_o)        output gate
        c_t = f_t \odot c_{t-1} + i_t \odot g_t
        h_t = o_t \odot \tanh(c_t)

    x: (B, I); h, c: (B, H); W_i*: (H, I); W_h*: (H, H); b_*: (H,).
    """
    h, c = state
    i = torch.sigmoid(x @ W_ii.T + h @ W_hi.T + b_i)
    f = torch.sigmoid(x @ W_if.T + h @ W_hf.T + b_f)
    g = torch.tanh(x @ W_ig.T + h @ W_hg.T + b_g)
    o = torch.sigmoid(x @ W_io.T + h @ W_ho.T + b_o)
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    return h_next, c_next


def split_gates(weight_ih: Tensor, weight_hh: Tensor, bias: Tensor) -> dict[str, Tensor]:
    """Cut fused `(4H, ·)` weights into the per-gate arguments of `lstm_cell_plain`. `bias` is the
    sum `bias_ih + bias_hh`: the plain form has one bias per gate."""
    w_i = weight_ih.chunk(len(LSTM_GATES), 0)  # 4 x (H, I)
    w_h = weight_hh.chunk(len(LSTM_GATES), 0)  # 4 x (H, H)
    b = bias.chunk(len(LSTM_GATES), 0)  # 4 x (H,)
    out = {}
    for k, name in enumerate(LSTM_GATES):
        out[f"W_i{name}"], out[f"W_h{name}"], out[f"b_{name}"] = w_i[k], w_h[k], b[k]
    return out


def lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor],
    weight_ih: Tensor, weight_hh: Tensor,
    bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One LSTM step in the fused form: two matrix products for all four gates.

        [i; f; g; o] = W x_t + b_{ih} + U h_{t-1} + b_{hh}       W: (4H, I), U: (4H, P or H)
        i, f, o = \sigma(\cdot),  g = \tanh(\cdot)
        c_t = f \odot c_{t-1} + i \odot g
        h_t = o \odot \tanh(c_t)
        h_t \leftarrow W_{hr} h_t        only with a projection (proj_size > 0), W_hr: (P, H)

    x: (B, I); h: (B, P or H); c: (B, H). Returns (h_next, c_next).
    """
    h, c = state
    gates = plus_biases(x @ weight_ih.T + h @ weight_hh.T, bias_ih, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(len(LSTM_GATES), 1)  # 4 x (B, H)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    if weight_hr is not None:
        h_next = h_next @ weight_hr.T  # (B, P)
    return h_next, c_next
