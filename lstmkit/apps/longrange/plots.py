"""Figures of a `lstmkit longrange` run: metric vs length, learning curves, input-gradient norms."""

from __future__ import annotations

from pathlib import Path

from lstmkit.apps.longrange.models import LABELS
from lstmkit.apps.longrange.tasks import get_task
from lstmkit.utils.plots import pyplot, save_figure


def plot_task(path: str | Path, task_name: str, runs: list[dict]) -> None:
    """Left: final held-out metric against length, one line per model, with chance.
    Right: learning curves (held-out metric against step) at the longest length."""
    plt = pyplot()
    task = get_task(task_name)
    runs = [r for r in runs if r["task"] == task_name]
    models = list(dict.fromkeys(r["model"] for r in runs))
    lengths = sorted({r["length"] for r in runs})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, m in enumerate(models):
        rs = sorted((r for r in runs if r["model"] == m), key=lambda r: r["length"])
        ax1.plot([r["length"] for r in rs], [r["final"] for r in rs], "o-", color=f"C{k}", label=LABELS[m])
        longest = [r for r in rs if r["length"] == lengths[-1]]
        if longest:
            c = longest[0]["curve"]
            ax2.plot([s for s, _ in c], [v for _, v in c], "-", color=f"C{k}", label=LABELS[m])
    for ax in (ax1, ax2):
        ax.axhline(task.chance, color="gray", ls=":", label="chance")
        ax.set_ylabel("held-out MSE" if task.metric == "mse" else "held-out accuracy")
        if task.metric == "mse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_xlabel("length" if task_name == "adding" else ("delay" if task_name == "copy" else "clause length"))
    ax1.set_title(f"{task_name}: after training, by length")
    ax2.set_xlabel("training step")
    ax2.set_title(f"{task_name}: learning curves at length {lengths[-1]}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_gradnorm(path: str | Path, gradnorm: dict) -> None:
    """|dL/dx_t| (batch mean) against t, log scale: at initialisation and after training."""
    plt = pyplot()
    n = get_task(gradnorm["task"]).read_steps()
    read_at = "the last step" if n == 1 else f"the last {n} steps"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, when in zip(axes, ("init", "trained")):
        for k, (m, g) in enumerate(gradnorm[when].items()):
            ax.semilogy(range(len(g)), [max(v, 1e-30) for v in g], color=f"C{k}", label=LABELS[m])
        ax.set_xlabel(f"time step t (the loss is read at {read_at})")
        ax.set_title(f"{gradnorm['task']}, length {gradnorm['length']}: "
                     f"{'at initialisation' if when == 'init' else 'after training'}")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0].set_ylabel("mean |dL / dx_t|  (0, an fp32 underflow, drawn at 1e-30)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
