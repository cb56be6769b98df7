"""The numba kernels of `backend="numba"`: one whole-sequence recurrence per call, forward and
backward, for every cell (lstm, peephole, cifg, layernorm, gru, rnn_tanh, rnn_relu).

Per step, for the rows still running (the first bs[t] rows, PackedSequence's convention):
  forward:  gates[t] += h_{t-1} @ W_hh^T      (layernorm, GRU: into a separate buffer uh)
            one fused pointwise pass -> h_t, c_t (a projection: h_t = h_full @ W_hr^T)
  backward: dh += dy[t] (a projection: dh_full = dh @ W_hr)
            one fused pointwise pass -> dG[t] (gate pre-activation gradients), dc
            dh = dG_hh[t] @ W_hh
The input projection before, and the weight gradients after, are single GEMMs done by the caller
(`lstm_numba`). Layout: C-contiguous, time-major; gates (T, B, G*H).

Two ways to split a call between threads (see the two groups of drivers below):
  * rows: thread k of n owns rows k, k+n, ... (round-robin keeps the threads balanced when rows
    end early). Rows are independent sequences: the threads never wait for each other.
  * units: thread k owns a block of hidden units (its gate columns, its slice of W_hh, which
    stays in its core's cache across steps) for all rows; the threads meet once per step.

The runtime (first part of this file) reaches torch's own BLAS and OpenMP from nopython code.
Why: numba's `np.dot` runs on OpenBLAS and numba's `prange` on a second libgomp, while torch runs
MKL on its own libgomp; on a 2-core machine two spinning thread pools slow each other down badly
(see ../shared/notes/cpu-lstm-performance.md). So the kernels call the GEMMs that torch links:
in float32 oneDNN's brgemm micro-kernels through `at::native::cpublas::brgemm` (what nn.LSTM's
oneDNN RNN runs on; row-major), else the BLAS (`sgemm_`/`dgemm_`, Fortran ABI, column-major,
every argument by pointer); and run their threads with `GOMP_parallel` of torch's libgomp: one
pool, the same threads torch uses, and `GOMP_barrier` as the per-step meeting.

Function addresses reach the kernels as integers at run time (never baked into the machine
code), so every numba function here can be cached on disk (`cache=True`). Nothing is compiled
at import time. Everything numba compiles lives in this one file, the binary Tree-LSTM's kernels
of `treelstm_numba` too (last section): numba's disk cache is invalidated by the defining file's
timestamp only, not by a change to a helper it imports from another file (numba's documentation
says so; numba/numba#1833), so a helper shared across files could leave stale cached kernels behind.
"""

from __future__ import annotations

import ctypes
import os
import sys

import numpy as np
import torch
from llvmlite import ir
from numba import carray as _carray
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from lstmkit.cells import CELLS
from lstmkit.cells.layernorm import LN_EPS  # compiled in as a constant (changing it: clear the cache)

# --- torch's libraries ------------------------------------------------------------------------


def _torch_cpu_library() -> ctypes.CDLL:
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = {"linux": "libtorch_cpu.so", "darwin": "libtorch_cpu.dylib"}
    name = names.get(sys.platform, "libtorch_cpu.so")
    path = os.path.join(libdir, name)
    if not os.path.exists(path):
        raise ImportError(f"numba backend: torch's CPU library not found at {path}")
    return ctypes.CDLL(path)  # already loaded by torch: dlopen returns the same handle


def _address(lib: ctypes.CDLL, *names: str) -> int:
    for name in names:
        try:
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
        except AttributeError:
            continue
    return 0


_LIB = _torch_cpu_library()
# dlsym on torch_cpu's handle also searches its dependencies (its libgomp, its BLAS).
SGEMM = _address(_LIB, "sgemm_", "sgemm")
DGEMM = _address(_LIB, "dgemm_", "dgemm")
if not (SGEMM and DGEMM):
    raise ImportError("numba backend: torch's CPU library exports no Fortran BLAS sgemm_/dgemm_")
MKL_SET_LOCAL = _address(_LIB, "MKL_Set_Num_Threads_Local")  # C ABI (by value); 0 without MKL
# oneDNN's batch-reduce GEMM (the brgemm micro-kernels nn.LSTM runs on), float32, through the C++
# function at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add_C, A, B, C, is_vnni): all its
# arguments are plain integers, bools and pointers, so its mangled symbol has the C calling
# convention. Row-major C(M, N) (+)= A(M, K) B(K, N); it keeps a JIT-generated kernel per shape
# in a thread-local cache, so every thread of a team may call it. ~1.4x MKL's sgemm on the
# per-step shapes here (105 vs 73 GFLOP/s at (32, 512, 256), one Zen 4 core).
BRGEMM = _address(_LIB, "_ZN2at6native7cpublas6brgemmEllllllbPKfS3_Pfb")
OMP_THREAD_NUM = _address(_LIB, "omp_get_thread_num")
OMP_NUM_THREADS = _address(_LIB, "omp_get_num_threads")
_GOMP_PARALLEL = _address(_LIB, "GOMP_parallel")
GOMP_BARRIER = _address(_LIB, "GOMP_barrier")
HAVE_GOMP = bool(_GOMP_PARALLEL and GOMP_BARRIER and OMP_THREAD_NUM and OMP_NUM_THREADS)
gomp_parallel = (ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)(_GOMP_PARALLEL)
                 if HAVE_GOMP else None)

# Compile options shared by every kernel: error_model="numpy" lets LLVM vectorise the pointwise
# loops (no ZeroDivisionError checks); reassoc lets it vectorise the reductions (the layer-norm
# forward's statistics, the small-batch matrix-vector products).
JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc", "nsz"})
# The pointwise cell passes and the layer-norm backward without contract and reassoc: with them, a
# process that compiled these kernels and one that loaded them from numba's cache rounded some
# gates differently (FMA or not, summation order), so a run resumed from a checkpoint did not
# continue the first one bit for bit. Their pointwise loops vectorise without either flag; the
# layer-norm backward's row sums turn scalar, at no cost the A/B of BENCHMARKS.md (stop 24) saw.
JIT_EXACT = {**JIT, "fastmath": {"nsz"}}
# The activations carry flags of their own. A jitted function without them inherits the flags of
# whichever caller compiled it first in the process, and numba keeps that one compilation for every
# later caller: so a process that first ran a layer-norm or Tree-LSTM kernel (JIT) computed the
# LSTM gates with other roundings than one that ran an LSTM first (JIT_EXACT), and numba's disk cache
# kept each caller as it was compiled, so the same seed trained differently after another model had
# filled the cache. With contract, the polynomials' multiply-adds are FMAs: ~1.6x (tanh) and ~1.3x
# (sigmoid) the throughput of separate multiplies and adds, and as accurate (3e-7 relative).
ACT = dict(error_model="numpy", fastmath={"contract", "nsz"})

# --- intrinsics -------------------------------------------------------------------------------


@intrinsic
def eptr(typingctx, arr, off):
    """voidptr to element `off` (flat, in elements) of a C-contiguous array."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.bitcast(builder.gep(ary.data, [args[1]]), cgutils.voidptr_t)
    return types.voidptr(arr, types.intp), codegen


@intrinsic
def typed_ptr(typingctx, addr, like):
    """An integer address as a pointer to `like`'s type (use with numba.carray)."""
    ptrty = types.CPointer(like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptrty))
    return ptrty(addr, like), codegen


@intrinsic
def voidptr_to_i64p(typingctx, p):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64).as_pointer())
    return types.CPointer(types.int64)(p), codegen


@intrinsic
def call_int_void(typingctx, fn):
    """int fn(void) at address fn."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
    return types.int32(fn), codegen


@intrinsic
def call_void_void(typingctx, fn):
    """void fn(void) at address fn."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return context.get_dummy_value()
    return types.void(fn), codegen


_VP = cgutils.voidptr_t


@intrinsic
def call_brgemm(typingctx, fn, m, n, k, lda, ldb, ldc, add_c, a, b, c):
    """void brgemm(int64 M, N, K, lda, ldb, ldc, bool add_C, const float *A, const float *B, float *C,
    bool is_vnni=false) at address fn."""
    def codegen(context, builder, sig, args):
        i64, i8 = ir.IntType(64), ir.IntType(8)
        fnty = ir.FunctionType(ir.VoidType(), [i64] * 6 + [i8, _VP, _VP, _VP, i8])
        vals = list(args[1:7]) + [builder.trunc(args[7], i8), args[8], args[9], args[10], ir.Constant(i8, 0)]
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), vals)
        return context.get_dummy_value()
    i, v = types.int64, types.voidptr
    return types.void(fn, i, i, i, i, i, i, i, v, v, v), codegen


@intrinsic
def call_int_int(typingctx, fn, x):
    """int fn(int) at address fn."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1]])
    return types.int32(fn, types.int32), codegen


@intrinsic
def call_gemm(typingctx, fn, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13):
    """Fortran ?gemm_(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc), all pointers."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t] * 13)
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), list(args[1:]))
        return context.get_dummy_value()
    return types.void(fn, *([types.voidptr] * 13)), codegen


# --- activations: exact in float64, vectorisable approximations in float32 -----------------------
# No libm call in the float32 loops (expf would stay scalar: no SVML here), so LLVM vectorises them.
# tanh: the [13/6] rational approximation Eigen uses for float on |x| < 7.9, where it is within
# 3.5e-7 (6 ulp) of tanh; then its value at 7.9, 1 - 2.4e-7, up to |x| = 13 ln 2 = 9.0109, and
# +-1 beyond, where float32's tanh rounds to +-1: a saturated tanh's derivative 1 - t^2 is 0, as torch's.
# sigmoid: e / (1 + e) or 1 / (1 + e) with e = exp(-|x|), exp from exponent bits and a degree-6
# polynomial (Cody-Waite reduction): within 3e-7 of it relative to its value down to the smallest
# normal float (1.2e-38; 0 below, as torch's with denormals flushed), so a
# closed gate (sigmoid(-30) = 9e-14) closes. Through tanh, (1 + tanh(x/2)) / 2, it bottomed out at
# 1.2e-7: a closed forget gate leaked 1.2e-7 of c every step, and the gradients' errors grew with
# |c| (3e-3 relative at |c| ~ 1e4, NaN from |c| ~ 1e10).

