"""Gate layouts of the fused weight matrices: rows of `weight_ih` are these gates, in order; and
the cells' bias terms."""

from __future__ import annotations

from torch import Tensor

# PyTorch's order for nn.LSTM: input, forget, candidate ("cell"), output.
LSTM_GATES = ("i", "f", "g", "o")
# The coupled-gate LSTM has no input gate (i = 1 - f; see cifg.py for the paper's f = 1 - i).
CIFG_GATES = ("f", "g", "o")
# PyTorch's order for nn.GRU: reset, update, new.
GRU_GATES = ("r", "z", "n")

# Tree-LSTMs (Tai et al. 2015): input, output, update u (the candidate), forget. Child-Sum: rows of
# weight_ih and weight_hh, f last (one forget gate per child); the binary Tree-LSTM's leaves (no
# children, so no forget gate) and internal nodes (one forget gate per child position).
CHILD_SUM_GATES = ("i", "o", "u", "f")
BINARY_LEAF_GATES = ("i", "o", "u")
BINARY_GATES = ("i", "f_l", "f_r", "o", "u")


def plus_biases(a: Tensor, *biases: Tensor | None) -> Tensor:
    """a + b_ih + b_hh, each bias where given: either may be None on its own, as in torch's
    `lstm_cell`, and neither is then dropped in silence."""
    for b in biases:
        if b is not None:
            a = a + b
    return a
