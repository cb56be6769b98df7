"""Run directories: resolved configs saved as JSON, seeding, and the RNG state to resume."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lstmkit import kernels
from lstmkit.kernels import BackendUnavailable
from lstmkit.utils.checkpoint import atomic_write_json
from lstmkit.utils.options import check_types

DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT = "checkpoint.safetensors"  # every app's training state, which --resume continues
# What --resume may change in every app: budgets and presentation, nothing that changes the
# numbers (device and backend compute the same function). Apps add their own to these.
RESUMABLE = ("epochs", "max_time", "progress", "device", "backend")


def make_out_dir(path: str | Path, flag: str = "--out", new: bool = False) -> Path:
    """Create an output directory (and its parents) up front, before any work that would be lost
    if it could not be written: a ValueError naming `flag`, not an OSError later. With `new`, the
    directory must not exist yet: a FileExistsError, passed on, says it did."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=not new)
    except OSError as e:
        if new and isinstance(e, FileExistsError) and os.path.lexists(path):  # not a parent's
            raise
        raise ValueError(f"{flag}: cannot create directory {str(path)!r} ({e.strerror})") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: directory {str(path)!r} is not writable")
    return path


def check_new_out(path: str | Path, flag: str = "--out", resume: str = "") -> None:
    """Refuse, naming `flag`, a directory for a fresh run that exists and holds anything. Runs of
    every command write config.json, metrics.json, plots and model files under names they share,
    so a run into a directory holding one, its own kind's or another's, would replace it.
    `resume`: how the command continues a run, said in the error where the directory holds a
    CHECKPOINT (empty: the command cannot)."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()):
        hint = f"pass another {flag}"
        if resume and (path / CHECKPOINT).is_file():
            hint = f"{hint}, or continue the run there with {resume}"
        raise ValueError(f"{flag}: {str(path)!r} is not empty, and a fresh run writes only into a new or "
                         f"empty directory; {hint}")


@contextlib.contextmanager
def removed_if_empty_on_failure(run_dir: Path, remove: bool):
    """A fresh run's default directory, removed when the run fails or is stopped before writing
    into it (a missing data file, Ctrl-C), so that failed tries leave no empty run directories."""
    try:
        yield
    except BaseException:
        if remove and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def new_run_dir(out: str | Path | None, prefix: str, flag: str = "--out", resume: str = "") -> Path:
    """A fresh run's directory, made here: `out`, new or empty (`check_new_out`), or by default
    runs/<prefix>-<date>-<time> (`fresh_run_dir`)."""
    if out is None:
        return fresh_run_dir(prefix, flag)
    check_new_out(out, flag, resume)
    return make_out_dir(out, flag)


def fresh_run_dir(prefix: str, flag: str = "--out") -> Path:
    """A run directory no other run has: runs/<prefix>-<date>-<time>, made here, or with -2, -3, ...
    after it where that is taken. Two runs started in the same second both took the one name and
    the later one's results replaced the earlier's: mkdir without exist_ok is the claim, as it
    succeeds for one process only. Errors as `make_out_dir`'s, naming `flag`."""
    name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = Path("runs") / name, 1
    while True:
        try:
            return make_out_dir(path, flag, new=True)
        except FileExistsError:
            n += 1
            path = Path("runs") / f"{name}-{n}"


class Diverged(ValueError):
    """Training whose loss is no longer a usable number (NaN, infinite, or too large). A ValueError:
    what caused it is a value given (a learning rate too high, no gradient clipping), and the CLI
    reports it like one, in one line with exit status 2."""


def check_loss(what: str, loss: float, clip: float, lr_flags: str = "--lr", below: float = math.inf) -> None:
    """Diverged, naming `what`, unless `loss` is a finite number below `below`. A NaN compares
    false with every best score, so a diverged run kept going, saved no model, and exited as if it
    had done its job. The hint names the run's learning-rate flags, and clipping as the run has
    it (`clip`: its max gradient norm, 0 for none)."""
    if not (math.isfinite(loss) and loss < below):
        clipping = "turn on gradient clipping (--clip N; 0 turns it off)" if clip == 0 else "a lower --clip"
        raise Diverged(f"training diverged: {what} is {loss:.6g}; try a lower {lr_flags}, or {clipping} "
                       "(the run directory keeps what was written before)")


def resolve_device(name: str, flag: str = "device") -> torch.device:
    """"auto": cuda when torch sees a GPU, else cpu. "cuda" without one is refused here, naming
    `flag`, rather than by torch's AssertionError at the first tensor moved."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag}: cuda requested but torch sees no GPU")
    return torch.device(name)


def backend_name(backend: str, device: torch.device | str, cell: str, flag: str = "backend") -> str:
    """The backend `lstmkit.LSTM(cell=cell, backend=backend)` runs as on `device`, by name: what
    "auto" picks there, so that a saved config says what ran. A named backend that cannot run
    there is refused here, naming `flag`, rather than at the first forward pass."""
    try:
        return kernels.backend_name(backend, torch.device(device).type, cell)
    except BackendUnavailable as e:
        raise ValueError(f"{flag}: {backend!r} cannot run here ({e}); 'auto' picks one that can") from None


def resolve_run(cfg: Any, cell: str = "lstm") -> torch.device:
    """Resolve "auto" in a run config, in place, before it is saved: its device, and its backend
    (where it has one) for `cell` on that device. Returns the device."""
    device = resolve_device(cfg.device)
    cfg.device = device.type
    if hasattr(cfg, "backend"):
        cfg.backend = backend_name(cfg.backend, device, cell)
    return device


def saved_backend_name(backend: str, device: torch.device | str, cell: str) -> str:
    """A saved config's backend for loading its model onto `device`: itself where it runs there,
    else what "auto" picks (a model trained with a GPU backend still loads on a CPU)."""
    try:
        return backend_name(backend, device, cell)
    except ValueError:
        return backend_name("auto", device, cell)


def save_config(run_dir: str | Path, config: Any) -> Path:
    """Write a dataclass config (already resolved: no 'auto' left in it) next to the run's outputs."""
    path = Path(run_dir) / "config.json"
    atomic_write_json(path, dataclasses.asdict(config))
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, in a form `save_checkpoint` can store: on a GPU run also the
    current device's generator, which dropout on CUDA tensors draws from."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:  # the run was on a GPU, and its config's device puts it back on one
        torch.cuda.set_rng_state(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a dataclass config saved as JSON, refusing fields this version does not know and
    values not of their field's type (`check_types`)."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"config: unknown fields {unknown}")
    config = cls(**d)
    check_types(config)
    return config
