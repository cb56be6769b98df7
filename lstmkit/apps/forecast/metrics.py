"""MAE, RMSE and MASE, and the comparison table.

MASE (Hyndman & Koehler 2006) divides the MAE by the in-sample MAE of the one-step naive
forecast on the training span: mean |y_t - y_{t-1}| over the training rows. Below 1 means
better than that naive forecast was on the training data.
"""

from __future__ import annotations

import numpy as np


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(pred))))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(pred)) ** 2)))


def naive_scale(train_target: np.ndarray) -> float:
    """In-sample MAE of the one-step naive forecast: mean |y_t - y_{t-1}| over the training span."""
    train_target = np.asarray(train_target, dtype=float)
    if len(train_target) < 2:
        raise ValueError(f"train_target: MASE needs at least 2 values of the training span, got {len(train_target)}")
    return float(np.mean(np.abs(np.diff(train_target))))


def mase(y: np.ndarray, pred: np.ndarray, train_target: np.ndarray) -> float:
    scale = naive_scale(train_target)
    if scale == 0:
        return float("inf") if mae(y, pred) > 0 else 0.0
    return mae(y, pred) / scale


def scores(y: np.ndarray, pred: np.ndarray, train_target: np.ndarray) -> dict:
    return {"mae": mae(y, pred), "rmse": rmse(y, pred), "mase": mase(y, pred, train_target)}


def table(results: dict[str, dict]) -> str:
    """A Markdown table, one row per method, with how the LSTM's RMSE compares to each row's."""
    ref = results["LSTM"]["rmse"]
    lines = ["| method | MAE | RMSE | MASE | LSTM RMSE vs this |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        if name == "LSTM":
            vs = "-"
        elif r["rmse"] == 0:
            # An exact baseline (a constant series; one that repeats at --season) leaves no ratio. As
            # mase() does for a zero scale: +0.0% when the LSTM is exact too, else infinitely worse.
            vs = "+0.0%" if ref == 0 else "+inf%"
        else:
            vs = f"{100.0 * (ref / r['rmse'] - 1.0):+.1f}%"
        lines.append(f"| {name} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mase']:.4f} | {vs} |")
    return "\n".join(lines)
