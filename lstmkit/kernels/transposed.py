"""Transposed copies of weights, reused while the weights' values are unchanged.

oneDNN's brgemm reads its B operand row-major: the numba LSTM kernels need W_hh^T, W_ih^T and
W_hr^T as contiguous matrices. Transposing is a strided copy: 0.2-0.5 ms for a 1 MB weight on the
2-core Zen 4 machine of BENCHMARKS.md, cold after a forward (MKL's omatcopy is slower still),
about 10% of a (T=35, B=32, H=256) LSTM forward. (oneDNN's linear needs no copy: it reads a
transposed view as it is, see `onednn.linear`.)

A transpose is reused while the weight holds the same bits. The check compares contents
because weights changed through `.data` keep their version counter, so a version-keyed cache
would serve stale transposes. It compares bytes (libc's memcmp: 28 us for a 1 MB weight here,
where torch.equal takes 140 us and transposing 250), which is also the exact test: torch.equal
calls -0.0 and 0.0 equal and a NaN unequal to itself. In training the weights change every
step: the check fails early and costs one copy of each weight per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict

import torch
from torch import Tensor

MAX_BYTES = 64 << 20  # a bound on what is kept (two copies per weight: its values and its transpose)

_kept: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
_lock = threading.Lock()

__all__ = ["transposed"]


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


def transposed(w: Tensor) -> Tensor:
    """w.t().contiguous() for a 2-D tensor, reused from an earlier call while w holds the same bits."""
    key = (w.data_ptr(), tuple(w.shape), w.dtype, w.device)
    with _lock:
        hit = _kept.get(key)
    if hit is not None and _same_bits(hit[0], w):
        with _lock:
            if key in _kept:
                _kept.move_to_end(key)
        return hit[1]
    wt = w.detach().t().contiguous()
    with _lock:
        _kept[key] = (w.detach().clone(memory_format=torch.contiguous_format), wt)
        total = sum(2 * t.numel() * t.element_size() for _, t in _kept.values())
        while total > MAX_BYTES and len(_kept) > 1:
            _, (_, old) = _kept.popitem(last=False)
            total -= 2 * old.numel() * old.element_size()
    return wt
