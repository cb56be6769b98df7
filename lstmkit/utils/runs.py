"""Run directories: resolved configs saved as JSON, seeding, and the RNG state to resume."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lstmkit.utils.checkpoint import atomic_write_json


def make_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create an output directory (and its parents) up front, before any work that would be lost
    if it could not be written: a ValueError naming `flag`, not an OSError later."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag}: cannot create directory {str(path)!r} ({e.strerror})") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: directory {str(path)!r} is not writable")
    return path


def resolve_device(name: str, flag: str = "device") -> torch.device:
    """"auto": cuda when torch sees a GPU, else cpu. "cuda" without one is refused here, naming
    `flag`, rather than by torch's AssertionError at the first tensor moved."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag}: cuda requested but torch sees no GPU")
    return torch.device(name)


def save_config(run_dir: str | Path, config: Any, name: str = "config.json") -> Path:
    """Write a dataclass config (already resolved: no 'auto' left in it) next to the run's outputs."""
    path = Path(run_dir) / name
    atomic_write_json(path, dataclasses.asdict(config))
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, in a form `save_checkpoint` can store."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a dataclass config saved as JSON, refusing fields this version does not know."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"config: unknown fields {unknown}")
    return cls(**d)
