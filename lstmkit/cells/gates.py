"""Gate layouts of the fused weight matrices: rows of `weight_ih` are these gates, in order."""

# PyTorch's order for nn.LSTM: input, forget, candidate ("cell"), output.
LSTM_GATES = ("i", "f", "g", "o")
# The coupled-gate LSTM has no input gate (i = 1 - f).
CIFG_GATES = ("f", "g", "o")
# PyTorch's order for nn.GRU: reset, update, new.
GRU_GATES = ("r", "z", "n")
