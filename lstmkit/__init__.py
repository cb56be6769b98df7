"""lstmkit: LSTM networks from the equations, equal to torch.nn.LSTM, and fast."""

from lstmkit.cells import CELLS, LSTM_GATES
from lstmkit.nn import GRU, LSTM, RNN, LSTMCell

__version__ = "0.1.0"
__all__ = ["LSTM", "LSTMCell", "GRU", "RNN", "CELLS", "LSTM_GATES", "__version__"]
