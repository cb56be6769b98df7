"""`backend="numba"`: fused whole-sequence CPU kernels for every cell, forward and backward.

The structure of the fast RNN libraries, per layer and direction:
  1. the input projection for all T steps in one GEMM (torch, all threads), or, with brgemm,
     inside the kernel: in the row split each step's rows' part of it, in the unit and column
     splits each thread's own gate columns for every step, before the first;
  2. the recurrence in one compiled call: per step one recurrent GEMM (oneDNN's brgemm in float32,
     torch's BLAS in float64) and one fused pointwise pass, no Python in the time loop
     (`lstm_numba_cells`);
  3. backward: BPTT step by step in one compiled call, then the weight gradients as single
     GEMMs over all T*B rows: dW_ih = dG^T X, dW_hh = dG^T H_prev, dX = dG W_ih (torch); with
     brgemm the row split forms a narrow input's dX in the kernel instead, each step's rows' part.
The compiled recurrence runs on the threads of torch's own OpenMP pool (`GOMP_parallel`), split
one of two ways (`_plan`):
  * units (the persistent-RNN idea): each thread owns a slice of the hidden units for all rows,
    its slice of W_hh stays in its core's cache, the threads meet once per step. Used for the
    cells whose pointwise pass is local to a unit (lstm, peephole, cifg, gru, rnn) without a
    projection; the gate columns are then permuted into blocks of units (see the kernels).
  * rows: each thread owns a subset of the rows, which are independent sequences: no meeting at
    all. Used for layernorm (it reduces over all units of a row), projections, and tiny H.
    Layer norm with few rows (B < 2 x threads, B <= 4) also shares each step's recurrent product
    by columns (`cols`): each thread streams only its part of W_hh instead of idling or streaming
    all of it; two meetings per step in the forward, one in the backward (whose every thread runs
    the pointwise pass).
Under `torch.no_grad()` (or when nothing requires grad) the forward saves no activations.
Under torch.compile the layer is an operator of the graph (`lstmkit::numba_layer`, its backward
another), with a fake that gives its outputs' shapes without running it.
Forward-mode AD, torch.func's transforms and torch.jit.trace go to the reference backend
(`kernels.needs_reference`).

Importing this module compiles nothing; each kernel compiles on first use, one per (direction,
cell, dtype), and is cached on disk by numba. It raises ImportError when numba or torch's BLAS
cannot be loaded (then `backend="auto"` falls back to the reference with a warning).
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading
from typing import Callable, NamedTuple

import numba  # noqa: F401  (ImportError here makes backend="auto" fall back with a warning)
import numpy as np
import torch
from torch import Tensor

from lstmkit.cells import CellSpec
from lstmkit.kernels import batched, needs_reference
from lstmkit.kernels import lstm_numba_cells as K
from lstmkit.kernels.onednn import linear
from lstmkit.kernels.panels import PANEL, panels
from lstmkit.kernels import reference
from lstmkit.kernels.lstm_numba_cells import CELL_CODES, GRU, LAYERNORM, NUM_GATES, PEEPHOLE, UNIT_BLOCK

CELLS = tuple(CELL_CODES)
DEVICES = ("cpu",)
DTYPES = (torch.float32, torch.float64)

__all__ = ["CELLS", "DEVICES", "DTYPES", "layer"]

# --- compiled bodies ----------------------------------------------------------------------------

_bodies: dict[tuple[str, bool, int, torch.dtype], ctypes._CFuncPtr] = {}
_bodies_lock = threading.Lock()
_BODY_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _body(direction: str, split: int, code: int, dtype: torch.dtype):
    """The C-ABI kernel body, compiled (or loaded from numba's disk cache) on first use."""
    key = (direction, split, code, dtype)
    fn = _bodies.get(key)
    if fn is None:
        with _bodies_lock:
            fn = _bodies.get(key)
            if fn is None:
                z = np.float32(0) if dtype == torch.float32 else np.float64(0)
                py = K.make_body(direction, split, code, z)
                cf = numba.cfunc("void(voidptr)", cache=True, error_model="numpy")(py)
                fn = _BODY_TYPE(cf.address)
                fn._numba_cfunc = cf  # keeps the compiled code alive
                _bodies[key] = fn
    return fn


def _run(direction: str, plan: _Plan, code: int, tab: K.Table, dtype: torch.dtype) -> None:
    """Run a kernel on `plan.threads` threads of torch's OpenMP pool, or in this thread."""
    body = _body(direction, _split_code(plan), code, dtype)
    if plan.threads > 1:
        K.gomp_parallel(ctypes.cast(body, ctypes.c_void_p).value, tab.address, plan.threads, 0)
    else:
        body(tab.address)


# --- planning and layouts -----------------------------------------------------------------------


class _Plan(NamedTuple):
    units: bool  # unit split (else row split)
    threads: int
    width: int  # block width W of the gate layout: H (natural) or a multiple of UNIT_BLOCK (blocked)
    cols: bool = False  # row split whose threads share each step's recurrent product by columns


def _plan(code: int, B: int, H: int, proj: bool, brgemm: bool, width: int | None = None) -> _Plan:
    """How to split one layer call. `width` forces the layout (a backward follows its forward).

    brgemm: the per-step GEMMs run on oneDNN's brgemm (float32), which makes the row split (no
    meeting) faster than the unit split from 8 rows up (measured: 1.15 vs 1.26 nn.LSTM's time at
    T=100, B=64, H=256, 2 threads; 1.14 vs 1.25 at B=8); the unit split then serves B < 2 threads.
    """
    threads = torch.get_num_threads() if K.HAVE_GOMP else 1
    blocks = -(-H // UNIT_BLOCK)
    if (code == LAYERNORM and 1 < threads and B < 2 * threads and B <= K.SMALL_ROWS
            and (width is None or not proj)):
        # layer norm cannot split units, and a row split would leave threads idle while each
        # busy one streams all of W_hh per step (from L3 once it outgrows a core's L2): share
        # the product by columns instead. Measured at T=100, H=256, 2 threads: forward 1.1 vs
        # 2.0 ms at B=1, 2.5 vs 3.2 at B=3. The backward (without a projection) too, with every
        # thread running the pointwise pass (see backward_cols): its kernel 2.25-2.41 -> 1.25 ms at B=1.
        return _Plan(False, threads, H, cols=True)
    if width is None:
        # the unit split needs a unit-local cell, two threads with at least a block each, and
        # enough units per thread to beat the row split (which never meets) at large batches
        units = (threads > 1 and code != LAYERNORM and not proj and blocks >= 2
                 and (B < 2 * threads or (H >= 4 * UNIT_BLOCK and not brgemm)))
        if not units:
            return _Plan(False, max(1, min(threads, B)), H)
        n = min(threads, blocks)
        # one block of units per thread (any team size stays correct, only the balance changes)
        return _Plan(True, n, -(-H // (n * UNIT_BLOCK)) * UNIT_BLOCK)
    if width < H and threads > 1:
        return _Plan(True, min(threads, -(-H // width)), width)
    return _Plan(False, max(1, min(threads, B)), width)


def _split_code(plan: _Plan) -> int:
    """The kernels' header slot [16]: 0 rows, 1 units, 2 rows sharing the product by columns."""
    return 2 if plan.cols else int(plan.units)


@functools.lru_cache(maxsize=64)
def _permutation(G: int, H: int, W: int) -> tuple[Tensor, Tensor]:
    """Rows of a (G*H, .) gate-major matrix in the blocked order (blocks of W units), and the inverse."""
    idx = []
    for ub in range(0, H, W):
        w = min(W, H - ub)
        for g in range(G):
            idx.extend(range(g * H + ub, g * H + ub + w))
    perm = torch.tensor(idx, dtype=torch.int64)
    return perm, torch.argsort(perm)


def _ext(code: int, p: dict[str, Tensor], H: int, W: int) -> Tensor:
    """The cell's extra parameters as one flat vector, in the kernels' order and layout."""
    if code == PEEPHOLE:
        e = torch.cat([p["weight_ci"], p["weight_cf"], p["weight_co"]])
        return e[_permutation(3, H, W)[0]] if W < H else e
    if code == LAYERNORM:
        gh = p["ln_weight_ih"].shape[0]
        bias = p["bias_ih"] + p["bias_hh"] if "bias_ih" in p else p["ln_weight_ih"].new_zeros(gh)
        return torch.cat([p["ln_weight_ih"], p["ln_bias_ih"], p["ln_weight_hh"], p["ln_bias_hh"], bias,
                          p["ln_weight_c"], p["ln_bias_c"]])
    if code == GRU:
        e = p["bias_hh"] if "bias_hh" in p else p["weight_hh"].new_zeros(p["weight_hh"].shape[0])
        return e[_permutation(3, H, W)[0]] if W < H else e
    return p["weight_hh"].new_zeros(1)


def _gate_rows(t: Tensor, perm: Tensor | None) -> Tensor:
    """Gate rows in the kernel's layout. (Not cached between calls: weights changed in place
    through `.data` keep their version counter, so a cache could not tell they changed.)"""
    return t.contiguous() if perm is None else t.index_select(0, perm)


# made with torch.func off: this module may be imported inside a transform (a first call under
# torch.func.grad), which would make the tensor one of its wrappers, with no memory to read
with torch._C._DisableFuncTorch():
    _NO_ROWS = torch.zeros(0, dtype=torch.int64)


def _recurrent_weight(w_hh: Tensor, plan: _Plan, B: int, perm: Tensor | None) -> tuple[Tensor, Tensor]:
    """W_hh as the kernel reads it, and the row of it behind each gate column (empty: the same).

    The unit split's gate columns are in the blocked layout. When every step has at most
    SMALL_ROWS rows the kernel's plain loops read W_hh's rows through the map, so W_hh is used as
    it is (permuting a copy costs ~0.1-0.3 ms a call at H=256, a tenth of a B=1, T=100 forward);
    BLAS and brgemm need the permuted copy.
    """
    if perm is not None and plan.units and B <= K.SMALL_ROWS:
        return w_hh.contiguous(), perm
    return _gate_rows(w_hh, perm), _NO_ROWS


def _input_bias(code: int, p: dict[str, Tensor]) -> Tensor | None:
    """The biases that go in with W x_t, before the recurrence (natural gate order), or None."""
    if "bias_ih" not in p or code == LAYERNORM:  # layer norm adds its biases after normalising
        return None
    return p["bias_ih"] if code == GRU else p["bias_ih"] + p["bias_hh"]


def _input_projection(code: int, x2: Tensor, p: dict[str, Tensor], perm: Tensor | None) -> Tensor:
    """W x_t for all T*B rows in one GEMM, with the biases that go in before the recurrence."""
    bias = _input_bias(code, p)
    return linear(x2, _gate_rows(p["weight_ih"], perm), None if bias is None else _gate_rows(bias, perm))


def _gemm_address(dtype: torch.dtype) -> int:
    return K.SGEMM if dtype == torch.float32 else K.DGEMM


def _brgemm_address(dtype: torch.dtype) -> int:
    """oneDNN's brgemm for the per-step GEMMs (float32 only), or 0: torch's BLAS does them."""
    return K.BRGEMM if dtype == torch.float32 else 0


def _batch_sizes(batch_sizes: Tensor | None, T: int, B: int) -> Tensor:
    if batch_sizes is None:
        return torch.full((T,), B, dtype=torch.int64)
    return batch_sizes.to(torch.int64).contiguous()


# --- forward ------------------------------------------------------------------------------------


class _Meta(NamedTuple):
    """Sizes and flags of one layer call, for its backward."""

    code: int
    T: int
    B: int
    H: int
    P: int
    GH: int
    proj: bool
    reverse: bool
    width: int


def _has_buffers(code: int, proj: bool) -> tuple[bool, ...]:
    """Which of the buffers a saving forward returns (gates, cs, hf, uh, acts, chat, stats, bs) the
    cell has: each other one is a (1, 1, 1) placeholder."""
    lstm_family, sep, ln = code <= LAYERNORM, code in (LAYERNORM, GRU), code == LAYERNORM
    return True, lstm_family, proj, sep, ln, ln, ln, True


def _activations(code: int, x: Tensor, ts: int, B: int, H: int, GH: int, proj: bool, packed: bool,
                 dummy: Callable[[], Tensor | None]) -> tuple[Tensor | None, ...]:
    """The forward's buffers of `ts` steps (T, or 1 when nothing is saved) that the backward reads
    besides the gates: cs, hf, uh, acts, chat, stats, `dummy()` where the cell has none. The
    graph operator's fake declares its outputs with them (`_layer_op`)."""
    has = _has_buffers(code, proj)[1:7]
    # hf, h before the projection: rows past their length must be zeros, dW_hr's GEMM reads them;
    # acts is scratch (one step): the backward recomputes the activations
    shapes = [(ts, B, H), (ts, B, H), (ts, B, GH), (1, B, GH), (ts, B, H), (ts, B, 4)]
    return tuple((x.new_zeros if packed and k == 1 else x.new_empty)(shape) if present else dummy()
                 for k, (present, shape) in enumerate(zip(has, shapes)))


def _forward(code: int, x: Tensor, h0: Tensor, c0: Tensor | None, p: dict[str, Tensor],
             batch_sizes: Tensor | None, reverse: bool, save: bool):
    T, B, I = x.shape
    GH, P = p["weight_hh"].shape
    H = GH // NUM_GATES[code]
    proj = "weight_hr" in p
    plan = _plan(code, B, H, proj, bool(_brgemm_address(x.dtype)))
    perm = _permutation(NUM_GATES[code], H, plan.width)[0] if plan.width < H else None
    lstm_family = code <= LAYERNORM
    dummy = x.new_zeros(1, 1, 1)
    dummy2 = dummy[0]  # (1, 1): the 2-D placeholder
    brg = _brgemm_address(x.dtype)
    # with brgemm the kernel forms the input part of the gates: the row split each step's, by rows
    # (see forward_rows), the unit and column splits every step's up front, by gate columns
    fuse = bool(brg)
    by_rows = fuse and not plan.units and not plan.cols
    bias = _input_bias(code, p) if fuse else None
    if fuse:  # by rows without save, one step's scratch is enough
        gates = x.new_empty(1 if by_rows and not save else T, B, GH)
    else:
        gates = _input_projection(code, x.reshape(T * B, I), p, perm).view(T, B, GH)  # (T*B, I) -> (T, B, GH)
    if plan.units:
        hst = x.new_empty(2, B, H)
        hst[0] = h0
    else:
        hst = h0.contiguous().clone()
    cst = c0.contiguous().clone() if lstm_family else dummy2
    y = x.new_empty(T, B, P)
    cs, hf, uh, acts, chat, stats = _activations(code, x, T if save else 1, B, H, GH, proj, batch_sizes is not None,
                                                 lambda: dummy)
    whh, rows = _recurrent_weight(p["weight_hh"], plan, B, perm)
    whr = p["weight_hr"].contiguous() if proj else dummy2
    ext = _ext(code, p, H, plan.width).contiguous()
    bs = _batch_sizes(batch_sizes, T, B)
    # brgemm's B operands as panels: W_hh^T (P, GH), W_hr^T (H, P), W_ih^T (I, GH); W_hh^T is not
    # read when every step takes the plain loops (a team of one, or the unit split, with few rows)
    loops_only = B <= K.SMALL_ROWS and (plan.units or plan.cols or plan.threads == 1)
    # (whh is a per-call copy when permuted: nothing to reuse)
    wt = panels(whh, transpose=True, reuse=perm is None) if brg and not loops_only else dummy
    wrt = panels(whr, transpose=True) if brg and proj else dummy
    wit = panels(p["weight_ih"], transpose=True) if fuse else dummy
    arrays = [gates, whh, whr, hst, cst, y, cs, hf, uh, acts, chat, stats, ext, bs, wt, wrt,
              x.contiguous() if fuse else dummy, wit, dummy2[0] if bias is None else bias.contiguous(), rows]
    ints = [code, T, B, H, P, int(reverse), int(save), int(proj), plan.width, _split_code(plan), int(fuse),
            int(bias is not None)]
    tab = K.Table(ints, arrays, _gemm_address(x.dtype), brg)
    _run("forward", plan, code, tab, x.dtype)
    hT = hst[T % 2].clone() if plan.units else hst
    saved = None
    if save:
        meta = _Meta(code, T, B, H, P, GH, proj, reverse, plan.width)
        saved = meta, (gates, cs, hf, uh, acts, chat, stats, bs)
    return y, hT, (cst if lstm_family else None), saved


# --- backward -----------------------------------------------------------------------------------


class _Workspace(threading.local):
    """Per thread: the backward's gate-gradient buffers, kept between calls."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, Tensor] = {}


_workspace = _Workspace()
WORKSPACE_MAX_BYTES = 256 << 20  # larger buffers are allocated per call and not kept


def _scratch(slot: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of `shape` for data that never leaves the call, reused between calls.

    A fresh buffer of tens of MB comes from mmap with untouched pages, and every page costs a
    fault when the kernel first writes it (~1.5 us here): at (T, B, H) = (50, 128, 512) the
    forward+backward of the standard cell took 33,000 faults a call (130 MB), the layer-norm cell's
    63,000 (nn.LSTM's: 48,000). Kept per thread, so concurrent backward calls never share one.
    """
    n = math.prod(shape)
    if n * like.element_size() > WORKSPACE_MAX_BYTES:
        return like.new_empty(shape)
    key = (slot, like.dtype, like.device)
    buf = _workspace.buffers.get(key)
    if buf is None or buf.numel() < n:
        buf = _workspace.buffers[key] = like.new_empty(n)
    return buf[:n].view(shape)


def _backward(s: _Meta, needs: dict[str, bool], need_x: bool, x, h0, c0, y, gates, cs, hf, uh, acts, chat, stats,
              bs, p: dict[str, Tensor], dy, dhT, dcT):
    T, B, H, P, GH, code = s.T, s.B, s.H, s.P, s.GH, s.code
    plan = _plan(code, B, H, s.proj, bool(_brgemm_address(x.dtype)), width=s.width)
    G = NUM_GATES[code]
    perm, inv = _permutation(G, H, s.width) if s.width < H else (None, None)
    lstm_family = code <= LAYERNORM
    sep = code in (LAYERNORM, GRU)
    dummy = x.new_zeros(1, 1, 1)
    dummy2 = dummy[0]  # (1, 1): the 2-D placeholder
    dy = dy.contiguous() if dy is not None else x.new_zeros(T, B, P)
    dh = dhT.contiguous().clone() if dhT is not None else x.new_zeros(B, P)
    dc = (dcT.contiguous().clone() if dcT is not None else x.new_zeros(B, H)) if lstm_family else dummy2
    if T * B == 0:
        # no step or no row (an empty batch): the state passes through and the weights get zeros,
        # as the reference's; the kernel has nothing to do, and oneDNN's GEMMs refuse empty operands
        grads = {n: torch.zeros_like(t) for n, t in p.items() if needs.get(n)}
        return (x.new_zeros(x.shape) if need_x else None), dh, (dc if lstm_family else None), grads
    # the gate gradients end in the GEMMs below (which make new tensors): reused scratch
    dg = _scratch(0, (T, B, GH), x)
    dgh = _scratch(1, (T, B, GH), x) if sep else dg
    dhp = x.new_empty(T, B, P) if s.proj else dummy
    dhf = x.new_empty(B, H) if s.proj else dummy2
    part = x.new_empty(2 * plan.threads, B, P) if plan.units or plan.cols else dummy
    acc = x.new_zeros(plan.threads, 4, GH)
    whh, rows = _recurrent_weight(p["weight_hh"], plan, B, perm)
    whr = p["weight_hr"].contiguous() if s.proj else dummy2
    brg = _brgemm_address(x.dtype)
    # brgemm's B operands as panels: W_hh (GH, P), W_hr (P, H); the plain loops read W_hh itself
    # instead when every step has few rows in the unit split, the column share, or (but for GRU)
    # a team of one
    loops_only = B <= K.SMALL_ROWS and (plan.units or plan.cols or (plan.threads == 1 and code != GRU))
    whp = panels(whh, reuse=perm is None) if brg and not loops_only else dummy
    whrp = panels(whr) if brg and s.proj else dummy
    ext = _ext(code, p, H, s.width).contiguous()
    c0_ = c0.contiguous() if lstm_family else dummy2
    # the row split forms a narrow input's gradient per step, W_ih read as it is (one panel): a
    # (T*B, 4H, I) GEMM with I of a few tens runs at ~80-90 GFLOP/s after the kernel; in it, 0.2-0.8 ms
    # comes off a 14-18 ms (35, 32, 28, 256) training call (layer norm up to 1.2), and I=64 breaks even
    fuse_dx = bool(brg) and need_x and perm is None and not (plan.units or plan.cols) and x.shape[2] <= PANEL
    dx = x.new_empty(x.shape) if fuse_dx else None
    arrays = [gates, cs, c0_, h0.contiguous(), y, hf, uh, acts, chat, stats, whh, whr,
              dy, dh, dc, dg, dgh, part if plan.units or plan.cols else dhp, dhf, acc, ext, bs, rows, whp, whrp,
              dx if fuse_dx else dummy, p["weight_ih"].contiguous() if fuse_dx else dummy2]
    ints = [code, T, B, H, P, int(s.reverse), 1, int(s.proj), plan.width, _split_code(plan), int(fuse_dx)]
    tab = K.Table(ints, arrays, _gemm_address(x.dtype), brg)
    _run("backward", plan, code, tab, x.dtype)

    def natural(t: Tensor) -> Tensor:  # gate rows back from the blocked layout, contiguous
        return t.contiguous() if inv is None else t.index_select(0, inv)

    grads: dict[str, Tensor] = {}
    a = acc.sum(0)  # (4, GH)
    if "bias_ih" in p:
        grads["bias_ih"] = natural(a[0])
        grads["bias_hh"] = natural(a[1]) if code == GRU else grads["bias_ih"].clone()
    w_ih = p["weight_ih"]
    if inv is not None and T * B < w_ih.shape[1] + P:
        # fewer rows of dG than of the weight gradients it forms (small batches): bring dG's
        # columns back to the natural layout once, then the GEMMs need no permutation at all
        dg_natural = dg.view(T * B, GH).index_select(1, inv).view(T, B, GH)  # (T*B, GH) -> (T, B, GH)
        dgh = dgh.view(T * B, GH).index_select(1, inv).view(T, B, GH) if sep else dg_natural  # the same
        dg, inv = dg_natural, None
    else:
        w_ih = _gate_rows(w_ih, perm)
    dg2 = dg.view(T * B, GH)  # (T*B, GH)
    # dX = dG W_ih on oneDNN, W_ih read through its transpose: at (T*B, 4H, I) = (6400, 2048, 256),
    # 2 threads, 33 ms against MKL's 56 (3200 x 1024 x 128: 4.7 against 7.0)
    if need_x and not fuse_dx:
        dx = linear(dg2, w_ih.t()).view(T, B, -1)  # (T*B, I) -> (T, B, I)
    if needs.get("weight_ih"):
        grads["weight_ih"] = natural(_input_weight_grad(dg2, x.reshape(T * B, x.shape[2])))  # X: (T*B, I)
    if needs.get("weight_hh"):
        grads["weight_hh"] = natural(_weight_hh_grad(dgh, y, h0, bs, s.reverse))
    if s.proj and needs.get("weight_hr"):
        grads["weight_hr"] = torch.mm(dhp.view(T * B, P).t(), hf.view(T * B, H))  # (P, T*B) @ (T*B, H)
    if code == PEEPHOLE:
        e = a[1, :3 * H]
        if s.width < H:
            e = e.index_select(0, _permutation(3, H, s.width)[1])
        grads["weight_ci"], grads["weight_cf"], grads["weight_co"] = e.view(3, H).clone().unbind(0)  # (3H,) -> 3 x (H,)
    if code == LAYERNORM:
        grads["ln_bias_ih"], grads["ln_bias_hh"] = a[0].clone(), a[0].clone()
        grads["ln_weight_ih"], grads["ln_weight_hh"] = a[1], a[2]
        grads["ln_weight_c"], grads["ln_bias_c"] = a[3, :H].clone(), a[3, H:2 * H].clone()
    return dx, dh, (dc if lstm_family else None), grads


NARROW_INPUT = 48  # inputs up to this size form dW_ih through its transpose (see _input_weight_grad)


def _input_weight_grad(dg2: Tensor, x2: Tensor) -> Tensor:
    """dW_ih = dG^T X over all T*B rows: (G*H, I), possibly a transposed view.

    For a narrow input it is formed as (X^T dG)^T: torch's GEMMs run a (4H, I) result with I of
    16-48 columns 1.1-1.5x slower than its (I, 4H) transpose (2 threads, T*B = 320-6400 rows,
    4H = 1024; e.g. 906 -> 609 us at 1120 rows, I=28, the (35, 32, 28, 256) training shape),
    while from I=64 up the direct product is as fast or faster (1.9x at 100 rows, I=64). The
    transpose runs on oneDNN (`linear`), 0.7-1.0x MKL's time there (589 -> 437 us at 1120 rows, I=28).
    """
    if x2.shape[1] <= NARROW_INPUT:
        return linear(x2.t(), dg2.t()).t()  # made contiguous by the caller's (one) copy
    return torch.mm(dg2.t(), x2)


def _weight_hh_grad(dgh: Tensor, y: Tensor, h0: Tensor, bs: Tensor, reverse: bool) -> Tensor:
    """dW_hh = sum_t dG_t^T h_{t-1}: one GEMM over the steps that follow a step, plus the first steps.

    h_{t-1} of a row is its output at the step the forward ran before t, or h0 at the row's first
    step. Rows past their length have zero dG, so padding contributes nothing.
    """
    T, B, GH = dgh.shape
    P = y.shape[2]
    if reverse:
        main, prev = dgh[:-1], y[1:]
        lengths = (bs.view(T, 1) > torch.arange(B).view(1, B)).sum(0)  # (B,)
        first = dgh[lengths - 1, torch.arange(B)]  # each row's first step runs at t = length - 1
    else:
        main, prev = dgh[1:], y[:-1]
        first = dgh[0]
    g = torch.mm(first.t(), h0.contiguous())
    if T > 1:
        g.addmm_(main.reshape((T - 1) * B, GH).t(), prev.reshape((T - 1) * B, P))  # (GH, (T-1)*B) @ ((T-1)*B, P)
    return g


class _LayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, names, reverse, batch_sizes, exposed, x, h0, c0, *values):
        p = dict(zip(names, values))
        y, hT, cT, (meta, buffers) = _forward(CELL_CODES[spec.name], x, h0, c0, p, batch_sizes, reverse, save=True)
        ctx.meta = meta
        ctx.spec, ctx.names, ctx.reverse, ctx.batch_sizes = spec, names, reverse, batch_sizes
        ctx.has_c = c0 is not None
        # inputs, the output and the kernel's activations: autograd frees them after the backward.
        # An exposed output is saved as a copy, so the caller may change y in place before the
        # backward, as with the reference, torch.nn.GRU/RNN and nn.LSTM (whose float32 oneDNN
        # path, without a projection, saves y and refuses that): one (T, B, P) copy, ~1% of a
        # forward, held until the backward beside y. A hidden layer's y is saved as it is, the
        # tensor the next layer saves as its x
        ctx.save_for_backward(x, h0, c0 if c0 is not None else x.new_zeros(0), y.clone() if exposed else y,
                              *buffers, *values)
        return (y, hT) + ((cT,) if c0 is not None else ())

    @staticmethod
    def backward(ctx, dy, dhT, *rest):
        x, h0, c0, y, gates, cs, hf, uh, acts, chat, stats, bs, *values = ctx.saved_tensors
        p = dict(zip(ctx.names, values))
        if torch.is_grad_enabled() or batched(dy, dhT, *rest):
            # create_graph=True: a backward autograd can differentiate; or gradients batched by vmap
            # (autograd.grad's is_grads_batched, jacobian(vectorize=True)), which the kernel cannot read
            state = (h0, c0) if ctx.has_c else (h0,)
            dx, dstate, grads = reference.differentiable_grads(ctx.spec, x, state, p, ctx.batch_sizes, ctx.reverse,
                                                               (dy, dhT, *rest))
            return (None, None, None, None, None, dx, *dstate, *((None,) if not ctx.has_c else ()),
                    *[grads[n] for n in ctx.names])
        needs = dict(zip(ctx.names, ctx.needs_input_grad[8:]))
        with torch.autocast("cpu", enabled=False):
            dx, dh0, dc0, grads = _backward(ctx.meta, needs, ctx.needs_input_grad[5], x, h0, c0, y, gates, cs, hf,
                                            uh, acts, chat, stats, bs, p, dy, dhT, rest[0] if ctx.has_c else None)
        return (None, None, None, None, None, dx, dh0, dc0, *[grads.get(n) if needs[n] else None for n in ctx.names])


# --- under torch.compile: the layer as two operators of the graph -------------------------------
#
# Opaque to dynamo (it traces neither numba nor the kernels' host code) and declared to it by
# their fakes: output shapes from the input's, with no kernel run. A graph holds them whole, so
# `fullgraph=True` compiles a module as it does one with torch.nn.LSTM. Outputs never alias an
# input or each other (the operators' contract): what would is copied (`_unaliased`). Eager calls
# take `_LayerFunction` instead: an operator's dispatch and autograd wrapper cost ~0.1 ms a call
# (a T=1, B=1, H=8 forward with autograd: 0.20 ms against the Function's 0.07).


def _unaliased(outs: list[Tensor], inputs: tuple[Tensor | None, ...]) -> list[Tensor]:
    """`outs`, each copied that is an input or an earlier output, or a view of one or of what an
    earlier output views (two gradients that are rows of one sum), or not contiguous (as its fake
    is): the operators' contract."""
    def ids(t: Tensor) -> tuple[int, ...]:
        return (id(t),) if t._base is None else (id(t), id(t._base))
    seen = {i for t in inputs if t is not None for i in ids(t)}
    result = []
    for t in outs:
        if id(t) in seen or (t._base is not None and id(t._base) in seen) or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.update(ids(t))
        result.append(t)
    return result


@torch.library.custom_op("lstmkit::numba_layer", mutates_args=(), device_types="cpu")
def _layer_op(cell: str, names: str, reverse: bool, save: bool, copy_y: bool, x: Tensor, h0: Tensor,
              c0: Tensor | None, values: list[Tensor], batch_sizes: Tensor | None) -> list[Tensor]:
    """[y, hT(, cT)]; with `save` then width (the kernel layout, (1,) int64) and the buffers the
    backward reads that the cell has (`_has_buffers`); with `copy_y` last a copy of y to save (y
    is an output the caller may change in place). `names`: the parameters', joined by ","."""
    code = CELL_CODES[cell]
    p = dict(zip(names.split(","), values))
    y, hT, cT, saved = _forward(code, x, h0, c0, p, batch_sizes, reverse, save)
    outs = [y, hT, *((cT,) if c0 is not None else ())]
    if save:
        meta, buffers = saved
        outs += [torch.tensor([meta.width]), *[t for t, has in zip(buffers, _has_buffers(code, meta.proj)) if has]]
    if copy_y:
        outs.append(y.clone())
    return _unaliased(outs, (x, h0, c0, *values, batch_sizes))


@_layer_op.register_fake
def _(cell, names, reverse, save, copy_y, x, h0, c0, values, batch_sizes):
    code = CELL_CODES[cell]
    T, B, _ = x.shape
    keys = names.split(",")
    GH, P = values[keys.index("weight_hh")].shape
    outs = [x.new_empty(T, B, P), h0.new_empty(h0.shape), *((c0.new_empty(c0.shape),) if c0 is not None else ())]
    if save:
        acts = _activations(code, x, T, B, GH // NUM_GATES[code], GH, "weight_hr" in keys, batch_sizes is not None,
                            lambda: None)
        outs += [torch.empty(1, dtype=torch.int64), x.new_empty(T, B, GH), *[t for t in acts if t is not None],
                 torch.empty(T, dtype=torch.int64)]
    if copy_y:
        outs.append(x.new_empty(T, B, P))
    return outs


def _setup_layer_op(ctx, inputs, output):
    cell, names, reverse, save, copy_y, x, h0, c0, values, batch_sizes = inputs
    n = 2 + (c0 is not None)
    ctx.mark_non_differentiable(*output[n:])
    ctx.set_materialize_grads(False)  # the kernel takes a missing gradient as zeros, unallocated
    ctx.cell, ctx.names, ctx.reverse, ctx.has_c = cell, names, reverse, c0 is not None
    ctx.needs = [t.requires_grad for t in (x, h0, *((c0,) if c0 is not None else ()), *values)]
    if save:  # (else nothing requires grad: layer() saves whenever autograd records)
        buffers = output[n:-1] if copy_y else output[n:]  # width, then the cell's buffers
        ctx.save_for_backward(x, h0, c0, output[-1] if copy_y else output[0], *values, *buffers)


def _layer_op_backward(ctx, grads):
    x, h0, c0, y, *rest = ctx.saved_tensors
    n = 2 + ctx.has_c
    values, buffers = rest[:len(ctx.needs) - n], rest[len(ctx.needs) - n:]
    flat = iter(_layer_backward_op(ctx.cell, ctx.names, ctx.reverse, ctx.needs, x, h0, c0, y, list(buffers),
                                   list(values), grads[0], grads[1], grads[2] if ctx.has_c else None))
    picked = [next(flat) if need else None for need in ctx.needs]  # (x, h0[, c0], *values)
    return (None, None, None, None, None, picked[0], picked[1], picked[2] if ctx.has_c else None, picked[n:], None)


_layer_op.register_autograd(_layer_op_backward, setup_context=_setup_layer_op)


@torch.library.custom_op("lstmkit::numba_layer_backward", mutates_args=(), device_types="cpu")
def _layer_backward_op(cell: str, names: str, reverse: bool, needs: list[bool], x: Tensor, h0: Tensor,
                       c0: Tensor | None, y: Tensor, buffers: list[Tensor], values: list[Tensor],
                       dy: Tensor | None, dhT: Tensor | None, dcT: Tensor | None) -> list[Tensor]:
    """The gradients of (x, h0[, c0], *values) that `needs` asks for, in that order; `buffers`:
    width and the cell's buffers, as `_layer_op` returned them."""
    code = CELL_CODES[cell]
    keys = names.split(",")
    p = dict(zip(keys, values))
    T, B, _ = x.shape
    GH, P = p["weight_hh"].shape
    proj = "weight_hr" in p
    width, *present = buffers
    dummy = x.new_zeros(1, 1, 1)
    given = iter(present)
    gates, cs, hf, uh, acts, chat, stats, bs = (next(given) if has else dummy for has in _has_buffers(code, proj))
    meta = _Meta(code, T, B, GH // NUM_GATES[code], P, GH, proj, reverse, int(width.item()))
    n = 2 + (c0 is not None)
    with torch.autocast("cpu", enabled=False):
        dx, dh0, dc0, grads = _backward(meta, dict(zip(keys, needs[n:])), needs[0], x, h0, c0, y, gates, cs, hf,
                                        uh, acts, chat, stats, bs, p, dy, dhT, dcT)
    every = [dx, dh0, *((dc0,) if c0 is not None else ()), *[grads.get(k) for k in keys]]
    return _unaliased([g for g, need in zip(every, needs) if need], (x, h0, c0, y, *buffers, *values, dy, dhT, dcT))


@_layer_backward_op.register_fake
def _(cell, names, reverse, needs, x, h0, c0, y, buffers, values, dy, dhT, dcT):
    inputs = (x, h0, *((c0,) if c0 is not None else ()), *values)
    return [t.new_empty(t.shape) for t, need in zip(inputs, needs) if need]


# --- the layer contract ---------------------------------------------------------------------------


def layer(spec: CellSpec, x: Tensor, state: tuple[Tensor, ...], params: dict[str, Tensor],
          batch_sizes: Tensor | None = None, reverse: bool = False, *,
          exposed: bool = True) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The layer contract of `lstmkit.kernels` (x: (T, B, I) -> y: (T, B, P or H), final state)."""
    code = CELL_CODES[spec.name]
    if x.device.type not in DEVICES:
        raise ValueError(f"x: expected a cpu tensor (backend 'numba' runs on CPU), got {x.device.type}")
    if x.dtype not in DTYPES:  # backend="auto" takes the reference for others (lstmkit.kernels)
        raise TypeError(f"x: backend 'numba' takes dtypes {list(DTYPES)}, got {x.dtype}")
    # the kernels and their GEMMs are chosen by x's dtype: any other tensor would be misread; and
    # they read raw addresses, so a tensor on another device would be read as host memory (a crash)
    for name, t in (*zip(("h0", "c0"), state), *params.items()):
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the input's), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on {x.device} (the input's device), got {t.device}")
    h0 = state[0]
    c0 = state[1] if spec.has_cell_state else None
    names = tuple(params)
    values = tuple(params[n] for n in names)
    tensors = (x, h0, *((c0,) if c0 is not None else ()), *values)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    # the kernels compute in the parameters' dtype: autocast's casts would meet them half way
    with torch.autocast("cpu", enabled=False):
        if needs_reference(tensors):
            return reference.layer(spec, x, state, params, batch_sizes, reverse)
        if torch.compiler.is_compiling():
            # dynamo is tracing this call: the graph gets the operators (dynamo traced into numba's
            # own compiler before, for seconds, then broke the graph there)
            outs = _layer_op(spec.name, ",".join(names), reverse, save, save and exposed, x, h0, c0, list(values),
                             batch_sizes)
            return outs[0], tuple(outs[1:2 + (c0 is not None)])
        if save:
            outs = _LayerFunction.apply(spec, names, reverse, batch_sizes, exposed, x, h0, c0, *values)
            return outs[0], tuple(outs[1:])
        with torch.no_grad():
            y, hT, cT, _ = _forward(code, x, h0, c0, params, batch_sizes, reverse, save=False)
    return y, ((hT, cT) if c0 is not None else (hT,))
