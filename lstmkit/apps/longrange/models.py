"""The four contenders, each a recurrent layer plus a linear read-out at every step.

"Same budget" means the same training steps, batch, optimizer and learning rate for all, and,
with `match="params"`, the same number of parameters: the Elman RNN and the GRU get the hidden
size whose parameter count is nearest the LSTM's (an Elman RNN with hidden size 2H has about as
many weights as an LSTM with H). With `match="hidden"` every model gets the same hidden size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import lstmkit
from lstmkit import costs
from lstmkit.cells import CELLS

MODELS = ("rnn", "gru", "lstm", "peephole")
LABELS = {"rnn": "Elman RNN", "gru": "GRU", "lstm": "LSTM", "peephole": "peephole LSTM"}
CELL = {"rnn": "rnn_tanh", "gru": "gru", "lstm": "lstm", "peephole": "peephole"}  # lstmkit.cells' name of each
MATCHES = ("params", "hidden")


def parameter_count(model: str, input_size: int, hidden: int, output_size: int) -> int:
    """Parameters of `SequenceModel(model, input_size, hidden, output_size)` (recurrent layer + head)."""
    layer = costs.parameter_count(costs.RNNConfig(input_size, hidden, cell=CELL[model]))
    return layer + hidden * output_size + output_size


def matched_hidden(model: str, input_size: int, lstm_hidden: int, output_size: int, match: str = "params") -> int:
    """The hidden size `model` gets under the budget of an LSTM with `lstm_hidden` units."""
    if match not in MATCHES:
        raise ValueError(f"match: expected one of {list(MATCHES)}, got {match!r}")
    if match == "hidden" or model in ("lstm", "peephole"):
        return lstm_hidden
    budget = parameter_count("lstm", input_size, lstm_hidden, output_size)
    return min(range(1, 4 * lstm_hidden + 1),
               key=lambda h: abs(parameter_count(model, input_size, h, output_size) - budget))


class SequenceModel(nn.Module):
    """x (T, B, I) -> outputs (T, B, O): lstmkit's RNN / GRU / LSTM / peephole LSTM, then a Linear."""

    def __init__(self, model: str, input_size: int, hidden: int, output_size: int, backend: str = "auto",
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model: expected one of {list(MODELS)}, got {model!r}")
        self.kind = model
        if model == "rnn":
            self.rnn = lstmkit.RNN(input_size, hidden, backend=backend)
        elif model == "gru":
            self.rnn = lstmkit.GRU(input_size, hidden, backend=backend)
        else:
            self.rnn = lstmkit.LSTM(input_size, hidden, cell=CELL[model], backend=backend)
            # Forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015): start by remembering.
            forget = CELLS[CELL[model]].gates.index("f")  # the forget gate's block of bias rows
            rows = slice(forget * hidden, (forget + 1) * hidden)
            with torch.no_grad():
                self.rnn.bias_ih_l0[rows].fill_(forget_bias)
                self.rnn.bias_hh_l0[rows].zero_()
        self.head = nn.Linear(hidden, output_size)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)
        return self.head(y)
