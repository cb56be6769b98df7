"""Layer-normalised LSTM (Ba, Kiros & Hinton 2016, "Layer Normalization", section 3.1/6.6).

Where the normalisation sits, exactly:
  1. on the input projection W x_t, over all 4H gate pre-activations together, gain/bias
     `ln_weight_ih`, `ln_bias_ih` (4H,);
  2. on the recurrent projection U h_{t-1}, separately, over all 4H, gain/bias
     `ln_weight_hh`, `ln_bias_hh` (4H,);
  3. on the new cell state c_t before the output tanh, over H, gain/bias
     `ln_weight_c`, `ln_bias_c` (H,). The carried cell state c_t itself is NOT normalised.
The usual biases `bias_ih`, `bias_hh` are kept (added after the normalisation) so the
parameter names match `nn.LSTM`'s; they are redundant with the LN biases. LN uses eps=1e-5
and the biased variance, as `torch.nn.LayerNorm` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import LSTM_GATES, plus_biases

LN_EPS = 1e-5


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = LN_EPS) -> Tensor:
    r"""LN(x) = (x - \mu) / \sqrt{\sigma^2 + \epsilon} \odot \gamma + \beta, over the last dim."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


def layernorm_lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor],
    weight_ih: Tensor, weight_hh: Tensor,
    ln_weight_ih: Tensor, ln_bias_ih: Tensor,
    ln_weight_hh: Tensor, ln_bias_hh: Tensor,
    ln_weight_c: Tensor, ln_bias_c: Tensor,
    bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One layer-norm LSTM step.

        [a_i; a_f; a_g; a_o] = LN(W x_t; \gamma_x, \beta_x) + LN(U h_{t-1}; \gamma_h, \beta_h) + b
        i, f, o = \sigma(a_i), \sigma(a_f), \sigma(a_o);  g = \tanh(a_g)
        c_t = f \odot c_{t-1} + i \odot g
        h_t = o \odot \tanh(LN(c_t; \gamma_c, \beta_c))       (then W_hr h_t with a projection)
    """
    h, c = state
    gates = plus_biases(layer_norm(x @ weight_ih.T, ln_weight_ih, ln_bias_ih)
                        + layer_norm(h @ weight_hh.T, ln_weight_hh, ln_bias_hh), bias_ih, bias_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = gates.chunk(len(LSTM_GATES), 1)  # 4 x (B, H)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c_next = f * c + i * g
    h_next = o * torch.tanh(layer_norm(c_next, ln_weight_c, ln_bias_c))
    if weight_hr is not None:
        h_next = h_next @ weight_hr.T  # (B, P)
    return h_next, c_next
