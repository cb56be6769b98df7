"""Baselines on the same windows as the LSTM: persistence, seasonal naive, linear autoregression.

All three forecast the target at rows origin+1 .. origin+horizon from what is known at the
origin; none reads a row after it.
"""

from __future__ import annotations

import numpy as np

from lstmkit.apps.forecast.windows import Windows


def persistence(target: np.ndarray, origin: np.ndarray, horizon: int) -> np.ndarray:
    """The last observed value, for every step ahead: y[o] repeated. (n, horizon)."""
    return np.repeat(target[origin][:, None], horizon, axis=1)


def seasonal_naive(target: np.ndarray, origin: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """The value one season earlier: y[o + k - period * ceil(k / period)] for k = 1..horizon.

    This reads the series before the window when the period is longer than the window (a year
    back for daily data): past values, known at the origin. Raises if a window has no season
    of history before it.
    """
    k = np.arange(1, horizon + 1)
    back = k - period * np.ceil(k / period).astype(np.int64)  # <= 0
    idx = origin[:, None] + back[None, :]
    if (idx < 0).any():
        raise ValueError(f"seasonal naive: period {period} reaches before the first row; use a smaller --season")
    return target[idx]


def fit_linear(train: Windows) -> np.ndarray:
    """Least squares of the targets on the flattened input window plus a constant: (window*F + 1, horizon)."""
    X = _design(train.x)
    coef, *_ = np.linalg.lstsq(X, train.y, rcond=None)
    return coef


def predict_linear(coef: np.ndarray, windows: Windows) -> np.ndarray:
    return _design(windows.x) @ coef


def _design(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return np.concatenate([flat, np.ones((len(x), 1))], axis=1)
