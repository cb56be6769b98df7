"""Figures of a forecasting run (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import numpy as np

from lstmkit.utils.plots import pyplot, save_figure


def plot_forecast(path, times, y: np.ndarray, preds: dict[str, np.ndarray], target: str, source: str) -> None:
    """Actual vs predicted (one step ahead, the first horizon step) on the test span."""
    plt = pyplot()
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
    save_figure(fig, path, dpi=110)


def plot_curves(path, history: list[dict]) -> None:
    plt = pyplot()
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
    save_figure(fig, path, dpi=110)
