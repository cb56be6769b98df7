"""Backends: implementations of one recurrent layer over a whole sequence, and of the binary
Tree-LSTM's ops (`lstmkit.fold.BinaryTreeLSTM`).

Every backend module exposes the same layer function (the contract `LayerFn` below), the
cells it implements (`CELLS`), the device types it runs on (`DEVICES`) and, where its kernels
take only some, the dtypes (`DTYPES`; without it, any; `AUTO_DTYPES`: those "auto" takes it for,
if fewer). A Tree-LSTM backend module exposes `binary_tree_leaf` and `binary_tree_node` (the
contract `TreeOps` below), `DEVICES` and the same optional dtypes.
`resolve_backend` and `resolve_tree_backend` are where a backend name becomes functions, both by
the one set of rules in `_resolve`. A fused backend hands the calls its kernels cannot serve to
the reference (`needs_reference`, `batched`: forward-mode AD, torch.func's transforms,
torch.jit.trace); under torch.export `resolve_backend` gives the reference.

LayerFn(spec, x, state, params, batch_sizes, reverse, *, exposed=True) -> (y, final_state)
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
    exposed:     whether y reaches code that may change it in place before the backward (a
                 module's last layer: its output, or a view of it). A backend that saves y for
                 the backward then saves a copy; with False it may save y itself, a promise the
                 modules keep for every y they do not hand over as it is (hidden layers,
                 bidirectional halves, packed runs, whose output is gathered from y)
    y:           (T, B, P or H), zeros where a row is past its length

TreeOps: the binary Tree-LSTM's ops, each node's state packed as one row [h, c] (2H)
    leaf(x (B, I), weight (3H, I), bias (3H,)) -> states (B, 2H)
    node(children (B, 2, 2H) = [[h_l, c_l], [h_r, c_r]], weight (5H, 2H), bias (5H,)) -> states (B, 2H)
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from types import ModuleType
from typing import Callable, Iterable, NamedTuple, Protocol

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor
from torch._C._functorch import peek_interpreter_stack

from lstmkit.cells import CellSpec


class LayerFn(Protocol):
    def __call__(self, spec: CellSpec, x: Tensor, state: tuple[Tensor, ...], params: dict[str, Tensor],
                 batch_sizes: Tensor | None = None, reverse: bool = False, *,
                 exposed: bool = True) -> tuple[Tensor, tuple[Tensor, ...]]: ...


class TreeOps(NamedTuple):
    leaf: Callable[[Tensor, Tensor, Tensor], Tensor]
    node: Callable[[Tensor, Tensor, Tensor], Tensor]


# name -> module implementing the contract above.
BACKENDS = {
    "reference": "lstmkit.kernels.reference",
    "triton": "lstmkit.kernels.lstm_triton",
    "numba": "lstmkit.kernels.lstm_numba",
}
# What backend="auto" tries first on each device type, before the reference.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {"cuda": ("triton",), "cpu": ("numba",)}
BACKEND_NAMES = ("auto", *BACKENDS)

# The same for the binary Tree-LSTM's ops (TreeOps).
TREE_BACKENDS = {
    "reference": "lstmkit.kernels.reference",
    "numba": "lstmkit.kernels.treelstm_numba",
}
TREE_AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {"cpu": ("numba",)}
TREE_BACKEND_NAMES = ("auto", *TREE_BACKENDS)


class BackendUnavailable(RuntimeError):
    """A named backend exists but cannot run here (its library or device is missing)."""


def check_backend_name(backend: str, names: tuple[str, ...] = BACKEND_NAMES) -> str:
    if not isinstance(backend, str) or backend not in names:
        raise ValueError(f"backend: expected one of {list(names)}, got {backend!r}")
    return backend


# The resolve path keeps what it has done in plain dicts and a set, not functools caches: under
# torch.compile dynamo turns a lookup in them into a guard, where it traces through a cache wrapper
# (with a warning) down to importlib, which it cannot trace (a graph break).
_modules: dict[str, ModuleType | ImportError] = {}  # module path -> the module, or why it cannot load
_warned: set[tuple[str, str]] = set()


def eager(fn: Callable) -> Callable:
    """`fn` with dynamo off, never traced by torch.compile, for what dynamo would trace frame by
    frame only to fail (numba's import-time code and its compiler: seconds, and recompile-limit
    warnings). torch.compiler.disable imports dynamo (a second of start-up), so it is applied at
    the first call made with dynamo loaded: before, nothing can be compiling."""
    disabled = None

    @functools.wraps(fn)
    def run(*args, **kwargs):
        nonlocal disabled
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)
    return run


_import = eager(importlib.import_module)  # a backend's first import may come inside torch.compile


def _load(name: str, path: str) -> ModuleType:
    module = _modules.get(path)
    if module is None:
        try:
            module = _import(path)
        except ImportError as e:
            module = e
        _modules[path] = module
    if isinstance(module, ImportError):
        raise BackendUnavailable(f"backend {name!r} cannot load: {module}") from module
    return module


def _warn_fallback(name: str, reason: str) -> None:
    if (name, reason) in _warned:
        return
    _warned.add((name, reason))
    warnings.warn(f"lstmkit: fast backend {name!r} unavailable ({reason}); using the reference backend",
                  RuntimeWarning, stacklevel=4)


def _takes(module: ModuleType, dtype: torch.dtype | None, auto: bool) -> bool:
    dtypes = getattr(module, "DTYPES", None)
    if auto:
        dtypes = getattr(module, "AUTO_DTYPES", dtypes)
    return dtype is None or dtypes is None or dtype in dtypes


def _resolve(backend: str, registry: dict[str, str], preference: dict[str, tuple[str, ...]],
             device_type: str, dtype: torch.dtype | None, cell: str | None,
             what: str) -> tuple[str, ModuleType]:
    """(name, module) of the backend `backend` (a name of `registry`) resolves to for tensors of `device_type` and `dtype`
    (None: not checked; `what` names it in errors), implementing `cell` (None: no cells to check).

    An explicit name must work or raise; "auto" takes the first preferred backend that loads and
    runs here, warning once when a fast backend fails to load, else the reference.
    """
    check_backend_name(backend, ("auto", *registry))
    if backend != "auto":
        module = _load(backend, registry[backend])
        if device_type not in module.DEVICES:
            raise BackendUnavailable(f"backend {backend!r} runs on {module.DEVICES}, got a {device_type} tensor")
        if cell is not None and cell not in module.CELLS:
            raise ValueError(f"backend {backend!r} implements cells {module.CELLS}, got cell={cell!r}")
        if not _takes(module, dtype, auto=False):
            raise TypeError(f"{what}: backend {backend!r} takes dtypes {list(module.DTYPES)}, got {dtype}")
        return backend, module
    for name in preference.get(device_type, ()):
        try:
            module = _load(name, registry[name])
        except BackendUnavailable as e:
            _warn_fallback(name, str(e.__cause__ or e))
            continue
        runs_here = device_type in module.DEVICES and _takes(module, dtype, auto=True)
        if runs_here and (cell is None or cell in module.CELLS):
            return name, module
    return "reference", _load("reference", registry["reference"])


def resolve_backend(backend: str, device_type: str, cell: str, dtype: torch.dtype | None = None) -> LayerFn:
    """The layer function for `backend` on `device_type` ("cpu", "cuda") for `cell` and inputs of
    `dtype` (None: any dtype the backend takes; the layer checks its input then).

    Under torch.export, the reference's whatever the name: an exported program is torch ops, and a
    fused kernel is none (it reads memory that export's fake tensors do not have)."""
    if torch.compiler.is_exporting():
        check_backend_name(backend)  # a bad name is refused under export too
        backend = "reference"
    return _resolve(backend, BACKENDS, AUTO_PREFERENCE, device_type, dtype, cell, "x")[1].layer


def preload(backend: str, device_type: str) -> None:
    """Import the backend modules a layer on `device_type` may take, as a module is built: a first
    import inside torch.compile is a graph break (with fullgraph=True, an error), a later one a
    lookup. What cannot load is left to the first call, which raises or warns as ever."""
    for name in AUTO_PREFERENCE.get(device_type, ()) if backend == "auto" else (backend,):
        try:
            _load(name, BACKENDS[name])
        except BackendUnavailable:
            pass


def backend_name(backend: str, device_type: str, cell: str) -> str:
    """The name of the backend `resolve_backend` picks ("auto" resolved): what a run records."""
    return _resolve(backend, BACKENDS, AUTO_PREFERENCE, device_type, None, cell, "x")[0]


_tree_ops: dict[tuple[str, str, torch.dtype], TreeOps] = {}


def resolve_tree_backend(backend: str, device_type: str, dtype: torch.dtype) -> TreeOps:
    """The binary Tree-LSTM's ops for `backend` ("auto", "reference", "numba") on tensors of
    `device_type` and `dtype` (remembered: the fold ops ask once per batched call)."""
    key = (backend, device_type, dtype)
    ops = _tree_ops.get(key)
    if ops is None:
        module = _resolve(backend, TREE_BACKENDS, TREE_AUTO_PREFERENCE, device_type, dtype, None, "dtype")[1]
        ops = _tree_ops[key] = TreeOps(module.binary_tree_leaf, module.binary_tree_node)
    return ops


# --- what the fused backends share ----------------------------------------------------------------


def needs_reference(tensors: Iterable[Tensor]) -> bool:
    """Whether a fused backend must hand a layer call on `tensors` (its input, state and
    parameters) to the reference backend, whose torch ops every autograd mode and torch.func
    transform takes.

    The fused kernels have no forward-mode derivative, and read memory, which the tensors inside
    a torch.func transform (its wrappers) do not have: forward-mode AD (a tensor with a tangent:
    torch.autograd.forward_ad, torch.func.jvp) and every torch.func transform (grad, vjp, jacrev,
    jacfwd, vmap, ...) go to the reference. Through the fused autograd.Functions instead, grad-like
    transforms would still need the reference's backward (they always ask for a differentiable
    one), after a kernel forward that buys nothing; and torch.func.vjp's backward runs after its
    transform has ended, on wrappers the reference can no longer differentiate. Outside both (the
    common case) this costs ~0.1 us a call.

    torch.jit.trace records torch ops only: a kernel would be missing from the graph (and its
    sizes, tensors while tracing, break the host code), so a trace records the reference's.
    """
    if torch.jit.is_tracing():
        return True
    # the dual level first: unpacking every tensor costs ~0.5 us each, the level a global's read
    if fwAD._current_level >= 0 and any(fwAD.unpack_dual(t).tangent is not None for t in tensors):
        return True
    return in_transform()


def in_transform() -> bool:
    """Whether this runs inside a torch.func transform (grad, vjp, jacrev, jacfwd, vmap, ...)."""
    # under torch.compile dynamo traces its own transforms, and its `peek_interpreter_stack()` is a
    # None that `is not None` (torch 2.13): without the second test it would trace the reference
    return peek_interpreter_stack() is not None and not torch.compiler.is_compiling()


def batched(*grads: Tensor | None) -> bool:
    """Whether a backward's incoming gradients are vmap's wrappers, which have no memory of their
    own (torch.autograd.grad with is_grads_batched=True, autograd.functional.jacobian with
    vectorize=True): a fused backward cannot read them, the reference's torch ops can."""
    return any(g is not None and not torch._C._has_storage(g) for g in grads)
