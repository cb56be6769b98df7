"""What both sentiment runs share: the run directory, checkpoints, the training loop's budget,
optimizers, and the confusion matrix (text and PNG).

A run directory holds
    config.json              the resolved config
    vocab.json               the vocabulary (also inside both checkpoints)
    model.safetensors        the model of the best validation epoch, with config and vocabulary
    checkpoint.safetensors   the latest training state (model, optimizer, RNG, history); --resume
    metrics.json             per-epoch history, best validation and final test metrics
    confusion_<split>.png    the confusion matrix of the best model on each evaluated split
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from lstmkit.utils.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from lstmkit.utils.options import flag
from lstmkit.utils.plots import pyplot, save_figure
from lstmkit.utils.runs import (
    CHECKPOINT, RESUMABLE as RUN_RESUMABLE, check_loss, new_run_dir, removed_if_empty_on_failure, resolve_run,
    save_config, set_rng_state,
)

MODEL = "model.safetensors"
RESUMABLE = {*RUN_RESUMABLE, "threads"}  # what --resume may change


@contextlib.contextmanager
def intra_op_threads(n: int):
    """torch's intra-op threads set to n (0: unchanged) for the block, restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)


def save_model(run_dir: Path, fmt: str, model: nn.Module, cfg, vocab: list[str], metrics: dict) -> None:
    save_checkpoint(run_dir / MODEL, {"format": fmt, "config": cfg.to_dict(), "vocab": vocab,
                                      "model": model.state_dict(), "metrics": metrics})


def save_state(run_dir: Path, fmt: str, state: dict) -> None:
    save_checkpoint(run_dir / CHECKPOINT, {"format": fmt, **state})


def begin(state: dict | None, run_dir: Path, cfg, model: nn.Module, opt: torch.optim.Optimizer,
          vocab: list[str], metric: str) -> tuple[list[dict], dict, int]:
    """Start a run (its config and vocabulary into `run_dir`) or restore a resumed one's model,
    optimizer and RNG. Returns (history, best, first epoch to run)."""
    if state is None:
        history, best, start_epoch = [], {metric: -1.0, "epoch": 0}, 1
        atomic_write_json(run_dir / "vocab.json", vocab)
    else:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        history, best, start_epoch = state["history"], state["best"], int(state["epoch"]) + 1
    save_config(run_dir, cfg)
    return history, best, start_epoch


def end_epoch(run_dir: Path, formats: tuple[str, str], cfg, model: nn.Module, opt: torch.optim.Optimizer,
              vocab: list[str], epoch: int, history: list[dict], best: dict, record: dict, metric: str,
              rng: dict) -> tuple[dict, bool]:
    """Append the epoch's `record` to `history`; save the model when `record[metric]` beats
    `best[metric]`; write the checkpoint. formats: (model format, checkpoint format).
    Returns (best, whether this epoch improved it). A training loss that is not finite is refused
    first (Diverged), leaving the files of the epochs before: the model is NaN then, yet its
    accuracy (of the one class argmax picks for NaN) beat the first best of -1, and the run ended
    as a success with that model saved as the best."""
    check_loss(f"the training loss of epoch {epoch}", record["train_loss"], cfg.clip,
               "--lr or --embedding-lr" if hasattr(cfg, "embedding_lr") else "--lr")
    history.append(record)
    improved = record[metric] > best[metric]
    if improved:
        best = {metric: record[metric], "epoch": record["epoch"]}
        save_model(run_dir, formats[0], model, cfg, vocab, best)
    save_state(run_dir, formats[1], {
        "config": cfg.to_dict(), "vocab": vocab, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "epoch": epoch, "history": history, "best": best, "rng": rng,
    })
    return best, improved


def stopped_message(cfg, record: dict, run_dir: Path) -> str:
    return (f"stopped by --max-time {cfg.max_time:g} s after {record['epoch']:.2f} epochs "
            f"(--resume {run_dir} continues with the next epoch)")


def read_run_file(run_dir: str | Path, name: str, fmt: str) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} has no {name} (not a sentiment run directory?)")
    state = load_checkpoint(path)
    if state.get("format") != fmt:
        raise ValueError(f"{path}: expected a checkpoint of format {fmt!r}, got {state.get('format')!r}")
    return state


def resume_config(cls, state: dict, overrides: dict):
    fixed = sorted(set(overrides) - RESUMABLE)
    if fixed:
        raise ValueError(f"--resume continues a run with its own settings; drop {', '.join(map(flag, fixed))}")
    cfg = cls.from_dict(state["config"])
    for k, v in overrides.items():
        setattr(cfg, k, v)
    cores = os.cpu_count() or 1
    if "threads" not in overrides and cfg.threads > cores:  # saved on a bigger machine
        raise ValueError(f"threads: the run was saved with {cfg.threads}, more than the cores here (os.cpu_count() = {cores}); "
                         f"resume with {flag('threads')} N, at most {cores} (0: torch's default)")
    return cfg.validate()


