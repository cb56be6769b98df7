"""MAE, RMSE and MASE, and the comparison table.

MASE (Hyndman & Koehler 2006) divides the MAE by the in-sample MAE of the one-step naive
forecast on the training span: mean |y_t - y_{t-1}| over the training rows, for every --horizon
and whatever --season (the non-seasonal scale, not seasonal naive's). Below 1 means better than
that naive forecast was on the training data. Only pairs of rows whose values were both observed
count: a value the gap policy filled in repeats the one before it, and its zero step would shrink
the scale and inflate every MASE.
"""

from __future__ import annotations

import numpy as np


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(pred))))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(pred)) ** 2)))


def naive_scale(train_target: np.ndarray, filled: np.ndarray | None = None) -> float:
    """In-sample MAE of the one-step naive forecast: mean |y_t - y_{t-1}| over the training span,
    counting only pairs where neither value is `filled` ((N,) bool, True where the gap policy
    filled one in; None: none was). NaN when no pair is left: MASE is then undefined."""
    train_target = np.asarray(train_target, dtype=float)
    if len(train_target) < 2:
        raise ValueError(f"train_target: MASE needs at least 2 values of the training span, got {len(train_target)}")
    steps = np.abs(np.diff(train_target))
    if filled is not None:
        filled = np.asarray(filled, dtype=bool)
        if filled.shape != train_target.shape:
            raise ValueError(f"filled: expected one flag per training value, shape {train_target.shape}, "
                             f"got shape {filled.shape}")
        steps = steps[~(filled[1:] | filled[:-1])]
    return float(np.mean(steps)) if len(steps) else float("nan")


def mase(y: np.ndarray, pred: np.ndarray, train_target: np.ndarray, filled: np.ndarray | None = None) -> float:
    """MAE over `naive_scale(train_target, filled)`; NaN (null in metrics.json) where that is."""
    scale = naive_scale(train_target, filled)
    if scale == 0:
        return float("inf") if mae(y, pred) > 0 else 0.0
    return mae(y, pred) / scale


def scores(y: np.ndarray, pred: np.ndarray, train_target: np.ndarray, filled: np.ndarray | None = None) -> dict:
    return {"mae": mae(y, pred), "rmse": rmse(y, pred), "mase": mase(y, pred, train_target, filled)}


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
