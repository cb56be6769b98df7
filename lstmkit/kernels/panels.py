"""Weights in the panel layout of oneDNN's brgemm, reused while the weights' values are unchanged.

The numba LSTM kernels run their per-step products on oneDNN's brgemm micro-kernels, which read
the B operand (K, N) row-major. Over a wide B they slow down badly once B outgrows the core's L2;
cut into contiguous column panels of at most 512 KB, one call per panel, they run at their best.
On the 2-core Zen 4 machine of BENCHMARKS.md (`benchmarks/step_products.py`), one thread,
float32, C(M, N) = A(M, K) B, GFLOP/s: (64, 2048, 512) 62-64 -> 99-106 with 64-column panels,
(32, 4096, 1024) 24-25 -> 91-94 with 64 (80-86 with 32), (32, 1024, 4096) 13-16 -> 77-79 with 32
(65 with 64); 128-column panels were never better. So every brgemm B operand is laid out here as
(ceil(N / w), K, w), w = `panel_width(K)`: panel q holds columns [q w, (q + 1) w), the last one
padded with zeros. Making the layout is a strided copy, 0.2-0.5 ms for a 1 MB weight, cold after a
forward: about 10% of a (T=35, B=32, H=256) LSTM forward.

A layout is reused while the weight holds the same bits. The check compares contents
because weights changed through `.data` keep their version counter, so a version-keyed cache
would serve stale layouts. It compares bytes (libc's memcmp: 28 us for a 1 MB weight here,
where torch.equal takes 140 us and the copy 250), which is also the exact test: torch.equal
calls -0.0 and 0.0 equal and a NaN unequal to itself. In training the weights change every
step: the check fails early, and each weight costs a new layout (and the copy kept for the
check) per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict

import torch
from torch import Tensor

PANEL = 64  # columns per panel, and half that for K > PANEL_MAX_K
PANEL_MAX_K = 2048  # 64 columns of 2048 float32 rows: 512 KB
MAX_BYTES = 128 << 20  # a bound on what is kept (per weight: a copy of its values and its layout)

_kept: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
_lock = threading.Lock()

__all__ = ["PANEL", "panel_width", "panels"]


def _libc_memcmp():
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c")).memcmp
    except (OSError, AttributeError, TypeError):  # no C library to load: torch.equal it is
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    return fn


_MEMCMP = _libc_memcmp()


def _same_bits(kept: Tensor, w: Tensor) -> bool:
    """Whether w holds exactly the bits of `kept` (a contiguous copy of an earlier w)."""
    w = w.contiguous()
    if _MEMCMP is not None and w.device.type == "cpu":
        return _MEMCMP(kept.data_ptr(), w.data_ptr(), w.numel() * w.element_size()) == 0
    return torch.equal(kept.view(torch.uint8), w.view(torch.uint8))


def panel_width(K: int) -> int:
    """Columns per panel of a B operand with K rows."""
    return PANEL if K <= PANEL_MAX_K else PANEL // 2


def _layout(b: Tensor, width: int) -> Tensor:
    """The (K, N) matrix b as (ceil(N / width), K, width) panels, the last one zero-padded."""
    K, N = b.shape
    full, rest = divmod(N, width)
    out = b.new_empty(full + (rest > 0), K, width)
    out[:full].copy_(b[:, :full * width].unflatten(1, (full, width)).transpose(0, 1))  # (full, K, width)
    if rest:
        out[full, :, :rest].copy_(b[:, full * width:])
        out[full, :, rest:].zero_()
    return out


def _operand_layout(w: Tensor, transpose: bool) -> Tensor:
    b = w.detach().t() if transpose else w.detach()
    return _layout(b, panel_width(b.shape[0]))


def panels(w: Tensor, transpose: bool = False, reuse: bool = True) -> Tensor:
    """The brgemm B operand `w.t()` (transpose) or `w`, (K, N), as panels (see the module docstring),
    reused from an earlier call while w holds the same bits. reuse=False: w is a copy made for
    this call (a permuted weight), so its layout is neither looked up nor kept."""
    if not reuse:
        return _operand_layout(w, transpose)
    key = (w.data_ptr(), tuple(w.shape), tuple(w.stride()), w.dtype, w.device, transpose)
    with _lock:
        hit = _kept.get(key)
    if hit is not None and _same_bits(hit[0], w):
        with _lock:
            if key in _kept:
                _kept.move_to_end(key)
        return hit[1]
    layout = _operand_layout(w, transpose)
    with _lock:
        _kept[key] = (w.detach().clone(memory_format=torch.contiguous_format), layout)
        total = sum(t.numel() * t.element_size() + p.numel() * p.element_size() for t, p in _kept.values())
        while total > MAX_BYTES and len(_kept) > 1:
            _, (old, old_layout) = _kept.popitem(last=False)
            total -= old.numel() * old.element_size() + old_layout.numel() * old_layout.element_size()
    return layout
