"""The forecaster: an lstmkit.LSTM encoder over the window, a linear head for all horizon steps."""

from __future__ import annotations

from torch import Tensor, nn

import lstmkit
from lstmkit.apps.forecast.config import ForecastConfig


class Forecaster(nn.Module):
    """x (B, window, F), scaled, target in column 0 -> (B, horizon) scaled target values.

    With `residual`, the head predicts the change from the last observed target value, so an
    untrained model starts at the persistence forecast and learns what it misses.
    """

    def __init__(self, num_features: int, horizon: int, cfg: ForecastConfig) -> None:
        super().__init__()
        self.residual = cfg.residual
        self.encoder = lstmkit.LSTM(num_features, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                                    dropout=cfg.dropout if cfg.num_layers > 1 else 0.0, cell=cfg.cell,
                                    backend=cfg.backend)
        self.head = nn.Linear(cfg.hidden_size, horizon)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.encoder(x)
        y = self.head(out[:, -1])
        if self.residual:
            y = y + x[:, -1, :1]
        return y
