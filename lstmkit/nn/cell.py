"""`LSTMCell`: one step, a drop-in for `torch.nn.LSTMCell`, any LSTM variant via `cell=`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmkit.cells import LSTM_CELLS, get_cell
from lstmkit.nn import checks
from lstmkit.nn.checks import init_parameters


class LSTMCell(nn.Module):
    """forward(input (B, I) or (I,), (h, c)=None) -> (h_next, c_next), as torch.nn.LSTMCell."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 *, cell: str = "lstm") -> None:
        super().__init__()
        if cell not in LSTM_CELLS:
            raise ValueError(f"cell: expected one of {list(LSTM_CELLS)}, got {cell!r}")
        self.spec = get_cell(cell)
        self.cell = cell
        self.input_size = checks.positive_int("input_size", input_size)
        self.hidden_size = checks.positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        factory = {"device": device, "dtype": dtype}
        gh = self.spec.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gh, hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(gh, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gh, **factory))
        for extra in self.spec.extra_params:
            self.register_parameter(extra.name, nn.Parameter(
                torch.empty(gh if extra.width == "GH" else hidden_size, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_parameters(self, self.spec, self.hidden_size)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
                + ("" if self.cell == "lstm" else f", cell={self.cell!r}"))

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        dtype = self.weight_ih.dtype
        checks.float_tensor("input", input, dtype)
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"input: expected shape (B, {self.input_size}) or ({self.input_size},), got {tuple(input.shape)}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input  # (B, I)
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            checks.state_pair("hx", hx, "(h, c)")
            h, c = hx
            for name, s in (("h", h), ("c", c)):
                checks.float_tensor(name, s, dtype)
                checks.shape(name, s, (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size))
            if unbatched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        params = {name: p for name, p in self.named_parameters()}
        h_next, c_next = self.spec.step(x, (h, c), params)
        if unbatched:
            return h_next.squeeze(0), c_next.squeeze(0)
        return h_next, c_next