_F = np.float32
_TCLAMP = _F(7.90531110763549805)
_TSAT = _F(13 * np.log(2))  # float32's tanh(x) rounds to 1 from here: 1 - tanh(x) ~ 2 e^(-2x) < 2**-25
_A1, _A3, _A5 = _F(4.89352455891786e-03), _F(6.37261928875436e-04), _F(1.48572235717979e-05)
_A7, _A9 = _F(5.12229709037114e-08), _F(-8.60467152213735e-11)
_A11, _A13 = _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2 = _F(4.89352518554385e-03), _F(2.26843463243900e-03)
_B4, _B6 = _F(1.18534705686654e-04), _F(1.19825839466702e-06)
_ONE, _HALF = _F(1.0), _F(0.5)
_EXP_MIN = _F(-87.33654)  # ln of the smallest normal float, 1.18e-38, rounded up (the exponent bits need one)
_ZERO = _F(0.0)
_LOG2E = _F(1.44269504088896341)
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)  # ln 2 = HI + LO; n * HI is exact
_E2, _E3, _E4 = _F(5.0000001201e-1), _F(1.6666665459e-1), _F(4.1665795894e-2)
_E5, _E6, _E7 = _F(8.3334519073e-3), _F(1.3981999507e-3), _F(1.9875691500e-4)


@intrinsic
def _pow2(typingctx, n):
    """2**n for a float32 n holding an integer in [-126, 127], written into the exponent bits."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        k = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(k, ir.Constant(i32, 23)), ir.FloatType())
    return types.float32(types.float32), codegen


@njit(**ACT)
def _exp_nonpositive_f32(y):
    """exp(y) for float32 y <= 0: 2**n * exp(r), |r| <= ln(2)/2; 0 below _EXP_MIN."""
    z = max(y, _EXP_MIN)
    n = np.floor(z * _LOG2E + _HALF)
    r = (z - n * _LN2_HI) - n * _LN2_LO
    p = r * _E7 + _E6
    p = r * p + _E5
    p = r * p + _E4
    p = r * p + _E3
    p = r * p + _E2
    e = (r * r * p + r + _ONE) * _pow2(n)
    return _ZERO if y < _EXP_MIN else e  # a select; NaN fails the test and keeps e (NaN)


def tanh(x):
    """Elementwise tanh for the kernels (typed dispatch below)."""
    raise NotImplementedError


def sigmoid(x):
    raise NotImplementedError


@njit(**ACT)
def _tanh_f32(x):
    y = min(max(x, -_TCLAMP), _TCLAMP)
    y2 = y * y
    p = y2 * _A13 + _A11
    p = y2 * p + _A9
    p = y2 * p + _A7
    p = y2 * p + _A5
    p = y2 * p + _A3
    p = y2 * p + _A1
    p = y * p
    q = y2 * _B6 + _B4
    q = y2 * q + _B2
    q = y2 * q + _B0
    # a select, so the loop still vectorises; NaN fails the test and keeps p / q (NaN)
    return (_ONE if x > 0 else -_ONE) if abs(x) >= _TSAT else p / q


@njit(**ACT)
def _sigmoid_f32(x):
    e = _exp_nonpositive_f32(-abs(x))  # in (0, 1]: neither branch below can overflow
    s = _ONE / (_ONE + e)
    return s if x >= 0 else e * s


@overload(tanh, jit_options=ACT)
def _ov_tanh(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    return lambda x: np.tanh(x)


@overload(sigmoid, jit_options=ACT)
def _ov_sigmoid(x):
    if x == types.float32:
        return lambda x: _sigmoid_f32(x)
    return lambda x: 1.0 / (1.0 + np.exp(-x))


def cast_like(x, arr):
    """x converted to arr's element type."""
    raise NotImplementedError


@overload(cast_like)
def _ov_cast_like(x, arr):
    npty = as_dtype(arr.dtype).type
    return lambda x, arr: npty(x)


# --- BLAS -------------------------------------------------------------------------------------

_N, _T = 78, 84  # BLAS transpose flags: ord("N"), ord("T")


