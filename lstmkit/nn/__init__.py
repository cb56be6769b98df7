"""Modules with torch.nn's contracts: LSTM, LSTMCell, GRU, RNN."""

from lstmkit.nn.cell import LSTMCell
from lstmkit.nn.rnn import GRU, LSTM, RNN, RecurrentBase

__all__ = ["LSTM", "LSTMCell", "GRU", "RNN", "RecurrentBase"]
