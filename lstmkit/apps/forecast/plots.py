"""Figures of a forecasting run (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    tmp.replace(path)


def plot_forecast(path, times, y: np.ndarray, preds: dict[str, np.ndarray], target: str, source: str) -> None:
    """Actual vs predicted (one step ahead, the first horizon step) on the test span."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.plot(times, y[:, 0], color="black", lw=1.6, label="actual")
    styles = {"LSTM": dict(color="C3", lw=1.4)}
    for k, (name, p) in enumerate(preds.items()):
        style = styles.get(name, dict(lw=0.9, alpha=0.75, ls="--", color=f"C{k}"))
        ax.plot(times, p[:, 0], label=name, **style)
    ax.set_title(f"{source}: {target}, test span, 1 step ahead")
    ax.set_ylabel(target)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    fig.tight_layout()
    save(fig, path)


def plot_curves(path, history: list[dict]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if history:
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, label="train MSE (scaled)")
        ax.plot(epochs, [h["val_rmse"] ** 2 for h in history], "o-", ms=3, label="validation MSE (scaled)")
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save(fig, path)