@njit(**JIT)
def gemm(fn, iw, fw, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """Column-major C(m,n) = alpha op(A) op(B) + beta C through torch's BLAS at address fn.

    iw (int32[8]) and fw (dtype[2]) are the caller's scratch for the by-pointer arguments.
    """
    if m <= 0 or n <= 0:
        return
    iw[0] = ta
    iw[1] = tb
    iw[2] = m
    iw[3] = n
    iw[4] = k
    iw[5] = lda
    iw[6] = ldb
    iw[7] = ldc
    fw[0] = alpha
    fw[1] = beta
    call_gemm(fn, eptr(iw, 0), eptr(iw, 1), eptr(iw, 2), eptr(iw, 3), eptr(iw, 4), eptr(fw, 0),
              A, eptr(iw, 5), B, eptr(iw, 6), eptr(fw, 1), C, eptr(iw, 7))


@njit(**JIT)
def mkl_local_threads(fn, nt):
    """mkl_set_num_threads_local(nt) when torch links MKL; returns the previous setting."""
    if fn == 0:
        return 0
    return call_int_int(fn, np.int32(nt))


@njit(**JIT)
def brgemm(fn, m, n, k, A, lda, B, ldb, C, ldc, add_c):
    """Row-major float32 C(m, n) = A(m, k) B(k, n) (+ C if add_c) through oneDNN's brgemm at address fn."""
    if m <= 0 or n <= 0:
        return
    call_brgemm(fn, np.int64(m), np.int64(n), np.int64(k), np.int64(lda), np.int64(ldb), np.int64(ldc),
                np.int64(1 if add_c else 0), A, B, C)


@njit(**JIT)
def brgemm_panels(fn, m, n, k, A, lda, bp, k0, c0, C, coff, ldc, add_c):
    """brgemm with B = rows [k0, k0 + k), columns [c0, c0 + n) of a matrix held as panels bp
    (lstmkit.kernels.panels): row-major C(m, n) = A(m, k) B (+ C if add_c), one call per panel;
    C from element coff of array C."""
    pw = bp.shape[2]
    kk = bp.shape[1]
    c = c0
    while c < c0 + n:
        q = c // pw
        off = c - q * pw
        w = min(pw - off, c0 + n - c)
        brgemm(fn, m, w, k, A, lda, eptr(bp, (q * kk + k0) * pw + off), pw, eptr(C, coff + c - c0), ldc, add_c)
        c += w


# --- argument tables --------------------------------------------------------------------------
# A kernel's arguments travel as one int64 table: a header, then (address, d0, d1, d2) per array.
# This is what lets one C-ABI body (void f(void*)) serve GOMP_parallel.

HEADER = 32  # [0] length, addresses: [1] omp_get_thread_num, [2] omp_get_num_threads,
#   [3] MKL_Set_Num_Threads_Local, [4] ?gemm_, [5] GOMP_barrier, [6] brgemm (0: use [4]);
#   [7:] the kernel's ints


@njit(**JIT)
def arr1(tab, i, z):
    b = HEADER + 4 * i
    return carray_(tab[b], z, (tab[b + 1],))


@njit(**JIT)
def arr2(tab, i, z):
    b = HEADER + 4 * i
    return carray_(tab[b], z, (tab[b + 1], tab[b + 2]))


@njit(**JIT)
def arr3(tab, i, z):
    b = HEADER + 4 * i
    return carray_(tab[b], z, (tab[b + 1], tab[b + 2], tab[b + 3]))


@njit(**JIT)
def carray_(addr, z, shape):
    return _carray(typed_ptr(addr, z), shape)


class Table:
    """A kernel call's int64 argument table, owning the tensors its addresses point into."""

    def __init__(self, ints: list[int], arrays: list[torch.Tensor], gemm_addr: int, brgemm_addr: int = 0):
        assert len(ints) <= HEADER - 7
        head = [HEADER + 4 * len(arrays), OMP_THREAD_NUM, OMP_NUM_THREADS, MKL_SET_LOCAL, gemm_addr, GOMP_BARRIER,
                brgemm_addr, *ints]
        vals = head + [0] * (HEADER - len(head))
        for a in arrays:  # not an assert: a violation is a segfault, and python -O drops asserts
            if a.device.type != "cpu" or a.layout != torch.strided or a.dim() > 3 or not a.is_contiguous():
                raise ValueError(f"kernel arrays are C-contiguous CPU tensors of at most 3 dimensions, got a "
                                 f"{a.layout} tensor on {a.device} of shape {tuple(a.shape)}")
            shape = (*a.shape, 1, 1, 1)  # padded to three dimensions
            vals += (a.data_ptr(), shape[0], shape[1], shape[2])
        self.table = np.array(vals, dtype=np.int64)
        self.arrays = arrays  # alive as long as the table

    @property
    def address(self) -> int:
        return self.table.ctypes.data


@njit(**JIT)
def read_table(data):
    """The table behind a C-ABI body's void* argument."""
    p = voidptr_to_i64p(data)
    n = _carray(p, (1,))[0]
    return _carray(p, (n,))


# ==============================================================================================
# Kernels
# ==============================================================================================


LSTM, PEEPHOLE, CIFG, LAYERNORM, GRU, RNN_TANH, RNN_RELU = range(7)
CELL_CODES = {"lstm": LSTM, "peephole": PEEPHOLE, "cifg": CIFG, "layernorm": LAYERNORM,
              "gru": GRU, "rnn_tanh": RNN_TANH, "rnn_relu": RNN_RELU}
NUM_GATES = tuple(CELLS[name].num_gates for name in sorted(CELL_CODES, key=CELL_CODES.get))  # by cell code
UNIT_BLOCK = 16  # hidden units per block of the blocked gate layout (see below)

# ----------------------------------------------------------------------------------------------
# Pointwise passes over one row, for the hidden units [u0, u1).
#
# Gate layout: the G*H gate columns come in blocks of W units: the block of units [ub, ub+w)
# holds gate g of unit ub+j at column G*ub + g*w + j. W = H is the natural layout (gate blocks
# of H, as torch stores the weights); W = UNIT_BLOCK is the blocked layout of the unit split,
# where any run of whole blocks is one contiguous range of columns. Per-unit parameter vectors
# with several parts (peepholes) use the same scheme. The inner loops over j vectorise.
# ----------------------------------------------------------------------------------------------


@njit(**JIT_EXACT)
def _lstm_fwd_block(a, c, h, cs, w):
    """a: gate pre-activations -> activations i, f, g, o; c: c_{t-1} -> c_t; h: out; cs: c_t saved."""
    for j in range(w):
        i = sigmoid(a[j])
        f = sigmoid(a[w + j])
        g = tanh(a[2 * w + j])
        o = sigmoid(a[3 * w + j])
        cn = f * c[j] + i * g
        c[j] = cn
        cs[j] = cn
        h[j] = o * tanh(cn)
        a[j] = i
        a[w + j] = f
        a[2 * w + j] = g
        a[3 * w + j] = o


@njit(**JIT)
def _lstm_fwd(a, c, h, cs, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        _lstm_fwd_block(a[4 * ub:4 * (ub + w)], c[ub:ub + w], h[ub:ub + w], cs[ub:ub + w], w)
        ub += w


@njit(**JIT_EXACT)
def _peephole_fwd_block(a, c, h, cs, p, w):
    """Peepholes p = [p_i, p_f, p_o]: i, f see c_{t-1}, o sees c_t."""
    for j in range(w):
        cp = c[j]
        i = sigmoid(a[j] + p[j] * cp)
        f = sigmoid(a[w + j] + p[w + j] * cp)
        g = tanh(a[2 * w + j])
        cn = f * cp + i * g
        o = sigmoid(a[3 * w + j] + p[2 * w + j] * cn)
        c[j] = cn
        cs[j] = cn
        h[j] = o * tanh(cn)
        a[j] = i
        a[w + j] = f
        a[2 * w + j] = g
        a[3 * w + j] = o


@njit(**JIT)
def _peephole_fwd(a, c, h, cs, p, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        _peephole_fwd_block(a[4 * ub:4 * (ub + w)], c[ub:ub + w], h[ub:ub + w], cs[ub:ub + w],
                            p[3 * ub:3 * (ub + w)], w)
        ub += w


@njit(**JIT_EXACT)
def _cifg_fwd_block(a, c, h, cs, w):
    """Gates f, g, o; i = 1 - f."""
    for j in range(w):
        f = sigmoid(a[j])
        g = tanh(a[w + j])
        o = sigmoid(a[2 * w + j])
        cn = c[j] * f + g - g * f
        c[j] = cn
        cs[j] = cn
        h[j] = o * tanh(cn)
        a[j] = f
        a[w + j] = g
        a[2 * w + j] = o


@njit(**JIT)
def _cifg_fwd(a, c, h, cs, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        _cifg_fwd_block(a[3 * ub:3 * (ub + w)], c[ub:ub + w], h[ub:ub + w], cs[ub:ub + w], w)
        ub += w


@njit(**JIT_EXACT)
def _gru_fwd_block(a, u, hp, h, bh, w):
    """a: W x_t + b_ih -> r, z, n; u: U h_{t-1} -> its n part becomes U_n h + b_hn; hp -> h (may alias)."""
    for j in range(w):
        r = sigmoid(a[j] + u[j] + bh[j])
        z = sigmoid(a[w + j] + u[w + j] + bh[w + j])
        hn = u[2 * w + j] + bh[2 * w + j]
        n = tanh(a[2 * w + j] + r * hn)
        hpj = hp[j]
        h[j] = n + z * (hpj - n)
        a[j] = r
        a[w + j] = z
        a[2 * w + j] = n
        u[2 * w + j] = hn


@njit(**JIT)
def _gru_fwd(a, u, hp, h, bh, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        q0, q1 = 3 * ub, 3 * (ub + w)
        _gru_fwd_block(a[q0:q1], u[q0:q1], hp[ub:ub + w], h[ub:ub + w], bh[q0:q1], w)
        ub += w


@njit(**JIT_EXACT)
def _rnn_fwd(a, h, relu, u0, u1):
    zero = cast_like(0.0, a)
    a, h = a[u0:u1], h[u0:u1]  # slices from 0: see _add_range
    if relu:  # as torch's relu: NaN stays NaN, -inf gives 0 (v - v gave NaN)
        for j in range(a.shape[0]):
            v = a[j]
            h[j] = zero if v <= 0 else v
    else:
        for j in range(a.shape[0]):
            h[j] = tanh(a[j])


@njit(**JIT)
def _row_stats(v, N):
    """Mean and 1/sqrt(var + eps) of v[:N] (biased variance, as torch's layer norm), summed in v's
    dtype like the backward's sums."""
    n = cast_like(N, v)
    s = cast_like(0.0, v)
    for q in range(N):
        s += v[q]
    mu = s / n
    s2 = cast_like(0.0, v)
    for q in range(N):
        d = v[q] - mu
        s2 += d * d
    return mu, cast_like(1.0 / np.sqrt(s2 / n + LN_EPS), v)


# The layer-norm loops below write one array each (and the backward sums in the arrays' dtype):
# against loops that wrote several views each and summed in float64, one row at H=256 (float32):
# forward 1.31 -> 1.20 us, backward 1.79 -> 1.64 us with its data in cache; 1.97 -> 1.78 and
# 2.83 -> 2.57 us over 1,120 rows in memory.


@njit(**JIT)
def _sigmoid_range(v):
    for j in range(v.shape[0]):
        v[j] = sigmoid(v[j])


@njit(**JIT)
def _tanh_range(v):
    for j in range(v.shape[0]):
        v[j] = tanh(v[j])


@njit(**JIT)
def _layernorm_gates(x, u, a, e, H):
    """a <- the gate activations (i, f, g, o) from x = LN(W x_t) and u = LN(U h_{t-1}), normalised.

    e = [gain_x, bias_x, gain_h, bias_h, bias (b_ih + b_hh), gain_c (H), bias_c (H)]. The forward
    and the backward both call this: the backward recomputes the activations instead of the
    forward saving them in a third (T, B, 4H) array (training at T=50, B=128, H=512: 1.18 -> 1.13
    of nn.LSTM's time, median of five paired A/B runs).
    """
    GH = 4 * H
    # one slice per part of e: with offsets into one array LLVM does not vectorise the loops (4x slower)
    gx, bx, gu, bu, b = e[:GH], e[GH:2 * GH], e[2 * GH:3 * GH], e[3 * GH:4 * GH], e[4 * GH:5 * GH]
    for q in range(GH):
        a[q] = gx[q] * x[q] + bx[q] + gu[q] * u[q] + bu[q] + b[q]
    _sigmoid_range(a[:2 * H])  # i, f
    _tanh_range(a[2 * H:3 * H])  # g
    _sigmoid_range(a[3 * H:GH])  # o


@njit(**JIT)
def _normalise(v, mu, rstd):
    for q in range(v.shape[0]):
        v[q] = (v[q] - mu) * rstd


@njit(**JIT)
def _layernorm_fwd(x, u, a, c, h, cs, ch, st, e, H):
    """Natural layout only. x: W x_t (4H) -> normalised; u: U h_{t-1} (4H) -> normalised;
    a: scratch for the activations (see _layernorm_gates for e).

    st <- [rstd_x, rstd_h, mu_c, rstd_c]; ch <- normalised c_t.
    """
    GH = 4 * H
    gc, bc = e[5 * GH:5 * GH + H], e[5 * GH + H:5 * GH + 2 * H]
    mx, rx = _row_stats(x, GH)
    mh, rh = _row_stats(u, GH)
    _normalise(x, mx, rx)
    _normalise(u, mh, rh)
    _layernorm_gates(x, u, a, e, H)
    a_i, a_f, a_g, a_o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:GH]
    for j in range(H):
        c[j] = a_f[j] * c[j] + a_i[j] * a_g[j]
    _copy_range(cs, c, 0, H)
    mc, rc = _row_stats(c, H)
    for j in range(H):
        ch[j] = (c[j] - mc) * rc
    for j in range(H):
        h[j] = a_o[j] * tanh(gc[j] * ch[j] + bc[j])
    st[0] = rx
    st[1] = rh
    st[2] = mc
    st[3] = rc


@njit(**JIT_EXACT)
def _lstm_bwd_block(a, c, cp, dh, dc, dg, w):
    """a: activations i, f, g, o; c: c_t; cp: c_{t-1}; dh: dL/dh_t; dc: dL/dc_t -> dL/dc_{t-1}."""
    one = cast_like(1.0, a)
    for j in range(w):
        i = a[j]
        f = a[w + j]
        g = a[2 * w + j]
        o = a[3 * w + j]
        tc = tanh(c[j])
        dhj = dh[j]
        d = dc[j] + dhj * o * (one - tc * tc)
        dg[j] = d * g * i * (one - i)
        dg[w + j] = d * cp[j] * f * (one - f)
        dg[2 * w + j] = d * i * (one - g * g)
        dg[3 * w + j] = dhj * tc * o * (one - o)
        dc[j] = d * f


@njit(**JIT)
def _lstm_bwd(a, c, cp, dh, dc, dg, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        q0, q1, v1 = 4 * ub, 4 * (ub + w), ub + w
        _lstm_bwd_block(a[q0:q1], c[ub:v1], cp[ub:v1], dh[ub:v1], dc[ub:v1], dg[q0:q1], w)
        ub += w


@njit(**JIT_EXACT)
def _peephole_bwd_block(a, c, cp, dh, dc, dg, p, acc, w):
    """Like _lstm_bwd plus the peephole paths; acc (laid out like p) += peephole weight gradients."""
    one = cast_like(1.0, a)
    for j in range(w):
        i = a[j]
        f = a[w + j]
        g = a[2 * w + j]
        o = a[3 * w + j]
        cj = c[j]
        cpj = cp[j]
        tc = tanh(cj)
        dhj = dh[j]
        do = dhj * tc * o * (one - o)
        d = dc[j] + dhj * o * (one - tc * tc) + do * p[2 * w + j]
        di = d * g * i * (one - i)
        df = d * cpj * f * (one - f)
        dg[j] = di
        dg[w + j] = df
        dg[2 * w + j] = d * i * (one - g * g)
        dg[3 * w + j] = do
        dc[j] = d * f + di * p[j] + df * p[w + j]
        acc[j] += di * cpj
        acc[w + j] += df * cpj
        acc[2 * w + j] += do * cj


@njit(**JIT)
def _peephole_bwd(a, c, cp, dh, dc, dg, p, acc, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        q0, q1, p0, p1, v1 = 4 * ub, 4 * (ub + w), 3 * ub, 3 * (ub + w), ub + w
        _peephole_bwd_block(a[q0:q1], c[ub:v1], cp[ub:v1], dh[ub:v1], dc[ub:v1], dg[q0:q1], p[p0:p1],
                            acc[p0:p1], w)
        ub += w


@njit(**JIT_EXACT)
def _cifg_bwd_block(a, c, cp, dh, dc, dg, w):
    one = cast_like(1.0, a)
    for j in range(w):
        f = a[j]
        g = a[w + j]
        o = a[2 * w + j]
        tc = tanh(c[j])
        dhj = dh[j]
        d = dc[j] + dhj * o * (one - tc * tc)
        dg[j] = d * (cp[j] - g) * f * (one - f)
        dg[w + j] = d * (one - f) * (one - g * g)
        dg[2 * w + j] = dhj * tc * o * (one - o)
        dc[j] = d * f


@njit(**JIT)
def _cifg_bwd(a, c, cp, dh, dc, dg, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        q0, q1, v1 = 3 * ub, 3 * (ub + w), ub + w
        _cifg_bwd_block(a[q0:q1], c[ub:v1], cp[ub:v1], dh[ub:v1], dc[ub:v1], dg[q0:q1], w)
        ub += w


@njit(**JIT_EXACT)
def _layernorm_bwd(x, u, a, c, cp, ch, st, dh, dc, dgx, dgh, e, acc, H):
    """Natural layout only. x, u: normalised W x_t, U h_{t-1}; a: scratch for the activations,
    recomputed here; ch: normalised c_t.

    dgx, dgh <- gradients w.r.t. W x_t and U h_{t-1}; acc rows: [0] d bias (= d ln_bias_ih =
    d ln_bias_hh), [1] d ln_weight_ih, [2] d ln_weight_hh, [3][:H] d ln_weight_c, [3][H:2H] d ln_bias_c.
    dgx and dgh serve as scratch before their final values. One array written per loop (see
    _sigmoid_range).
    """
    GH = 4 * H
    one = cast_like(1.0, a)
    _layernorm_gates(x, u, a, e, H)
    rx, rh, rc = st[0], st[1], st[3]
    # slices, not offsets into one array: see _layernorm_fwd
    gx, gu = e[:GH], e[2 * GH:3 * GH]
    gc, bc = e[5 * GH:5 * GH + H], e[5 * GH + H:5 * GH + 2 * H]
    a_i, a_f, a_g, a_o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:GH]
    acc_b, acc_gx, acc_gu = acc[0], acc[1], acc[2]
    acc_gc, acc_bc = acc[3, :H], acc[3, H:2 * H]
    # scratch in dgx (its final values come last): tanh(LN(c)), then d/d(gain*z + bias), then
    # d/d(normalised c), then dL/dc_t
    t_c, dz, dzh, d = dgx[:H], dgx[H:2 * H], dgx[2 * H:3 * H], dgx[3 * H:GH]
    # through h_t = o * tanh(LN(c_t)): first the layer norm of c_t, a reduction over H
    for j in range(H):
        t_c[j] = tanh(gc[j] * ch[j] + bc[j])
    for j in range(H):
        dz[j] = dh[j] * a_o[j] * (one - t_c[j] * t_c[j])
    _add_range(acc_bc, dz, 0, H)
    for j in range(H):
        acc_gc[j] += dz[j] * ch[j]
    for j in range(H):
        dzh[j] = dz[j] * gc[j]
    s1 = cast_like(0.0, a)
    s2 = cast_like(0.0, a)
    for j in range(H):
        s1 += dzh[j]
        s2 += dzh[j] * ch[j]
    m1 = cast_like(s1 / H, a)
    m2 = cast_like(s2 / H, a)
    for j in range(H):
        d[j] = dc[j] + rc * (dzh[j] - m1 - ch[j] * m2)
    d_i, d_f, d_g, d_o = dgh[:H], dgh[H:2 * H], dgh[2 * H:3 * H], dgh[3 * H:GH]
    for j in range(H):
        d_i[j] = d[j] * a_g[j] * a_i[j] * (one - a_i[j])
    for j in range(H):
        d_f[j] = d[j] * cp[j] * a_f[j] * (one - a_f[j])
    for j in range(H):
        d_g[j] = d[j] * a_i[j] * (one - a_g[j] * a_g[j])
    for j in range(H):
        d_o[j] = dh[j] * t_c[j] * a_o[j] * (one - a_o[j])
    for j in range(H):
        dc[j] = d[j] * a_f[j]
    # dA = dgh; back through both gate layer norms (reductions over 4H)
    _add_range(acc_b, dgh, 0, GH)
    for q in range(GH):
        acc_gx[q] += dgh[q] * x[q]
    for q in range(GH):
        acc_gu[q] += dgh[q] * u[q]
    sx1 = cast_like(0.0, a)
    sx2 = cast_like(0.0, a)
    sh1 = cast_like(0.0, a)
    sh2 = cast_like(0.0, a)
    for q in range(GH):
        vx = dgh[q] * gx[q]
        vh = dgh[q] * gu[q]
        sx1 += vx
        sx2 += vx * x[q]
        sh1 += vh
        sh2 += vh * u[q]
    mx1 = cast_like(sx1 / GH, a)
    mx2 = cast_like(sx2 / GH, a)
    mh1 = cast_like(sh1 / GH, a)
    mh2 = cast_like(sh2 / GH, a)
    for q in range(GH):
        dgx[q] = rx * (dgh[q] * gx[q] - mx1 - x[q] * mx2)
    for q in range(GH):
        dgh[q] = rh * (dgh[q] * gu[q] - mh1 - u[q] * mh2)


@njit(**JIT_EXACT)
def _gru_bwd_block(a, u, hp, dh, dgx, dgh, w):
    """a: r, z, n; u: its n part holds U_n h_{t-1} + b_hn; hp: h_{t-1}; dh: dL/dh_t -> its direct part z*dh."""
    one = cast_like(1.0, a)
    for j in range(w):
        r = a[j]
        z = a[w + j]
        n = a[2 * w + j]
        dhj = dh[j]
        dn = dhj * (one - z) * (one - n * n)
        dr = dn * u[2 * w + j] * r * (one - r)
        dz = dhj * (hp[j] - n) * z * (one - z)
        dgx[j] = dr
        dgx[w + j] = dz
        dgx[2 * w + j] = dn
        dgh[j] = dr
        dgh[w + j] = dz
        dgh[2 * w + j] = dn * r
        dh[j] = dhj * z


@njit(**JIT)
def _gru_bwd(a, u, hp, dh, dgx, dgh, u0, u1, H, W):
    ub = u0
    while ub < u1:
        w = min(W, u1 - ub)
        q0, q1, v1 = 3 * ub, 3 * (ub + w), ub + w
        _gru_bwd_block(a[q0:q1], u[q0:q1], hp[ub:v1], dh[ub:v1], dgx[q0:q1], dgh[q0:q1], w)
        ub += w


@njit(**JIT_EXACT)
def _rnn_bwd(h, dh, dg, relu, u0, u1):
    one = cast_like(1.0, h)
    zero = cast_like(0.0, h)
    h, dh, dg = h[u0:u1], dh[u0:u1], dg[u0:u1]  # slices from 0: see _add_range
    if relu:  # as torch's threshold_backward: 0 where h <= 0 (dh - dh was NaN at dh = inf), dh at h = NaN
        for j in range(h.shape[0]):
            dg[j] = zero if h[j] <= 0 else dh[j]
    else:
        for j in range(h.shape[0]):
            dg[j] = dh[j] * (one - h[j] * h[j])


# The range helpers loop over slices from 0: a loop over range(lo, hi) indexing the arrays
# themselves stays scalar where LLVM cannot prove lo non-negative (numba's negative-index
# wraparound blocks vectorisation): 0.50 ns an element against 0.07 through slices. They run per
# row and step; inlined with a literal lo = 0 (the row split) the old form vectorised too, so the
# gain is in the unit split (B=1 and B=3 backward kernels 4-8% faster).

@njit(**JIT)
def _add_range(acc, v, lo, hi):
    """acc[lo:hi] += v[lo:hi]."""
    a, b = acc[lo:hi], v[lo:hi]
    for q in range(a.shape[0]):
        a[q] += b[q]


@njit(**JIT)
def _copy_range(dst, src, lo, hi):
    """dst[lo:hi] = src[lo:hi]."""
    a, b = dst[lo:hi], src[lo:hi]
    for q in range(a.shape[0]):
        a[q] = b[q]


@njit(**JIT)
def _zero_range(dst, lo, hi):
    a = dst[lo:hi]
    for q in range(a.shape[0]):
        a[q] = 0


# Recurrent products for a few rows (at most SMALL_ROWS running): plain loops beat BLAS there.
# One row at B=1 is a matrix-vector product bound by reading the weights; MKL's sgemv/sgemm take
# ~2.5x longer than these loops for a 512x256 slice held in L2 (13 vs 5 us, measured).

SMALL_ROWS = 4
# `rows`: the row of whh behind each gate column, when whh is in the natural layout and the gate
# columns in the blocked one (the unit split, which then needs no permuted copy of W_hh); an
# empty array when they match.


@njit(**JIT)
def _wrow(whh, rows, c):
    """The row of W_hh behind gate column c (see `rows` above)."""
    return whh[rows[c]] if rows.shape[0] > 0 else whh[c]


@njit(**JIT)
def _small_gates(whh, rows, c0, m, P, h, b, out, beta):
    """out[r, c0 + c] = beta * out[r, c0 + c] + W_hh[c0 + c] . h[r], for c < m, r < b (rows 0..b-1).

    Eight rows of W_hh per pass: eight independent sums hide the FMA latency and keep eight
    streams in flight from L2. Against one row per pass, the T=100, H=256 forward kernel (2
    threads) went 1.27 -> 0.96 ms at B=1 and 3.05 -> 1.93 ms at B=3 (medians of six A/B pairs)."""
    n8 = m // 8
    for q in range(n8):
        c = c0 + 8 * q
        w0, w1, w2, w3 = _wrow(whh, rows, c), _wrow(whh, rows, c + 1), _wrow(whh, rows, c + 2), _wrow(whh, rows, c + 3)
        w4, w5, w6, w7 = _wrow(whh, rows, c + 4), _wrow(whh, rows, c + 5), _wrow(whh, rows, c + 6), _wrow(whh, rows, c + 7)
        for r in range(b):
            hr = h[r]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = cast_like(0.0, w0)
            for j in range(P):
                hj = hr[j]
                s0 += w0[j] * hj
                s1 += w1[j] * hj
                s2 += w2[j] * hj
                s3 += w3[j] * hj
                s4 += w4[j] * hj
                s5 += w5[j] * hj
                s6 += w6[j] * hj
                s7 += w7[j] * hj
            o = out[r]
            if beta != 0:
                s0 += beta * o[c]
                s1 += beta * o[c + 1]
                s2 += beta * o[c + 2]
                s3 += beta * o[c + 3]
                s4 += beta * o[c + 4]
                s5 += beta * o[c + 5]
                s6 += beta * o[c + 6]
                s7 += beta * o[c + 7]
            o[c], o[c + 1], o[c + 2], o[c + 3], o[c + 4], o[c + 5], o[c + 6], o[c + 7] = s0, s1, s2, s3, s4, s5, s6, s7
    for c in range(c0 + 8 * n8, c0 + m):
        w = _wrow(whh, rows, c)
        for r in range(b):
            hr = h[r]
            s = cast_like(0.0, w)
            for j in range(P):
                s += w[j] * hr[j]
            out[r, c] = s + beta * out[r, c] if beta != 0 else s


@njit(**JIT)
def _small_dh(whh, rows, c0, m, P, dg, b, out):
    """out[r, :P] = sum_c dg[r, c0 + c] * W_hh[c0 + c, :P], for r < b (rows 0..b-1).

    Four rows of W_hh per pass over out: a quarter of its loads and stores, 1.4-1.6x faster."""
    for r in range(b):
        _zero_range(out[r], 0, P)
    c = c0
    while c < c0 + m:
        if c + 4 <= c0 + m:
            w0, w1, w2, w3 = _wrow(whh, rows, c), _wrow(whh, rows, c + 1), _wrow(whh, rows, c + 2), _wrow(whh, rows, c + 3)
            for r in range(b):
                g0, g1, g2, g3 = dg[r, c], dg[r, c + 1], dg[r, c + 2], dg[r, c + 3]
                o = out[r]
                for j in range(P):
                    o[j] += g0 * w0[j] + g1 * w1[j] + g2 * w2[j] + g3 * w3[j]
            c += 4
        else:
            w = _wrow(whh, rows, c)
            for r in range(b):
                g = dg[r, c]
                o = out[r]
                for j in range(P):
                    o[j] += g * w[j]
            c += 1


# The drivers call these two with the cell code as a compile-time literal; the overloads pick the
# cell's pointwise pass while typing, so each compiled driver holds one cell's code only.
# (numba's branch pruning does not fold `if cell == ...` on literal integers.)

def _forward_row(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
    raise NotImplementedError


def _backward_row(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                  ext, ak, u0, u1, H, W):
    raise NotImplementedError


def _literal(v):
    """The value of a literal type, or None (numba then retries the overload with literals)."""
    return v.literal_value if isinstance(v, types.Literal) else None


@overload(_forward_row)
def _ov_forward_row(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
    code, unit_split = _literal(cell), _literal(units)
    if code is None or unit_split is None:
        return None
    if code == LSTM:
        def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
            _lstm_fwd(gates[t, r], cst[r], h, cs[ts, r], u0, u1, H, W)
    elif code == PEEPHOLE:
        def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
            _peephole_fwd(gates[t, r], cst[r], h, cs[ts, r], ext, u0, u1, H, W)
    elif code == CIFG:
        def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
            _cifg_fwd(gates[t, r], cst[r], h, cs[ts, r], u0, u1, H, W)
    elif code == LAYERNORM:
        if unit_split:  # never used: layer norm reduces over all units of a row
            def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
                pass
        else:
            def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
                _layernorm_fwd(gates[t, r], uh[ts, r], acts[0, r], cst[r], h, cs[ts, r], chat[ts, r],
                               stats[ts, r], ext, H)
    elif code == GRU:
        def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
            _gru_fwd(gates[t, r], uh[ts, r], hp, h, ext, u0, u1, H, W)
    else:
        relu = code == RNN_RELU

        def impl(cell, units, t, ts, r, gates, cst, hp, h, cs, uh, acts, chat, stats, ext, u0, u1, H, W):
            _rnn_fwd(gates[t, r], h, relu, u0, u1)
    return impl


@overload(_backward_row)
def _ov_backward_row(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                     ext, ak, u0, u1, H, W):
    code, unit_split = _literal(cell), _literal(units)
    if code is None or unit_split is None:
        return None
    G = NUM_GATES[code]
    if code == LSTM:
        def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                 ext, ak, u0, u1, H, W):
            _lstm_bwd(gates[t, r], cs[t, r], cs[tp, r] if saved else c0[r], d, dc[r], dg[t, r], u0, u1, H, W)
            _add_range(ak[0], dg[t, r], G * u0, G * u1)
    elif code == PEEPHOLE:
        def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                 ext, ak, u0, u1, H, W):
            _peephole_bwd(gates[t, r], cs[t, r], cs[tp, r] if saved else c0[r], d, dc[r], dg[t, r], ext, ak[1],
                          u0, u1, H, W)
            _add_range(ak[0], dg[t, r], G * u0, G * u1)
    elif code == CIFG:
        def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                 ext, ak, u0, u1, H, W):
            _cifg_bwd(gates[t, r], cs[t, r], cs[tp, r] if saved else c0[r], d, dc[r], dg[t, r], u0, u1, H, W)
            _add_range(ak[0], dg[t, r], G * u0, G * u1)
    elif code == LAYERNORM:
        if unit_split:
            def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                     ext, ak, u0, u1, H, W):
                pass
        else:
            def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                     ext, ak, u0, u1, H, W):
                _layernorm_bwd(gates[t, r], uh[t, r], acts[0, r], cs[t, r], cs[tp, r] if saved else c0[r],
                               chat[t, r], stats[t, r], d, dc[r], dg[t, r], dgh[t, r], ext, ak, H)
    elif code == GRU:
        def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                 ext, ak, u0, u1, H, W):
            _gru_bwd(gates[t, r], uh[t, r], y[tp, r] if saved else h0[r], d, dg[t, r], dgh[t, r], u0, u1, H, W)
            _add_range(ak[0], dg[t, r], G * u0, G * u1)
            _add_range(ak[1], dgh[t, r], G * u0, G * u1)
    else:
        relu = code == RNN_RELU

        def impl(cell, units, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                 ext, ak, u0, u1, H, W):
            _rnn_bwd(y[t, r], d, dg[t, r], relu, u0, u1)
            _add_range(ak[0], dg[t, r], u0, u1)
    return impl


# ----------------------------------------------------------------------------------------------
# Drivers, row split: thread k of n owns rows k, k+n, ... (every row is an independent sequence,
# so the threads never meet inside the time loop). Every cell, projections included. With few
# rows (`cols`, the layer-norm forward only), the threads also share each step's recurrent
# product by columns, so each streams only its part of W_hh, and meet twice per step.
# ----------------------------------------------------------------------------------------------


@njit(**JIT)
def _split_range(k, n, N):
    """Thread k of n's share [lo, hi) of N columns, in whole vectors of 16 (the last share takes the rest)."""
    v = (N + 15) // 16
    return min(N, (k * v // n) * 16), min(N, ((k + 1) * v // n) * 16)


@njit(**JIT)
def _input_part(brg, xs, wit, bias, has_bias, gates, cn, cb, w):
    """gates[:, :, cb:cb+w] = x W_ih^T[:, cn:cn+w] (+ bias[cn:cn+w] if has_bias) for every row x of
    xs (T, B, I): w gate columns' input part for all steps at once, from natural column cn of W_ih^T
    (panels wit)."""
    T, B, I = xs.shape
    if w <= 0:
        return
    if has_bias:
        src = bias[cn:cn + w]
        for t in range(T):
            for r in range(B):
                dst = gates[t, r, cb:cb + w]  # sliced, not offset, indices: this loop vectorises
                for j in range(w):
                    dst[j] = src[j]
    brgemm_panels(brg, T * B, w, I, eptr(xs, 0), I, wit, 0, cn, gates, cb, gates.shape[2], has_bias)


@njit(**JIT)
def forward_rows(k, n, cell, T, B, H, P, W, reverse, save, proj, gemm_fn, brg, cols, barrier_fn,
                 gates, whh, whr, hst, cst, y, cs, hf, uh, acts, chat, stats, ext, bs, wt, wrt,
                 fuse, xs, wit, bias, has_bias):
    """Thread k of n: rows k, k+n, ... through all T steps.

    gates (T, B, GH): W x_t (+ biases) in; activations out (the layer-norm cell: normalised W x_t).
    hst (B, P): h0 in, h_T out; cst (B, H): c0 in, c_T out; y (T, B, P): outputs (zeros past a
    row's length). Saved for backward (time index 0 only when save is false, as scratch):
    cs (T, B, H) c_t; hf (T, B, H) h_t before the projection; uh (T, B, GH) recurrent product
    (layer norm: normalised, GRU: [., ., U_n h + b_hn]); chat/stats: layer norm's; acts (1, B, GH):
    layer norm's scratch for one step's activations (the backward recomputes them).
    brg: oneDNN's brgemm (float32), which reads W_hh^T (P, GH) and W_hr^T (H, P) as panels wt and wrt
    (lstmkit.kernels.panels); 0: torch's BLAS on whh and whr.
    fuse (with brg): gates arrives empty and each step first forms its rows' input part,
    gates[t] = bias + x_t W_ih^T from xs (T, B, I), W_ih^T (I, GH) as panels wit and bias (GH,) (if
    has_bias): the input GEMM split by rows like the rest, on each thread's own core, while x_t's
    rows are about to be used (instead of one multi-threaded GEMM over all T*B rows first).
    Fused without save, gates is one step's scratch (1, B, GH) that stays in cache.
    cols (few rows, see _split_range): the threads also share each step's recurrent product by
    columns, and meet twice per step; fused, each thread forms its columns' input part for every
    step before the first (see forward_units).
    """
    GH = gates.shape[2]
    iw = np.empty(8, np.int32)
    fw = np.empty(2, gates.dtype)
    sep = cell == LAYERNORM or cell == GRU
    no_map = bs[:0]  # whh rows are the gate columns (natural layout): see _small_gates
    by_rows = fuse and not cols  # else the input part is formed up front, by columns
    if fuse and cols:
        c0, c1 = _split_range(k, n, GH)
        _input_part(brg, xs, wit, bias, has_bias, gates, c0, c0, c1 - c0)
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bs[t]
        nb = (b - k + n - 1) // n if b > k else 0
        ts = t if save else 0
        tg = t if save or not by_rows else 0  # gates' time index
        if by_rows and nb > 0:
            if has_bias:
                for j in range(nb):
                    _copy_range(gates[tg, k + n * j], bias, 0, GH)
            I = xs.shape[2]
            brgemm_panels(brg, nb, GH, I, eptr(xs, (t * B + k) * I), n * I, wit, 0, 0,
                          gates, (tg * B + k) * GH, n * GH, has_bias)
        if cols:
            c0, c1 = _split_range(k, n, GH)
            _small_gates(whh, no_map, c0, c1 - c0, P, hst, b, uh[ts] if sep else gates[tg], 0.0 if sep else 1.0)
            call_void_void(barrier_fn)  # every column of every running row is in place
        elif 0 < nb <= SMALL_ROWS and n == 1:
            _small_gates(whh, no_map, 0, GH, P, hst, nb, uh[ts] if sep else gates[tg], 0.0 if sep else 1.0)
        elif brg != 0:
            dst, off = (uh, (ts * B + k) * GH) if sep else (gates, (tg * B + k) * GH)
            brgemm_panels(brg, nb, GH, P, eptr(hst, k * P), n * P, wt, 0, 0, dst, off, n * GH, not sep)
        elif nb > 0:
            if sep:
                gemm(gemm_fn, iw, fw, _T, _N, GH, nb, P, 1.0, eptr(whh, 0), P, eptr(hst, k * P), n * P,
                     0.0, eptr(uh, (ts * B + k) * GH), n * GH)
            else:
                gemm(gemm_fn, iw, fw, _T, _N, GH, nb, P, 1.0, eptr(whh, 0), P, eptr(hst, k * P), n * P,
                     1.0, eptr(gates, (tg * B + k) * GH), n * GH)
        for j in range(nb):
            r = k + n * j
            h = hf[ts, r] if proj else hst[r]
            _forward_row(cell, False, tg, ts, r, gates, cst, h, h, cs, uh, acts, chat, stats, ext, 0, H, H, W)
            if not proj:
                _copy_range(y[t, r], h, 0, P)
        if proj and nb > 0:
            if brg != 0:
                brgemm_panels(brg, nb, P, H, eptr(hf, (ts * B + k) * H), n * H, wrt, 0, 0, hst, k * P, n * P, False)
            else:
                gemm(gemm_fn, iw, fw, _T, _N, P, nb, H, 1.0, eptr(whr, 0), H, eptr(hf, (ts * B + k) * H), n * H,
                     0.0, eptr(hst, k * P), n * P)
            for j in range(nb):
                r = k + n * j
                _copy_range(y[t, r], hst[r], 0, P)
        r = b + (k - b) % n
        while r < B:
            _zero_range(y[t, r], 0, P)
            r += n
        if cols:
            call_void_void(barrier_fn)  # every running row's h_t is in place for the next product


@njit(**JIT)
def backward_rows(k, n, cell, T, B, H, P, W, reverse, proj, gemm_fn, brg,
                  gates, cs, c0, h0, y, hf, uh, acts, chat, stats, whh, whr,
                  dy, dh, dc, dg, dgh, dhp, dhf, acc, ext, bs, whp, whrp, fuse_dx, dx, wih):
    """Thread k of n: BPTT for rows k, k+n, ..., from the last step the forward ran back to the first.

    dh (B, P), dc (B, H): gradients w.r.t. the final state in, w.r.t. the initial state out.
    dg (T, B, GH): gradients w.r.t. the input-side gate pre-activations (what dW_ih, dX need);
    dgh: the recurrent side's where it differs (layer norm, GRU), else dg itself.
    dhp (T, B, P): dL/dh_t before the projection's transpose (for dW_hr); dhf (B, H): scratch.
    acc (n, 4, GH): this thread's sums for the bias and per-unit parameter gradients.
    brg: oneDNN's brgemm (float32) on W_hh and W_hr as panels whp and whrp; 0: torch's BLAS.
    fuse_dx (with brg, a narrow input): each step also forms its rows' input gradient,
    dx[t] = dg[t] W_ih, from wih (GH, I) read as it is (one panel): while dg[t] is in cache, instead
    of one narrow GEMM over all T*B rows afterwards.
    Rows past their length get zero gradients.
    """
    GH = gates.shape[2]
    iw = np.empty(8, np.int32)
    fw = np.empty(2, gates.dtype)
    sep = cell == LAYERNORM or cell == GRU
    ak = acc[k]
    no_map = bs[:0]  # see forward_rows
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1  # the step the forward ran just before t
        bp = bs[tp] if 0 <= tp < T else 0
        b = bs[t]
        nb = (b - k + n - 1) // n if b > k else 0
        for j in range(nb):
            r = k + n * j
            _add_range(dh[r], dy[t, r], 0, P)
        if proj and nb > 0:
            for j in range(nb):
                r = k + n * j
                _copy_range(dhp[t, r], dh[r], 0, P)
            if brg != 0:
                brgemm_panels(brg, nb, H, P, eptr(dh, k * P), n * P, whrp, 0, 0, dhf, k * H, n * H, False)
            else:
                gemm(gemm_fn, iw, fw, _N, _N, H, nb, P, 1.0, eptr(whr, 0), H, eptr(dh, k * P), n * P,
                     0.0, eptr(dhf, k * H), n * H)
        for j in range(nb):
            r = k + n * j
            d = dhf[r] if proj else dh[r]
            saved = r < bp  # the row ran at step tp: its previous state is saved there
            _backward_row(cell, False, t, tp, saved, r, gates, cs, c0, h0, y, uh, acts, chat, stats, d, dc, dg, dgh,
                          ext, ak, 0, H, H, W)
        if 0 < nb <= SMALL_ROWS and n == 1 and cell != GRU:
            _small_dh(whh, no_map, 0, GH, P, dgh[t], nb, dh)
        elif brg != 0:
            brgemm_panels(brg, nb, P, GH, eptr(dgh, (t * B + k) * GH), n * GH, whp, 0, 0, dh, k * P, n * P,
                          cell == GRU)
        elif nb > 0:
            gemm(gemm_fn, iw, fw, _N, _N, P, nb, GH, 1.0, eptr(whh, 0), P, eptr(dgh, (t * B + k) * GH), n * GH,
                 1.0 if cell == GRU else 0.0, eptr(dh, k * P), n * P)
        if fuse_dx:
            I = dx.shape[2]
            brgemm(brg, nb, I, GH, eptr(dg, (t * B + k) * GH), n * GH, eptr(wih, 0), I, eptr(dx, (t * B + k) * I),
                   n * I, False)
        r = b + (k - b) % n
        while r < B:
            if fuse_dx:
                _zero_range(dx[t, r], 0, dx.shape[2])
            _zero_range(dg[t, r], 0, GH)
            if sep:
                _zero_range(dgh[t, r], 0, GH)
            if proj:
                _zero_range(dhp[t, r], 0, P)
            r += n


@njit(**JIT)
def backward_cols(k, n, T, B, H, P, reverse, barrier_fn, gates, cs, c0, uh, acts, chat, stats, whh,
                  dy, dh, dc, dg, dgh, part, acc, ext, bs):
    """Layer norm, few rows (at most SMALL_ROWS), no projection; thread k of n: BPTT for every row,
    with the recurrent product dh = dG_hh W_hh shared by gate columns (thread k: its share of
    W_hh's rows, which stays in its core's cache), one meeting per step.

    The pointwise pass reduces over every unit of a row, so no split of units can share it: every
    thread runs it on every row, and none waits for another's. Every thread carries its own copy
    of dh and dc (thread 0 writes its copies back at the end, when the others have long read the
    originals); thread 0 writes dg, dgh and acc[0], the others throw theirs away.
    part (2 * n, B, P): each thread's partial products, double-buffered (step s uses half s % 2),
    so that a thread may write a step's partial while another still sums the step before's.
    Against the row split, which leaves one thread on one row streaming all of W_hh per step:
    the backward kernel at (T, B, H) = (100, 1, 256), 2 threads, 2.25-2.41 -> 1.25 ms (the standard
    cell's unit split: 1.02-1.17).
    """
    GH = gates.shape[2]
    c_lo, c_hi = _split_range(k, n, GH)
    no_map = bs[:0]  # whh in the natural layout: see _small_gates
    dhk, dck = dh.copy(), dc.copy()
    if k == 0:
        dgk, dghk, ak, acts_k = dg, dgh, acc[0], acts[0]
    else:
        dgk, dghk = np.empty((1, B, GH), dg.dtype), np.empty((1, B, GH), dg.dtype)
        ak, acts_k = np.zeros((4, GH), acc.dtype), np.empty((B, GH), acts.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1  # the step the forward ran just before t
        bp = bs[tp] if 0 <= tp < T else 0
        b = bs[t]
        tk = t if k == 0 else 0  # time index into this thread's dg, dgh
        for r in range(b):
            _add_range(dhk[r], dy[t, r], 0, P)
            _layernorm_bwd(gates[t, r], uh[t, r], acts_k[r], cs[t, r], cs[tp, r] if r < bp else c0[r],
                           chat[t, r], stats[t, r], dhk[r], dck[r], dgk[tk, r], dghk[tk, r], ext, ak, H)
        if k == 0:
            for r in range(b, B):
                _zero_range(dg[t, r], 0, GH)
                _zero_range(dgh[t, r], 0, GH)
        base = (s % 2) * n
        _small_dh(whh, no_map, c_lo, c_hi - c_lo, P, dghk[tk], b, part[base + k])
        call_void_void(barrier_fn)
        for r in range(b):  # dL/dh_{t-1}: every thread's partial
            row = dhk[r]
            _zero_range(row, 0, P)
            for kk in range(n):
                _add_range(row, part[base + kk, r], 0, P)
    if k == 0:
        dh[:] = dhk
        dc[:] = dck


# ----------------------------------------------------------------------------------------------
# Drivers, unit split (the persistent-RNN idea): thread k of n owns a run of whole unit blocks,
# i.e. one contiguous range of gate columns in the blocked layout, for all rows. Its slice of
# W_hh stays in its core's cache across the steps; the threads meet once per step (a barrier
# of torch's OpenMP team). Cells whose pointwise pass is local to a unit; no projection.
# The shared state is double-buffered so one barrier per step suffices: in the forward, step s
# reads h from hb[s % 2] and writes hb[(s + 1) % 2]; in the backward, step s writes its
# partial products dG[:, own columns] @ W_hh[own columns] into part[s % 2, k] and, after the
# barrier, each thread sums its own units' columns over all threads' partials.
# ----------------------------------------------------------------------------------------------


@njit(**JIT)
def _unit_range(k, n, H, W):
    blocks = (H + W - 1) // W
    return min(H, (k * blocks // n) * W), min(H, ((k + 1) * blocks // n) * W)


@njit(**JIT)
def forward_units(k, n, cell, T, B, H, P, W, reverse, save, gemm_fn, barrier_fn, brg,
                  gates, whh, hb, cst, y, cs, uh, ext, bs, wt, rows, fuse, xs, wit, bias, has_bias):
    """Thread k of n: units [u0, u1) of every row. hb (2, B, H): h0 in hb[0]; h_T ends in hb[T % 2].

    brg: oneDNN's brgemm (float32) on the thread's columns of W_hh^T (P, GH), as panels wt; 0: torch's BLAS.
    rows: see _small_gates (only where every step has at most SMALL_ROWS rows).
    fuse (with brg): gates (T, B, GH) arrives empty and each thread first forms the input part of
    its own gate columns for every step, as forward_rows's fuse describes; no other thread reads
    them, so no meeting. At B=1 this replaces a separate GEMM, the gather of W_ih's rows into the
    blocked layout and their launches (~0.1 ms of a T=100, H=256 forward; most of a T=1 call).
    """
    GH = gates.shape[2]
    G = GH // H
    iw = np.empty(8, np.int32)
    fw = np.empty(2, gates.dtype)
    u0, u1 = _unit_range(k, n, H, W)
    col0, m = G * u0, G * (u1 - u0)
    sep = cell == GRU
    if fuse:  # blocked column G*ub + g*w + j is natural column g*H + ub + j
        for ub in range(u0, u1, W):
            w = min(W, H - ub)
            for g in range(G):
                _input_part(brg, xs, wit, bias, has_bias, gates, g * H + ub, G * ub + g * w, w)
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bs[t]
        ts = t if save else 0
        cur = hb[s % 2]
        nxt = hb[(s + 1) % 2]
        if 0 < b <= SMALL_ROWS:
            _small_gates(whh, rows, col0, m, P, cur, b, uh[ts] if sep else gates[t], 0.0 if sep else 1.0)
        elif brg != 0:
            dst, off = (uh, ts * B * GH + col0) if sep else (gates, t * B * GH + col0)
            brgemm_panels(brg, b, m, P, eptr(cur, 0), P, wt, 0, col0, dst, off, GH, not sep)
        elif m > 0 and b > 0:
            if sep:
                gemm(gemm_fn, iw, fw, _T, _N, m, b, P, 1.0, eptr(whh, col0 * P), P, eptr(cur, 0), P,
                     0.0, eptr(uh, ts * B * GH + col0), GH)
            else:
                gemm(gemm_fn, iw, fw, _T, _N, m, b, P, 1.0, eptr(whh, col0 * P), P, eptr(cur, 0), P,
                     1.0, eptr(gates, t * B * GH + col0), GH)
        for r in range(b):
            _forward_row(cell, True, t, ts, r, gates, cst, cur[r], nxt[r], cs, uh, cs, cs, cs, ext, u0, u1, H, W)
            _copy_range(y[t, r], nxt[r], u0, u1)
        for r in range(b, B):  # rows not running at this step keep their state
            _copy_range(nxt[r], cur[r], u0, u1)
            _zero_range(y[t, r], u0, u1)
        call_void_void(barrier_fn)


@njit(**JIT)
def backward_units(k, n, cell, T, B, H, P, W, reverse, gemm_fn, barrier_fn, brg,
                   gates, cs, c0, h0, y, uh, whh, dy, dh, dc, dg, dgh, part, acc, ext, bs, rows, whp):
    """Thread k of n: BPTT for units [u0, u1) of every row; dh (B, H), dc: final-state gradients in,
    initial-state gradients out; part (2 * nmax, B, H): the partial recurrent products, nmax >= n;
    rows: see _small_gates; whp: W_hh as panels, for brgemm."""
    GH = gates.shape[2]
    G = GH // H
    iw = np.empty(8, np.int32)
    fw = np.empty(2, gates.dtype)
    u0, u1 = _unit_range(k, n, H, W)
    col0, m = G * u0, G * (u1 - u0)
    sep = cell == GRU
    ak = acc[k]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        bp = bs[tp] if 0 <= tp < T else 0
        b = bs[t]
        for r in range(b):
            _add_range(dh[r], dy[t, r], u0, u1)
            _backward_row(cell, True, t, tp, r < bp, r, gates, cs, c0, h0, y, uh, gates, gates, gates, dh[r], dc,
                          dg, dgh, ext, ak, u0, u1, H, W)
        for r in range(b, B):
            _zero_range(dg[t, r], col0, col0 + m)
            if sep:
                _zero_range(dgh[t, r], col0, col0 + m)
        base = (s % 2) * (part.shape[0] // 2)
        pk = part[base + k]
        if 0 < b <= SMALL_ROWS:
            _small_dh(whh, rows, col0, m, P, dgh[t], b, pk)
        elif b > 0:
            if brg != 0 and m > 0:
                brgemm_panels(brg, b, P, m, eptr(dgh, t * B * GH + col0), GH, whp, col0, 0, pk, 0, P, False)
            elif m > 0:
                gemm(gemm_fn, iw, fw, _N, _N, P, b, m, 1.0, eptr(whh, col0 * P), P, eptr(dgh, t * B * GH + col0), GH,
                     0.0, eptr(pk, 0), P)
            else:
                for r in range(b):
                    _zero_range(pk[r], 0, P)
        call_void_void(barrier_fn)
        for r in range(b):  # dL/dh_{t-1} of own units: the direct part (GRU) plus every thread's partial
            row = dh[r]
            if not sep:
                _zero_range(row, u0, u1)
            for kk in range(n):
                _add_range(row, part[base + kk, r], u0, u1)


# ----------------------------------------------------------------------------------------------
# Table thunks and the C-ABI bodies
# ----------------------------------------------------------------------------------------------
# Header ints: [7] cell, [8] T, [9] B, [10] H, [11] P, [12] reverse, [13] save, [14] projection,
# [15] W (block width of the gate layout), [16] split: 0 rows, 1 units, 2 rows sharing the
# recurrent product by columns (layer norm, few rows); forward: [17] with brgemm, the kernel
# forms the input part of the gates itself (the row split per step, the others up front), [18] with a
# bias; backward: [17] the row split forms a narrow input's dX per step (backward_rows's fuse_dx).


@njit(**JIT)
def forward_rows_thunk(k, n, tab, z, cell):
    """Unpack a forward table; `cell` arrives as a compile-time constant (one specialisation each)."""
    T, B, H, P, W = tab[8], tab[9], tab[10], tab[11], tab[15]
    reverse, save, proj = tab[12] != 0, tab[13] != 0, tab[14] != 0
    i = np.int64(0)  # non-literal slot numbers: one compiled arrN each
    forward_rows(k, n, cell, T, B, H, P, W, reverse, save, proj, tab[4], tab[6], tab[16] == 2, tab[5],
                 arr3(tab, i + 0, z), arr2(tab, i + 1, z), arr2(tab, i + 2, z), arr2(tab, i + 3, z),
                 arr2(tab, i + 4, z), arr3(tab, i + 5, z), arr3(tab, i + 6, z), arr3(tab, i + 7, z),
                 arr3(tab, i + 8, z), arr3(tab, i + 9, z), arr3(tab, i + 10, z), arr3(tab, i + 11, z),
                 arr1(tab, i + 12, z), arr1(tab, i + 13, i), arr3(tab, i + 14, z), arr3(tab, i + 15, z),
                 tab[17] != 0, arr3(tab, i + 16, z), arr3(tab, i + 17, z), arr1(tab, i + 18, z), tab[18] != 0)


@njit(**JIT)
def forward_units_thunk(k, n, tab, z, cell):
    T, B, H, P, W = tab[8], tab[9], tab[10], tab[11], tab[15]
    reverse, save = tab[12] != 0, tab[13] != 0
    i = np.int64(0)
    forward_units(k, n, cell, T, B, H, P, W, reverse, save, tab[4], tab[5], tab[6],
                  arr3(tab, i + 0, z), arr2(tab, i + 1, z), arr3(tab, i + 3, z), arr2(tab, i + 4, z),
                  arr3(tab, i + 5, z), arr3(tab, i + 6, z), arr3(tab, i + 8, z), arr1(tab, i + 12, z),
                  arr1(tab, i + 13, i), arr3(tab, i + 14, z), arr1(tab, i + 19, i),
                  tab[17] != 0, arr3(tab, i + 16, z), arr3(tab, i + 17, z), arr1(tab, i + 18, z), tab[18] != 0)


@njit(**JIT)
def backward_rows_thunk(k, n, tab, z, cell):
    T, B, H, P, W = tab[8], tab[9], tab[10], tab[11], tab[15]
    reverse, proj = tab[12] != 0, tab[14] != 0
    i = np.int64(0)
    backward_rows(k, n, cell, T, B, H, P, W, reverse, proj, tab[4], tab[6],
                  arr3(tab, i + 0, z), arr3(tab, i + 1, z), arr2(tab, i + 2, z), arr2(tab, i + 3, z),
                  arr3(tab, i + 4, z), arr3(tab, i + 5, z), arr3(tab, i + 6, z), arr3(tab, i + 7, z),
                  arr3(tab, i + 8, z), arr3(tab, i + 9, z), arr2(tab, i + 10, z), arr2(tab, i + 11, z),
                  arr3(tab, i + 12, z), arr2(tab, i + 13, z), arr2(tab, i + 14, z),
                  arr3(tab, i + 15, z), arr3(tab, i + 16, z), arr3(tab, i + 17, z),
                  arr2(tab, i + 18, z), arr3(tab, i + 19, z), arr1(tab, i + 20, z), arr1(tab, i + 21, i),
                  arr3(tab, i + 23, z), arr3(tab, i + 24, z), tab[17] != 0, arr3(tab, i + 25, z), arr2(tab, i + 26, z))


@njit(**JIT)
def backward_cols_thunk(k, n, tab, z, cell):
    T, B, H, P = tab[8], tab[9], tab[10], tab[11]
    reverse = tab[12] != 0
    i = np.int64(0)
    backward_cols(k, n, T, B, H, P, reverse, tab[5],
                  arr3(tab, i + 0, z), arr3(tab, i + 1, z), arr2(tab, i + 2, z), arr3(tab, i + 6, z),
                  arr3(tab, i + 7, z), arr3(tab, i + 8, z), arr3(tab, i + 9, z), arr2(tab, i + 10, z),
                  arr3(tab, i + 12, z), arr2(tab, i + 13, z), arr2(tab, i + 14, z), arr3(tab, i + 15, z),
                  arr3(tab, i + 16, z), arr3(tab, i + 17, z), arr3(tab, i + 19, z), arr1(tab, i + 20, z),
                  arr1(tab, i + 21, i))


@njit(**JIT)
def backward_units_thunk(k, n, tab, z, cell):
    T, B, H, P, W = tab[8], tab[9], tab[10], tab[11], tab[15]
    reverse = tab[12] != 0
    i = np.int64(0)
    backward_units(k, n, cell, T, B, H, P, W, reverse, tab[4], tab[5], tab[6],
                   arr3(tab, i + 0, z), arr3(tab, i + 1, z), arr2(tab, i + 2, z), arr2(tab, i + 3, z),
                   arr3(tab, i + 4, z), arr3(tab, i + 6, z), arr2(tab, i + 10, z), arr3(tab, i + 12, z),
                   arr2(tab, i + 13, z), arr2(tab, i + 14, z), arr3(tab, i + 15, z),
                   arr3(tab, i + 16, z), arr3(tab, i + 17, z), arr3(tab, i + 19, z),
                   arr1(tab, i + 20, z), arr1(tab, i + 21, i), arr1(tab, i + 22, i), arr3(tab, i + 23, z))


# The C-ABI bodies: void body(void *table), run by every thread of a GOMP_parallel team (or called
# directly, as a team of one). Each gets its thread id and team size, puts the BLAS on one thread
# inside a team (MKL would otherwise see a fresh thread and start a team of its own), and runs
# its thunk. One body per (direction, split, cell, dtype), made by a closure over plain constants:
# numba's cache key hashes a closure's constants, and the literal codes keep every other thunk and
# cell out of the compiled code. (A closure over a jitted function would not cache: its pickle
# differs between processes; hence the thunk is picked by the overload below, from a literal.)

# (direction, split: 0 rows, 1 units, 2 rows sharing the product by columns) -> thunk
_THUNKS = {("forward", 0): 0, ("forward", 1): 1, ("forward", 2): 0,
           ("backward", 0): 2, ("backward", 1): 3, ("backward", 2): 4}


def _thunk(kind, k, n, tab, z, cell):
    raise NotImplementedError


@overload(_thunk)
def _ov_thunk(kind, k, n, tab, z, cell):
    which = _literal(kind)
    if which is None:
        return None
    thunk = (forward_rows_thunk, forward_units_thunk, backward_rows_thunk, backward_units_thunk,
             backward_cols_thunk)[which]

    def impl(kind, k, n, tab, z, cell):
        thunk(k, n, tab, z, cell)
    return impl


def make_body(direction: str, split: int, cell: int, z):
    """The Python function of a body, for numba.cfunc("void(voidptr)", cache=True)."""
    kind = _THUNKS[direction, split]

    def body(data):
        tab = read_table(data)
        k = np.int64(call_int_void(tab[1]))  # int64, one specialisation whoever calls
        n = np.int64(call_int_void(tab[2]))
        old = mkl_local_threads(tab[3], 1) if n > 1 else 0
        _thunk(kind, k, n, tab, z, cell)
        if n > 1:
            mkl_local_threads(tab[3], old)
    return body


# ==============================================================================================
# Binary Tree-LSTM kernels (lstmkit.kernels.treelstm_numba; the equations are there)
# ==============================================================================================
# Gate pre-activations in, activations out (in place): leaf rows (B, 3H) with blocks (i, o, u),
# node rows (B, 5H) with blocks (i, f_l, f_r, o, u). States are packed: a row [h, c] (2H). Any
# dtype the activations take: float32 (the rational approximation) or float64 (exact).
# The loops read and write with unit stride and never read one array view while writing another
# view of the same memory: LLVM vectorises them only when its run-time overlap check passes, and
# otherwise runs its scalar copy of the loop, ~2-5x slower (measured: activating in place through
# two views of one row took 2.7x as long as through one view, and a loop that reads out[H + j]
# while writing out[j] stays scalar).


@njit(**JIT)
def _tree_activate(s, n_sigmoid):
    """In place: sigmoid of the first n_sigmoid gates, tanh of the rest.

    Each loop runs over a slice from 0: `range(n_sigmoid, len(s))` over s itself stayed scalar
    (measured on 1,800 gates: 0.56 ns a gate that way, 0.30 through slices)."""
    a = s[:n_sigmoid]
    for k in range(a.shape[0]):
        a[k] = sigmoid(a[k])
    t = s[n_sigmoid:]
    for k in range(t.shape[0]):
        t[k] = tanh(t[k])


@njit(**JIT)
def tree_leaf_forward(S, out):
    """S (B, 3H): pre-activations in, (s(i), s(o), t(u)) out (in place); out (B, 2H) = [h, c]."""
    B, H = out.shape[0], out.shape[1] // 2
    for b in range(B):
        s, h, c = S[b], out[b, :H], out[b, H:]
        _tree_activate(s, 2 * H)
        i, o, u = s[:H], s[H:2 * H], s[2 * H:]
        for j in range(H):
            cj = i[j] * u[j]
            c[j] = cj
            h[j] = o[j] * tanh(cj)


@njit(**JIT)
def _tree_bias_grad(dG, db):
    """db += the column sums of dG (one pass over rows that are still in cache)."""
    for b in range(dG.shape[0]):
        g = dG[b]
        for k in range(g.shape[0]):
            db[k] += g[k]


@njit(inline="always", **JIT)
def _tree_shared_grads(c, dh, dc_in, i, o, u, dc, gi, go, gu):
    """What leaf and node share: dc = dc_in + dh s(o) t'(c), and the i, o, u gate gradients."""
    one = cast_like(1.0, c)
    for j in range(c.shape[0]):
        t = tanh(c[j])
        dc[j] = dc_in[j] + dh[j] * o[j] * (one - t * t)
        go[j] = dh[j] * t * o[j] * (one - o[j])
    for j in range(c.shape[0]):
        gi[j] = dc[j] * u[j] * i[j] * (one - i[j])
    for j in range(c.shape[0]):
        gu[j] = dc[j] * i[j] * (one - u[j] * u[j])


@njit(**JIT)
def tree_leaf_backward(S, out, dout, dG, db):
    """Gate gradients dG (B, 3H); their column sums into db (3H,)."""
    B, H = out.shape[0], out.shape[1] // 2
    dc = np.empty(H, dtype=out.dtype)
    for b in range(B):
        s, c, dh, dc_in, g = S[b], out[b, H:], dout[b, :H], dout[b, H:], dG[b]
        _tree_shared_grads(c, dh, dc_in, s[:H], s[H:2 * H], s[2 * H:], dc, g[:H], g[H:2 * H], g[2 * H:])
        _tree_bias_grad(dG[b:b + 1], db)


@njit(**JIT)
def tree_node_forward(S, P, out):
    """S (B, 5H): pre-activations in, (s(i), s(f_l), s(f_r), s(o), t(u)) out (in place);
    P (B, 2, 2H) = children [h, c]; out (B, 2H) = [h, c]."""
    B, H = out.shape[0], out.shape[1] // 2
    for b in range(B):
        s, h, c, cl, cr = S[b], out[b, :H], out[b, H:], P[b, 0, H:], P[b, 1, H:]
        _tree_activate(s, 4 * H)
        i, fl, fr, o, u = s[:H], s[H:2 * H], s[2 * H:3 * H], s[3 * H:4 * H], s[4 * H:]
        for j in range(H):
            cj = i[j] * u[j] + fl[j] * cl[j] + fr[j] * cr[j]
            c[j] = cj
            h[j] = o[j] * tanh(cj)


@njit(**JIT)
def tree_node_backward(S, out, P, dout, dG, dP, db):
    """Gate gradients dG (B, 5H) (their column sums into db) and the children's dc into dP[:, :, H:]."""
    B, H = out.shape[0], out.shape[1] // 2
    dc = np.empty(H, dtype=out.dtype)
    one = cast_like(1.0, out)
    for b in range(B):
        s, c, dh, dc_in, g = S[b], out[b, H:], dout[b, :H], dout[b, H:], dG[b]
        _tree_shared_grads(c, dh, dc_in, s[:H], s[3 * H:4 * H], s[4 * H:], dc, g[:H], g[3 * H:4 * H], g[4 * H:])
        for k in range(2):  # left, right child: forget gate and the child's dc
            f, gf, ck, dck = s[(k + 1) * H:(k + 2) * H], g[(k + 1) * H:(k + 2) * H], P[b, k, H:], dP[b, k, H:]
            for j in range(H):
                gf[j] = dc[j] * ck[j] * f[j] * (one - f[j])
            for j in range(H):
                dck[j] = dc[j] * f[j]
        _tree_bias_grad(dG[b:b + 1], db)
