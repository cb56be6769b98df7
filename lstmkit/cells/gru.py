"""The GRU (Cho et al. 2014) in PyTorch's formulation (reset applied after the recurrent product)."""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import GRU_GATES, plus_biases


def gru_cell(
    x: Tensor, h: Tensor,
    weight_ih: Tensor, weight_hh: Tensor,
    bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
) -> Tensor:
    r"""One GRU step, gate rows r, z, n:

        r_t = \sigma(W_r x_t + b_{ir} + U_r h_{t-1} + b_{hr})
        z_t = \sigma(W_z x_t + b_{iz} + U_z h_{t-1} + b_{hz})
        n_t = \tanh(W_n x_t + b_{in} + r_t \odot (U_n h_{t-1} + b_{hn}))
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
    """
    gx = plus_biases(x @ weight_ih.T, bias_ih)  # (B, 3H)
    gh = plus_biases(h @ weight_hh.T, bias_hh)  # (B, 3H)
    x_r, x_z, x_n = gx.chunk(len(GRU_GATES), 1)  # 3 x (B, H)
    h_r, h_z, h_n = gh.chunk(len(GRU_GATES), 1)  # 3 x (B, H)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h