def make_optimizer(cfg, model: nn.Module, embedding: nn.Embedding | None = None,
                   embedding_lr: float | None = None) -> torch.optim.Optimizer:
    """cfg.optimizer over the model; the embedding gets its own learning rate and no weight decay."""
    emb = [p for p in (embedding.parameters() if embedding is not None else ()) if p.requires_grad]
    emb_ids = {id(p) for p in emb}
    rest = [p for p in model.parameters() if id(p) not in emb_ids and p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": rest, "weight_decay": cfg.weight_decay}]
    if emb:
        groups.append({"params": emb, "weight_decay": 0.0, "lr": embedding_lr or cfg.lr})
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr)


class Budget:
    """Seconds of training left (max_time 0: unlimited); only time inside `running()` counts."""

    def __init__(self, max_time: float) -> None:
        self.max_time = max_time
        self.used = 0.0
        self._start: float | None = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self.used += time.perf_counter() - self._start
            self._start = None

    @property
    def exhausted(self) -> bool:
        if not self.max_time:
            return False
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.used + running >= self.max_time


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64: rows true class, columns predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def format_confusion(cm: Tensor, classes: tuple[str, ...]) -> str:
    width = max(8, *(len(c) for c in classes))
    head = " " * (width + 2) + " ".join(f"{c[:width]:>{width}}" for c in classes)
    rows = [f"{c:>{width}}  " + " ".join(f"{int(v):>{width}}" for v in row) for c, row in zip(classes, cm)]
    return "\n".join(["true \\ predicted", head, *rows])


def plot_confusion(path: str | Path, cm: Tensor, classes: tuple[str, ...], title: str) -> None:
    """A confusion matrix PNG: counts in the cells, shaded by the fraction of the true class."""
    plt = pyplot()
    cm = cm.to(torch.float64)
    frac = cm / cm.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2.5, 1.1 * n + 2))
    im = ax.imshow(frac.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    save_figure(fig, path)


def evaluate_best(run_dir: Path, model_format: str, model: nn.Module,
                  predictions: dict[str, Callable[[], tuple[Tensor, Tensor]]], classes: tuple[str, ...],
                  metric: str, title: str, log) -> dict:
    """The best epoch's model (model.safetensors) loaded into `model`, then for each split its
    `predictions[split]()` (predicted, true labels): {split: {metric: accuracy, "confusion": ...}}.
    Each split's accuracy and confusion matrix are logged and drawn to confusion_<split>.png."""
    model.load_state_dict(read_run_file(run_dir, MODEL, model_format)["model"])
    label = metric.replace("_", " ")
    results = {}
    for split, predict in predictions.items():
        pred, gold = predict()
        cm = confusion_matrix(pred, gold, len(classes))
        acc = float((pred == gold).float().mean())
        results[split] = {metric: acc, "confusion": cm.tolist()}
        plot_confusion(run_dir / f"confusion_{split}.png", cm, classes, f"{title}, {split}: {label} {acc:.3f}")
        log(f"{split}: {label} {acc:.4f} ({int((pred == gold).sum())}/{len(gold)})")
        log(format_confusion(cm, classes))
    return results


def write_metrics(run_dir: Path, metrics: dict) -> None:
    atomic_write_json(run_dir / "metrics.json", metrics)


def train(cls, fmt: str, task: Callable[[Any], str], run: Callable[..., dict], cfg, out: str | None,
          resume: str | None, overrides: dict | None, log) -> dict:
    """A fresh run of `cfg` (into `out`, or a new run directory named by task(config)), or the run
    in `resume` continued with `overrides`: `run(config, checkpoint state or None, run_dir, log)`
    with the config's thread count. fmt: the checkpoint format. Returns run's metrics."""
    if resume is None:
        cfg = (cfg or cls()).validate()
        for name in cls.PATHS:  # before the run directory, and before the seconds that loading the others takes
            if getattr(cfg, name) and not Path(getattr(cfg, name)).exists():
                raise FileNotFoundError(f"{flag(name)}: nothing at {getattr(cfg, name)!r}")
        cfg = dataclasses.replace(cfg, **{name: str(Path(getattr(cfg, name)).resolve())
                                          for name in cls.PATHS if getattr(cfg, name)})
        state = None
    else:
        state = read_run_file(resume, CHECKPOINT, fmt)
        cfg = resume_config(cls, state, overrides or {})
    resolve_run(cfg)  # before the run directory is made: a device that is not there fails first
    # made before the data is read: an --out that cannot be written fails at once, not after
    # minutes of loading vectors
    run_dir = (new_run_dir(out or None, f"sentiment-{task(cfg)}", resume=f"--resume {out}") if resume is None
               else Path(resume))
    with intra_op_threads(cfg.threads), removed_if_empty_on_failure(run_dir, not (resume or out)):
        return run(cfg, state, run_dir, log)
