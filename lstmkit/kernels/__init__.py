"""Backends: implementations of one recurrent layer over a whole sequence.

Every backend module exposes the same layer function (the contract `LayerFn` below), the
cells it implements (`CELLS`) and the device types it runs on (`DEVICES`).
`resolve_backend` is the one place where a backend name becomes a function.

LayerFn(spec, x, state, params, batch_sizes, reverse) -> (y, final_state)
    spec:        lstmkit.cells.CellSpec of the cell
    x:           (T, B, I), time-major, contiguous or not
    state:       (h0,) or (h0, c0); h0 (B, P or H), c0 (B, H)
    params:      {"weight_ih": (G*H, I), "weight_hh": (G*H, P or H), ["bias_ih", "bias_hh": (G*H,)],
                  ["weight_hr": (P, H)], extra params of the cell by their base names}
    batch_sizes: None, or a CPU int64 (T,) tensor: rows sorted by decreasing length, step t
                 touches only the first batch_sizes[t] rows (PackedSequence's convention); x's
                 padding past them must be finite (the modules pad with zeros): the fused
                 backends form dW_ih as one GEMM over all T*B rows, zero gradients times padding
    reverse:     run from t = T-1 down to 0
    y:           (T, B, P or H), zeros where a row is past its length
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import Callable

from torch import Tensor

from lstmkit.cells import CellSpec

LayerFn = Callable[
    [CellSpec, Tensor, tuple[Tensor, ...], dict[str, Tensor], "Tensor | None", bool],
    tuple[Tensor, tuple[Tensor, ...]],
]

# name -> module implementing the contract above.
BACKENDS = {
    "reference": "lstmkit.kernels.reference",
    "triton": "lstmkit.kernels.lstm_triton",
    "numba": "lstmkit.kernels.lstm_numba",
}
# What backend="auto" tries first on each device type, before the reference.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {"cuda": ("triton",), "cpu": ("numba",)}
BACKEND_NAMES = ("auto", *BACKENDS)


class BackendUnavailable(RuntimeError):
    """A named backend exists but cannot run here (its library or device is missing)."""


def check_backend_name(backend: str) -> str:
    if not isinstance(backend, str) or backend not in BACKEND_NAMES:
        raise ValueError(f"backend: expected one of {list(BACKEND_NAMES)}, got {backend!r}")
    return backend


@functools.cache
def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} cannot load: {e}") from e


@functools.cache
def _warn_fallback(name: str, reason: str) -> None:
    warnings.warn(f"lstmkit: fast backend {name!r} unavailable ({reason}); using the reference backend",
                  RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, device_type: str, cell: str) -> LayerFn:
    """The layer function for `backend` on `device_type` ("cpu", "cuda") for `cell`.

    An explicit name must work or raise; "auto" takes the first preferred backend that loads
    and implements the cell, warning once when a fast backend fails to load.
    """
    check_backend_name(backend)
    if backend != "auto":
        module = _load(backend)
        if device_type not in module.DEVICES:
            raise BackendUnavailable(f"backend {backend!r} runs on {module.DEVICES}, got a {device_type} tensor")
        if cell not in module.CELLS:
            raise ValueError(f"backend {backend!r} implements cells {module.CELLS}, got cell={cell!r}")
        return module.layer
    for name in AUTO_PREFERENCE.get(device_type, ()):
        try:
            module = _load(name)
        except BackendUnavailable as e:
            _warn_fallback(name, str(e.__cause__ or e))
            continue
        if cell in module.CELLS and device_type in module.DEVICES:
            return module.layer
    return _load("reference").layer
