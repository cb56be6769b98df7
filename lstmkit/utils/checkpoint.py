"""Checkpoints as one safetensors file, written atomically, never unpickled.

A checkpoint holds arbitrary nested state (model and optimizer state dicts, RNG states,
counters). Tensors go into the safetensors body; everything else (numbers, strings, lists)
goes as JSON into the safetensors header's metadata, with placeholders where tensors were.
One file means the tensors and the JSON describing them can never disagree after a crash:
the file is written to a temporary name in the same directory, fsynced, then renamed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

_TENSOR_KEY = "__tensor__"
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would have given the file
_META_KEY = "lstmkit"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp's 0600 would hide shared runs from their group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as strict JSON: a non-finite float (the MASE of a constant series, a diverged
    loss) as null. Python's own NaN and Infinity tokens are not JSON; jq and most parsers refuse
    the whole file."""
    text = json.dumps(_finite_or_null(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def _finite_or_null(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def _split(obj: Any, where: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a placeholder, collecting the tensors.

    A tensor is named by its number, not its place: {"a.b": x, "a": {"b": y}} or keys 1 and "1"
    would give two places one name. `where` (the place) is for errors."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {_TENSOR_KEY: name}
    if isinstance(obj, dict):
        bad = next((k for k in obj if not (k is None or isinstance(k, (bool, int, float, str)))), None)
        if bad is not None:  # a tuple key would come back from JSON as a list, which no dict takes
            raise TypeError(f"checkpoint state: expected dict keys that are JSON scalars, got "
                            f"{type(bad).__name__} {bad!r} at {where!r}")
        # JSON keys are strings; pairs keep int keys (optimizer state is keyed by int).
        return {"__dict__": [[k, _split(v, f"{where}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {
            "__list__": [_split(v, f"{where}.{i}", tensors) for i, v in enumerate(obj)],
            "tuple": isinstance(obj, tuple),
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state: expected tensors, dicts, lists or JSON scalars, got {type(obj).__name__} at {where!r}")


def _merge(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if _TENSOR_KEY in skeleton:
            return tensors[skeleton[_TENSOR_KEY]]
        if "__dict__" in skeleton:
            return {k: _merge(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [_merge(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton["tuple"] else items
    return skeleton


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save nested `state` (tensors anywhere inside) as one safetensors file, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "s", tensors)
    # safetensors refuses tensors that share memory; checkpoints are small enough to copy.
    tensors = {k: v.clone() for k, v in tensors.items()}
    data = safetensors_bytes(tensors, metadata={_META_KEY: json.dumps(skeleton)})
    atomic_write_bytes(path, data)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load what `save_checkpoint` wrote. Reads only safetensors and JSON: no pickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if _META_KEY not in metadata:
                raise ValueError(f"checkpoint: {str(path)!r} is a safetensors file but not an lstmkit checkpoint")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:  # truncated, corrupt, or not safetensors at all
        raise ValueError(f"checkpoint: {str(path)!r} is not a readable safetensors file ({e})") from e
    try:
        state = _merge(json.loads(metadata[_META_KEY]), tensors)
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # metadata save_checkpoint did not write
        raise ValueError(f"checkpoint: {str(path)!r} has malformed lstmkit metadata ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):  # save_checkpoint stores a dict; every reader relies on it
        raise ValueError(f"checkpoint: {str(path)!r}: expected an lstmkit checkpoint holding a mapping, got "
                         f"a {type(state).__name__}")
    return state
