"""What a run directory holds, and loading it back (safetensors + JSON only: nothing is unpickled).

    config.json              the resolved config
    vocab.json               the vocabulary (also inside both checkpoints)
    model.safetensors        the best model so far: weights, config, vocab, its validation metrics,
                             the sha256 of the corpus it was trained on
    checkpoint.safetensors   the latest training state: model, optimizer, schedule, progress,
                             every rank's RNG state and carried LSTM state; `--resume` reads it
    metrics.json             per-epoch history and the best validation metrics
    curves.png               training/validation loss and validation perplexity per epoch
"""

from __future__ import annotations

from pathlib import Path

from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.model import CharLM
from lstmkit.apps.charlm.vocab import Vocab
from lstmkit.utils.checkpoint import load_checkpoint, save_checkpoint
from lstmkit.utils.plots import pyplot, save_figure
from lstmkit.utils.runs import CHECKPOINT, saved_backend_name

MODEL = "model.safetensors"
MODEL_FORMAT = "lstmkit.charlm.model/1"
CHECKPOINT_FORMAT = "lstmkit.charlm.checkpoint/1"


def save_model(run_dir: str | Path, model: CharLM, cfg: CharLMConfig, vocab: Vocab, metrics: dict,
               epoch: float, corpus_sha256: str) -> None:
    save_checkpoint(Path(run_dir) / MODEL, {
        "format": MODEL_FORMAT, "config": cfg.to_dict(), "vocab": vocab.to_dict(),
        "model": model.state_dict(), "metrics": metrics, "epoch": epoch, "corpus_sha256": corpus_sha256,
    })


def read_run_file(run_dir: str | Path, name: str, fmt: str, what: str = "run_dir") -> dict:
    """The file `name` of a run directory; a missing one is refused naming `what`, the argument
    or flag that named the directory (RUN_DIR for `eval` and `generate`, --resume for `train`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{what}: no directory at {str(run_dir)!r}")
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {str(run_dir)!r} has no {name} (not a finished `lstmkit train` run?)")
    state = load_checkpoint(path)
    if state.get("format") != fmt:
        raise ValueError(f"{path}: expected an lstmkit checkpoint of format {fmt!r}, got {state.get('format')!r}")
    return state


def load_model(run_dir: str | Path, device=None, what: str = "run_dir") -> tuple[CharLM, Vocab, CharLMConfig, dict]:
    """(model in eval mode, vocab, config, the saved model's metrics) of a run directory
    (`what`: as `read_run_file`'s)."""
    return model_from_state(read_run_file(run_dir, MODEL, MODEL_FORMAT, what), device)


def model_from_state(state: dict, device=None) -> tuple[CharLM, Vocab, CharLMConfig, dict]:
    """`load_model` for a model file already read (`read_run_file(run_dir, MODEL, MODEL_FORMAT)`)."""
    cfg = CharLMConfig.from_dict(state["config"])
    cfg.backend = saved_backend_name(cfg.backend, device or "cpu", cfg.cell)
    vocab = Vocab.from_dict(state["vocab"])
    model = CharLM(len(vocab), cfg.validate())
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, vocab, cfg, state.get("metrics", {})


def save_training_state(run_dir: str | Path, state: dict) -> None:
    save_checkpoint(Path(run_dir) / CHECKPOINT, {"format": CHECKPOINT_FORMAT, **state})


def load_training_state(run_dir: str | Path, what: str = "run_dir") -> dict:
    return read_run_file(run_dir, CHECKPOINT, CHECKPOINT_FORMAT, what)


def plot_curves(path: str | Path, history: list[dict]) -> None:
    """Loss (train and validation, nats/token) and validation perplexity against epochs."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy (nats / token)")
    ax1.legend()
    ax2.plot(epochs, [h["val_perplexity"] for h in history], "o-", color="C1")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation perplexity")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
