"""Reference cells: pure functions that read like the equations, one file per family.

`CELLS` describes each cell to the sequence layer and the modules: its gate rows, whether it
carries a cell state, and the parameters it has beyond `nn.LSTM`'s. These functions are the
ground truth every fast backend is tested against; they are never optimised.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from lstmkit.cells.cifg import cifg_lstm_cell
from lstmkit.cells.gates import CIFG_GATES, GRU_GATES, LSTM_GATES
from lstmkit.cells.gru import gru_cell
from lstmkit.cells.layernorm import layer_norm, layernorm_lstm_cell
from lstmkit.cells.lstm import lstm_cell, lstm_cell_plain, split_gates
from lstmkit.cells.peephole import peephole_lstm_cell
from lstmkit.cells.rnn import rnn_cell


@dataclass(frozen=True)
class ExtraParam:
    """A per-layer, per-direction parameter beyond nn.LSTM's (named `<name>_l<k>[_reverse]`)."""

    name: str
    width: str  # "H": one value per hidden unit; "GH": one per gate row (gates * H)
    init: str  # "uniform" (like the weights), "ones" (LN gains) or "zeros" (LN biases)


@dataclass(frozen=True)
class CellSpec:
    name: str
    gates: tuple[str, ...]  # row blocks of weight_ih / weight_hh, in order
    has_cell_state: bool  # LSTM family carries (h, c); GRU and RNN carry h alone
    extra_params: tuple[ExtraParam, ...]
    fn: Callable[..., object]  # the reference cell function

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def step(self, x: Tensor, state: tuple[Tensor, ...], params: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """One step with the state as a tuple, whatever the cell family."""
        if self.has_cell_state:
            return self.fn(x, state, **params)
        return (self.fn(x, state[0], **params),)


_PEEPHOLES = tuple(ExtraParam(n, "H", "uniform") for n in ("weight_ci", "weight_cf", "weight_co"))
_LAYERNORMS = (
    ExtraParam("ln_weight_ih", "GH", "ones"), ExtraParam("ln_bias_ih", "GH", "zeros"),
    ExtraParam("ln_weight_hh", "GH", "ones"), ExtraParam("ln_bias_hh", "GH", "zeros"),
    ExtraParam("ln_weight_c", "H", "ones"), ExtraParam("ln_bias_c", "H", "zeros"),
)

CELLS: dict[str, CellSpec] = {
    "lstm": CellSpec("lstm", LSTM_GATES, True, (), lstm_cell),
    "peephole": CellSpec("peephole", LSTM_GATES, True, _PEEPHOLES, peephole_lstm_cell),
    "cifg": CellSpec("cifg", CIFG_GATES, True, (), cifg_lstm_cell),
    "layernorm": CellSpec("layernorm", LSTM_GATES, True, _LAYERNORMS, layernorm_lstm_cell),
    "gru": CellSpec("gru", GRU_GATES, False, (), gru_cell),
    "rnn_tanh": CellSpec("rnn_tanh", ("h",), False, (), functools.partial(rnn_cell, nonlinearity="tanh")),
    "rnn_relu": CellSpec("rnn_relu", ("h",), False, (), functools.partial(rnn_cell, nonlinearity="relu")),
}
LSTM_CELLS = tuple(name for name, spec in CELLS.items() if spec.has_cell_state)


def get_cell(name: str) -> CellSpec:
    if not isinstance(name, str) or name not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {name!r}")
    return CELLS[name]


__all__ = [
    "CELLS", "LSTM_CELLS", "CellSpec", "ExtraParam", "get_cell",
    "LSTM_GATES", "CIFG_GATES", "GRU_GATES",
    "lstm_cell", "lstm_cell_plain", "split_gates", "peephole_lstm_cell", "cifg_lstm_cell",
    "layernorm_lstm_cell", "layer_norm", "gru_cell", "rnn_cell",
]
