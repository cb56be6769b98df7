"""`backend="triton"`: LSTM layers on the GPU with fused Triton pointwise kernels.

Structure of one layer (the layout the fast RNN libraries use):

forward   XW = X W_ih^T + b              one GEMM over all T*B rows (cuBLAS via torch)
          per step t:  G_t += h_{t-1} W_hh^T     (torch.addmm, in place)
                       one fused Triton kernel: activations, cell update, h_t (and the
                       packed-sequence carry of finished rows); saves the activated gates
backward  per step, in reverse: one fused Triton kernel (the cell's whole backward, d gates and
          dc_{t-1}), then dh_{t-1} = dG_t W_hh (torch.mm)
          then dX = dG W_ih, dW_ih = dG^T X, dW_hh = dG^T H_prev as single large GEMMs.

Cells: lstm, peephole, cifg, layernorm (the recurrent layer norm over 4H and the cell-state
layer norm over H are inside the per-step kernel; the input layer norm runs over all steps at
once). proj_size adds one `mm` per step. Multi-layer and bidirectional come from the module.

Performance devices, both transparent:
* CUDA graphs. The per-step loop is launch-bound at training sizes (two launches per step), so
  on CUDA the whole forward (and backward) of a layer is captured once per shape and replayed.
  The first call of a shape runs eagerly; the second captures. Set LSTMKIT_TRITON_GRAPHS=0 (or
  use `with lstm_triton.settings(graphs=False):`) to turn this off; `clear_graph_cache()` frees them.
* A persistent kernel (`lstm_triton_persistent`) for small-batch inference: one launch for the
  whole sequence with the recurrent weights held on chip (LSTMKIT_TRITON_PERSISTENT=0 or
  `settings(persistent=False)` turns it off). With CUDA graphs on, it and its input GEMM are
  replayed as a graph too (unpacked input), which takes the host work off each call.

Precision: fp32 GEMMs use TF32 exactly when cuDNN's RNN would (torch.backends.cudnn.rnn
.fp32_precision, or the legacy torch.backends.cudnn.allow_tf32), so numbers and speed are
compared like for like with torch.nn.LSTM. Under torch.autocast (bf16/fp16) the GEMMs run in
the autocast dtype with fp32 accumulation; the pointwise math, the cell state and the
activated gates saved for the backward stay fp32.

With TRITON_INTERPRET=1 (set before triton is imported) the kernels run in Triton's
interpreter on CPU tensors; DEVICES then includes "cpu" so the tests can check the kernels
without a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from collections import OrderedDict

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.errors import OutOfResources

from lstmkit.cells import CellSpec, get_cell
from lstmkit.cells.layernorm import LN_EPS, layer_norm
from lstmkit.kernels import batched, needs_reference, reference

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

CELLS = ("lstm", "peephole", "cifg", "layernorm")
DEVICES = ("cuda", "cpu") if INTERPRET else ("cuda",)

USE_CUDA_GRAPHS = os.environ.get("LSTMKIT_TRITON_GRAPHS", "1") != "0"
USE_PERSISTENT = os.environ.get("LSTMKIT_TRITON_PERSISTENT", "1") != "0"
PERSISTENT_WARPS: int | None = None  # None: lstm_triton_persistent.tuning's choice
PERSISTENT_SPLIT: int | None = None
PERSISTENT_FMA: bool | None = None

# the cell a kernel is compiled for: its CELL constexpr, compared with these names in the kernels
_PEEPHOLE, _CIFG, _LAYERNORM = tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
_CELL_ID = {"lstm": 0, "peephole": 1, "cifg": 2, "layernorm": 3}

__all__ = ["CELLS", "DEVICES", "layer", "clear_graph_cache", "rnn_allows_tf32", "settings"]


@contextlib.contextmanager
def settings(graphs: bool | None = None, persistent: bool | None = None,
             persistent_warps: int | None = None, persistent_split: int | None = None,
             persistent_fma: bool | None = None):
    """Within the block, turn CUDA graphs and/or the persistent kernel on or off, and launch the
    persistent kernel with `persistent_warps` warps, its product in `persistent_split` mma chains
    or (`persistent_fma`) as multiply-adds (see lstm_triton_persistent.tuning; None: as they are).

    For comparisons (`lstmkit bench`, benchmarks/); not thread-safe: it sets the module's flags.
    """
    global USE_CUDA_GRAPHS, USE_PERSISTENT, PERSISTENT_WARPS, PERSISTENT_SPLIT, PERSISTENT_FMA
    old = USE_CUDA_GRAPHS, USE_PERSISTENT, PERSISTENT_WARPS, PERSISTENT_SPLIT, PERSISTENT_FMA
    if graphs is not None:
        USE_CUDA_GRAPHS = bool(graphs)
    if persistent is not None:
        USE_PERSISTENT = bool(persistent)
    if persistent_warps is not None:
        PERSISTENT_WARPS = persistent_warps
    if persistent_split is not None:
        PERSISTENT_SPLIT = persistent_split
    if persistent_fma is not None:
        PERSISTENT_FMA = persistent_fma
    try:
        yield
    finally:
        USE_CUDA_GRAPHS, USE_PERSISTENT, PERSISTENT_WARPS, PERSISTENT_SPLIT, PERSISTENT_FMA = old


# --------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------

@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    """tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|) in (0, 1], so nothing overflows; for
    small |x|, where 1 - e cancels, its odd Taylor series to x^9, whose first term left out is
    below 1e-8 (fp32) and 1e-16 (fp64) of tanh(x). Within 3 ulps of tanh(x) in fp32, 4 in fp64,
    for every |x| in [1e-30, 100]; the form 2 / (1 + exp(-2x)) - 1 cancelled to an error of about
    an ulp of 1 near 0, more than tanh(x) itself below |x| ~ 6e-8 in fp32."""
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    x2 = x * x
    series = ax + ax * x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0))))
    small = 0.04 if x.dtype == tl.float64 else 0.25
    t = tl.where(ax < small, series, (1.0 - e) / (1.0 + e))
    return tl.where(x < 0, -t, t)


@triton.jit
def _ln4_centered(R, g_off, act, ok, H, eps, ACC: tl.constexpr):
    """The recurrent product's four gate blocks of each row, centred over all 4H (zero outside
    `ok`), and 1/std per row (B, 1): the layer-norm statistics forward and backward share."""
    r_i = tl.load(R + g_off, mask=act, other=0.0).to(ACC)
    r_f = tl.load(R + g_off + H, mask=act, other=0.0).to(ACC)
    r_g = tl.load(R + g_off + 2 * H, mask=act, other=0.0).to(ACC)
    r_o = tl.load(R + g_off + 3 * H, mask=act, other=0.0).to(ACC)
    mean = (tl.sum(r_i, 1) + tl.sum(r_f, 1) + tl.sum(r_g, 1) + tl.sum(r_o, 1)) / (4 * H)
    d_i = tl.where(ok, r_i - mean[:, None], 0.0)
    d_f = tl.where(ok, r_f - mean[:, None], 0.0)
    d_g = tl.where(ok, r_g - mean[:, None], 0.0)
    d_o = tl.where(ok, r_o - mean[:, None], 0.0)
    var = (tl.sum(d_i * d_i, 1) + tl.sum(d_f * d_f, 1) + tl.sum(d_g * d_g, 1) + tl.sum(d_o * d_o, 1)) / (4 * H)
    return d_i, d_f, d_g, d_o, (1.0 / tl.sqrt(var + eps))[:, None]


@triton.jit
def _step_tile(n_active, B, H, NG: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
               I64: tl.constexpr):
    """The program's [BLOCK_B, BLOCK_H] tile of (batch rows, hidden units): its columns and their
    mask, the masks of its rows in the batch (ok) and still inside their sequence (act), and the
    offsets of its elements in a (B, NG*H) gate tensor and in a (B, H) state tensor. I64: a gate
    slice of 2^31 elements or more, whose offsets int32 arithmetic would wrap (a variant of its
    own: every other shape keeps 32-bit offsets)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    if I64:
        rows = rows.to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    col_ok = cols < H
    ok = (rows < B)[:, None] & col_ok[None, :]
    act = ok & (rows < n_active)[:, None]
    return cols, col_ok, ok, act, rows[:, None] * (NG * H) + cols[None, :], rows[:, None] * H + cols[None, :]


@triton.jit(do_not_specialize=["n_active"])
def _fwd_step_kernel(
    G, R, HP, HN, CP, CN, M, A,
    PI, PF, PO, LNWH, LNBH, LNWC, LNBC,
    n_active, B, H, eps,
    CELL: tl.constexpr, NG: tl.constexpr, PROJ: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, ACC: tl.constexpr, I64: tl.constexpr,
):
    """One time step of the cell on a [BLOCK_B, BLOCK_H] tile of (batch rows, hidden units).

    G:  (B, NG*H) gate pre-activations x W_ih^T + b (+ h W_hh^T, except for layernorm).
    A:  (B, NG*H) where the activated gates are saved when SAVE (the backward reads them): G
        itself, or an fp32 buffer when G is half precision. R: (B, 4H) raw h W_hh^T (layernorm).
    HP/HN, CP/CN: previous / new hidden and cell state (B, H). M: (B, H) o*tanh(c) (PROJ).
    Rows >= n_active are past their sequence's end: their state is carried unchanged.
    """
    cols, col_ok, ok, act, g_off, s_off = _step_tile(n_active, B, H, NG, BLOCK_B, BLOCK_H, I64)

    cp = tl.load(CP + s_off, mask=ok, other=0.0).to(ACC)
    if CELL == _CIFG:
        a_f = tl.load(G + g_off, mask=act, other=0.0).to(ACC)
        a_g = tl.load(G + g_off + H, mask=act, other=0.0).to(ACC)
        a_o = tl.load(G + g_off + 2 * H, mask=act, other=0.0).to(ACC)
        a_i = a_f  # unused
    else:
        a_i = tl.load(G + g_off, mask=act, other=0.0).to(ACC)
        a_f = tl.load(G + g_off + H, mask=act, other=0.0).to(ACC)
        a_g = tl.load(G + g_off + 2 * H, mask=act, other=0.0).to(ACC)
        a_o = tl.load(G + g_off + 3 * H, mask=act, other=0.0).to(ACC)
    if CELL == _LAYERNORM:
        # layer norm of the recurrent product over all 4H gate rows (one program per row)
        d_i, d_f, d_g, d_o, rstd = _ln4_centered(R, g_off, act, ok, H, eps, ACC)
        a_i += d_i * rstd * tl.load(LNWH + cols, mask=col_ok, other=0.0).to(ACC)[None, :] \
            + tl.load(LNBH + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        a_f += d_f * rstd * tl.load(LNWH + H + cols, mask=col_ok, other=0.0).to(ACC)[None, :] \
            + tl.load(LNBH + H + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        a_g += d_g * rstd * tl.load(LNWH + 2 * H + cols, mask=col_ok, other=0.0).to(ACC)[None, :] \
            + tl.load(LNBH + 2 * H + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        a_o += d_o * rstd * tl.load(LNWH + 3 * H + cols, mask=col_ok, other=0.0).to(ACC)[None, :] \
            + tl.load(LNBH + 3 * H + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
    if CELL == _PEEPHOLE:
        a_i += tl.load(PI + cols, mask=col_ok, other=0.0).to(ACC)[None, :] * cp
        a_f += tl.load(PF + cols, mask=col_ok, other=0.0).to(ACC)[None, :] * cp

    f = _sigmoid(a_f)
    if CELL == _CIFG:
        i = 1.0 - f
    else:
        i = _sigmoid(a_i)
    g = _tanh(a_g)
    c = f * cp + i * g
    if CELL == _PEEPHOLE:
        a_o += tl.load(PO + cols, mask=col_ok, other=0.0).to(ACC)[None, :] * c
    o = _sigmoid(a_o)
    if CELL == _LAYERNORM:
        cm = tl.sum(tl.where(ok, c, 0.0), 1) / H
        cd = tl.where(ok, c - cm[:, None], 0.0)
        crstd = 1.0 / tl.sqrt(tl.sum(cd * cd, 1) / H + eps)
        n = cd * crstd[:, None] * tl.load(LNWC + cols, mask=col_ok, other=0.0).to(ACC)[None, :] \
            + tl.load(LNBC + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        m = o * _tanh(n)
    else:
        m = o * _tanh(c)

    tl.store(CN + s_off, tl.where(act, c, cp).to(CN.dtype.element_ty), mask=ok)
    if PROJ:
        tl.store(M + s_off, tl.where(act, m, 0.0).to(M.dtype.element_ty), mask=ok)
    else:
        hp = tl.load(HP + s_off, mask=ok, other=0.0).to(ACC)
        tl.store(HN + s_off, tl.where(act, m, hp).to(HN.dtype.element_ty), mask=ok)
    if SAVE:
        aty = A.dtype.element_ty
        if CELL == _CIFG:
            tl.store(A + g_off, f.to(aty), mask=act)
            tl.store(A + g_off + H, g.to(aty), mask=act)
            tl.store(A + g_off + 2 * H, o.to(aty), mask=act)
        else:
            tl.store(A + g_off, i.to(aty), mask=act)
            tl.store(A + g_off + H, f.to(aty), mask=act)
            tl.store(A + g_off + 2 * H, g.to(aty), mask=act)
            tl.store(A + g_off + 3 * H, o.to(aty), mask=act)


@triton.jit(do_not_specialize=["n_active"])
def _bwd_step_kernel(
    G, R, CP, CN, DH, DY, DM, DC, DG, DR, DN,
    PI, PF, PO, LNWH, LNWC, LNBC,
    n_active, B, H, eps,
    CELL: tl.constexpr, NG: tl.constexpr, PROJ: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, ACC: tl.constexpr, I64: tl.constexpr,
):
    """The backward of one step on a tile, given the forward's activated gates (G: its A), dL/dm
    (DH + DY, or DM with a projection) and dL/dc_t (DC, overwritten with dL/dc_{t-1}). Writes
    dL/d(gate pre-activations) to DG, and for layernorm dL/d(raw recurrent product) to DR and
    dL/d(LN(c)) to DN. Rows past their end get zero gate gradients and carry DC unchanged."""
    cols, col_ok, ok, act, g_off, s_off = _step_tile(n_active, B, H, NG, BLOCK_B, BLOCK_H, I64)

    if CELL == _CIFG:
        f = tl.load(G + g_off, mask=act, other=0.0).to(ACC)
        g = tl.load(G + g_off + H, mask=act, other=0.0).to(ACC)
        o = tl.load(G + g_off + 2 * H, mask=act, other=0.0).to(ACC)
        i = 1.0 - f
    else:
        i = tl.load(G + g_off, mask=act, other=0.0).to(ACC)
        f = tl.load(G + g_off + H, mask=act, other=0.0).to(ACC)
        g = tl.load(G + g_off + 2 * H, mask=act, other=0.0).to(ACC)
        o = tl.load(G + g_off + 3 * H, mask=act, other=0.0).to(ACC)
    cp = tl.load(CP + s_off, mask=act, other=0.0).to(ACC)
    c = tl.load(CN + s_off, mask=act, other=0.0).to(ACC)
    dc_next = tl.load(DC + s_off, mask=ok, other=0.0).to(ACC)
    if PROJ:
        dm = tl.load(DM + s_off, mask=act, other=0.0).to(ACC)
    else:
        dm = tl.load(DH + s_off, mask=act, other=0.0).to(ACC) \
            + tl.load(DY + s_off, mask=act, other=0.0).to(ACC)

    if CELL == _LAYERNORM:
        cm = tl.sum(tl.where(ok, c, 0.0), 1) / H
        cd = tl.where(ok, c - cm[:, None], 0.0)
        crstd = (1.0 / tl.sqrt(tl.sum(cd * cd, 1) / H + eps))[:, None]
        chat = cd * crstd
        gam_c = tl.load(LNWC + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        tn = _tanh(chat * gam_c + tl.load(LNBC + cols, mask=col_ok, other=0.0).to(ACC)[None, :])
        do = dm * tn
        dn = tl.where(act, dm * o * (1.0 - tn * tn), 0.0)
        tl.store(DN + s_off, dn.to(DN.dtype.element_ty), mask=ok)
        dchat = dn * gam_c
        m1 = tl.sum(dchat, 1) / H
        m2 = tl.sum(dchat * chat, 1) / H
        dc = dc_next + crstd * (dchat - m1[:, None] - chat * m2[:, None])
    else:
        tc = _tanh(c)
        do = dm * tc
        dc = dc_next + dm * o * (1.0 - tc * tc)
    da_o = do * o * (1.0 - o)
    if CELL == _PEEPHOLE:
        dc += da_o * tl.load(PO + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
    if CELL == _CIFG:
        da_f = dc * (cp - g) * f * (1.0 - f)
        da_g = dc * (1.0 - f) * (1.0 - g * g)
        da_i = da_f  # unused
    else:
        da_i = dc * g * i * (1.0 - i)
        da_f = dc * cp * f * (1.0 - f)
        da_g = dc * i * (1.0 - g * g)
    dcp = dc * f
    if CELL == _PEEPHOLE:
        dcp += da_i * tl.load(PI + cols, mask=col_ok, other=0.0).to(ACC)[None, :] \
            + da_f * tl.load(PF + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
    tl.store(DC + s_off, tl.where(act, dcp, dc_next).to(DC.dtype.element_ty), mask=ok)

    da_i = tl.where(act, da_i, 0.0)
    da_f = tl.where(act, da_f, 0.0)
    da_g = tl.where(act, da_g, 0.0)
    da_o = tl.where(act, da_o, 0.0)
    gty = DG.dtype.element_ty
    if CELL == _CIFG:
        tl.store(DG + g_off, da_f.to(gty), mask=ok)
        tl.store(DG + g_off + H, da_g.to(gty), mask=ok)
        tl.store(DG + g_off + 2 * H, da_o.to(gty), mask=ok)
    else:
        tl.store(DG + g_off, da_i.to(gty), mask=ok)
        tl.store(DG + g_off + H, da_f.to(gty), mask=ok)
        tl.store(DG + g_off + 2 * H, da_g.to(gty), mask=ok)
        tl.store(DG + g_off + 3 * H, da_o.to(gty), mask=ok)
    if CELL == _LAYERNORM:
        # backward of the recurrent layer norm over 4H: DR = LN'(r)^T (gamma_h * DG)
        x_i, x_f, x_g, x_o, rstd = _ln4_centered(R, g_off, act, ok, H, eps, ACC)
        x_i = x_i * rstd
        x_f = x_f * rstd
        x_g = x_g * rstd
        x_o = x_o * rstd
        e_i = da_i * tl.load(LNWH + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        e_f = da_f * tl.load(LNWH + H + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        e_g = da_g * tl.load(LNWH + 2 * H + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        e_o = da_o * tl.load(LNWH + 3 * H + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        m1 = ((tl.sum(e_i, 1) + tl.sum(e_f, 1) + tl.sum(e_g, 1) + tl.sum(e_o, 1)) / (4 * H))[:, None]
        m2 = ((tl.sum(e_i * x_i, 1) + tl.sum(e_f * x_f, 1) + tl.sum(e_g * x_g, 1)
               + tl.sum(e_o * x_o, 1)) / (4 * H))[:, None]
        rty = DR.dtype.element_ty
        tl.store(DR + g_off, tl.where(act, rstd * (e_i - m1 - x_i * m2), 0.0).to(rty), mask=ok)
        tl.store(DR + g_off + H, tl.where(act, rstd * (e_f - m1 - x_f * m2), 0.0).to(rty), mask=ok)
        tl.store(DR + g_off + 2 * H, tl.where(act, rstd * (e_g - m1 - x_g * m2), 0.0).to(rty), mask=ok)
        tl.store(DR + g_off + 3 * H, tl.where(act, rstd * (e_o - m1 - x_o * m2), 0.0).to(rty), mask=ok)


# --------------------------------------------------------------------------------------
# Host side: configuration, precision, launches
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Cfg:
    cell: str
    T: int
    B: int
    I: int
    H: int
    P: int  # width of h: proj_size, or H
    proj: bool
    bias: bool
    reverse: bool
    steps: tuple[int, ...] | None  # batch_sizes as a tuple, or None
    cd: torch.dtype  # compute (GEMM operand) dtype
    sd: torch.dtype  # cell-state dtype (fp32 for half types)
    tf32: bool
    save: bool  # keep what the backward needs
    tune: object = None  # the persistent kernel's launch (lstm_triton_persistent.Tuning), or None

    @property
    def ng(self) -> int:
        return get_cell(self.cell).num_gates

    @property
    def gh(self) -> int:
        return self.ng * self.H


def rnn_allows_tf32() -> bool:
    """Whether cuDNN's RNN would use TF32 for fp32 GEMMs right now (the same switch is used here)."""
    p = torch.backends.cudnn.rnn.fp32_precision
    if p in ("tf32", "ieee"):
        return p == "tf32"
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return False


@contextlib.contextmanager
def _matmul_precision(tf32: bool):
    """cuBLAS TF32 on or off for the GEMMs issued inside (restored after)."""
    m = torch.backends.cuda.matmul
    old = m.fp32_precision
    want = "tf32" if tf32 else "ieee"
    if old == want or (old == "none" and not tf32 and not _legacy_tf32()):
        yield
        return
    m.fp32_precision = want
    try:
        yield
    finally:
        m.fp32_precision = old


def _legacy_tf32() -> bool:
    try:
        return bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:
        return True  # unknown: set explicitly


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class _Launch:
    """Grid, block sizes and the constant arguments of the two step kernels for one config."""

    def __init__(self, cfg: _Cfg, device: torch.device):
        H, B = cfg.H, cfg.B
        if cfg.cell == "layernorm":  # row reductions: one program holds a whole row
            self.bh = _next_pow2(H)
            self.bb = 1
            self.warps = 4 if self.bh <= 256 else 8 if self.bh <= 1024 else 16
        else:
            self.bh = min(_next_pow2(H), 64)  # ~512 elements per gate and program: many programs
            self.bb = min(_next_pow2(B), max(1, 512 // self.bh))
            self.warps = 4
        self.grid = (triton.cdiv(B, self.bb), triton.cdiv(H, self.bh))
        self.const = dict(CELL=_CELL_ID[cfg.cell], NG=cfg.ng, PROJ=cfg.proj,
                          BLOCK_B=self.bb, BLOCK_H=self.bh, ACC=_acc_dtype(cfg.cd),
                          I64=B * cfg.gh >= 2 ** 31, num_warps=self.warps)
        self.dummy = torch.empty(1, device=device, dtype=cfg.sd)


def _compute_dtypes(x: Tensor, param_dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    cd = param_dtype
    dev = x.device.type
    if param_dtype == torch.float32 and torch.is_autocast_enabled(dev):
        cd = torch.get_autocast_dtype(dev)
    sd = torch.float32 if cd in (torch.float16, torch.bfloat16) else cd
    return cd, sd


def _extras(cfg: _Cfg, p: dict[str, Tensor], launch: _Launch) -> dict[str, Tensor]:
    """The cell's own parameters as kernel arguments (a dummy for those it lacks), contiguous:
    the kernels index them with unit strides."""
    d = launch.dummy
    ext = dict(PI=d, PF=d, PO=d, LNWH=d, LNBH=d, LNWC=d, LNBC=d)
    if cfg.cell == "peephole":
        ext.update(PI=p["weight_ci"], PF=p["weight_cf"], PO=p["weight_co"])
    elif cfg.cell == "layernorm":
        ext.update(LNWH=p["ln_weight_hh"], LNBH=p["ln_bias_hh"], LNWC=p["ln_weight_c"], LNBC=p["ln_bias_c"])
    return {k: v.contiguous() for k, v in ext.items()}


# --------------------------------------------------------------------------------------
# Forward and backward of one layer, on plain tensors (no autograd; capturable)
# --------------------------------------------------------------------------------------

def _order(cfg: _Cfg) -> list[tuple[int, int, int, int]]:
    """(t, index of the state before step t, index after it, active rows) in processing order."""
    T = cfg.T
    out = []
    for s in range(T):
        t = T - 1 - s if cfg.reverse else s
        t_in, t_out = (t + 1, t) if cfg.reverse else (t, t + 1)
        out.append((t, t_in, t_out, cfg.B if cfg.steps is None else cfg.steps[t]))
    return out


def _forward_impl(cfg: _Cfg, inp: dict[str, Tensor], p: dict[str, Tensor]) -> dict[str, Tensor]:
    """inp: x (T,B,I), h0 (B,P), c0 (B,H)[, mask (T,B) bool]; p: the layer's parameters.
    Returns y (T,B,P), hT, cT and, when cfg.save, what the backward reads."""
    T, B, I, H, P, GH = cfg.T, cfg.B, cfg.I, cfg.H, cfg.P, cfg.gh
    cd, sd = cfg.cd, cfg.sd
    x = inp["x"]
    dev = x.device
    launch = _Launch(cfg, dev)
    w_ih = p["weight_ih"].to(cd)
    w_hh_t = p["weight_hh"].to(cd).t()
    w_hr_t = p["weight_hr"].to(cd).t() if cfg.proj else None
    ln = cfg.cell == "layernorm"
    xf = x.reshape(T * B, I).to(cd)  # (T*B, I)
    out: dict[str, Tensor] = {}

    if ln:
        xw_raw = xf @ w_ih.t()  # (T*B, GH)
        beta = p["ln_bias_ih"]
        if cfg.bias:
            beta = beta + p["bias_ih"] + p["bias_hh"]
        g, mean, rstd = torch.native_layer_norm(xw_raw, [GH], p["ln_weight_ih"].to(cd), beta.to(cd), LN_EPS)
        if cfg.save:
            out.update(xw_raw=xw_raw, ln_mean=mean, ln_rstd=rstd)
        r_all = (torch.zeros if cfg.steps is not None else torch.empty)(
            (T if cfg.save else 1), B, GH, device=dev, dtype=cd)
    else:
        if cfg.bias:
            g = torch.addmm((p["bias_ih"] + p["bias_hh"]).to(cd), xf, w_ih.t())
        else:
            g = xf @ w_ih.t()
        r_all = None
    g = g.view(T, B, GH)  # (T, B, GH)
    # the activated gates the backward reads, saved over the pre-activations; under half precision
    # in fp32 of their own: the backward's f(1-f) and prod f need the gates the forward used (in
    # bf16 a forget gate above 0.998 is 1, whose f(1-f) is 0)
    acts = g if cd == sd or not cfg.save else torch.empty(T, B, GH, device=dev, dtype=sd)

    hbuf = torch.empty(T + 1, B, P, device=dev, dtype=cd)
    n_c = T + 1 if cfg.save else 2
    cbuf = torch.empty(n_c, B, H, device=dev, dtype=sd)
    first = T if cfg.reverse else 0
    hbuf[first].copy_(inp["h0"])
    cbuf[first if cfg.save else 0].copy_(inp["c0"])
    m_all = torch.empty(T if cfg.save else 1, B, H, device=dev, dtype=cd) if cfg.proj else None

    kern = _fwd_step_kernel[launch.grid]
    ext = _extras(cfg, p, launch)
    d = launch.dummy
    hs, cs, gs, acts_ = hbuf.unbind(0), cbuf.unbind(0), g.unbind(0), acts.unbind(0)
    rs = r_all.unbind(0) if ln else None
    ms = m_all.unbind(0) if cfg.proj else None
    for s, (t, t_in, t_out, b) in enumerate(_order(cfg)):
        h_prev, h_new = hs[t_in], hs[t_out]
        if cfg.save:
            c_prev, c_new = cs[t_in], cs[t_out]
        else:
            c_prev, c_new = cs[s % 2], cs[(s + 1) % 2]
        gt = gs[t]
        r = rs[t if cfg.save else 0] if ln else d
        mt = ms[t if cfg.save else 0] if cfg.proj else d
        if ln:
            torch.mm(h_prev[:b], w_hh_t, out=r[:b])
        else:
            gt[:b].addmm_(h_prev[:b], w_hh_t)
        kern(gt, r, h_prev, h_new, c_prev, c_new, mt, acts_[t], **ext, n_active=b, B=B, H=H, eps=LN_EPS,
             SAVE=cfg.save, **launch.const)
        if cfg.proj:
            torch.mm(mt[:b], w_hr_t, out=h_new[:b])
            if b < B:
                h_new[b:].copy_(h_prev[b:])

    if cfg.reverse:
        y, hT = hbuf[:T], hbuf[0]
    else:
        y, hT = hbuf[1:], hbuf[T]
    cT = cbuf[0 if cfg.reverse else T] if cfg.save else cs[T % 2]
    if cfg.steps is not None:
        # zeros past each row's length, whatever the carried h is (0 * inf is NaN)
        y = torch.where(inp["mask"].unsqueeze(-1), y, 0)
    out.update(y=y, hT=hT, cT=cT)
    if cfg.save:
        out.update(g=acts, hbuf=hbuf, cbuf=cbuf)
        if ln:
            out["r"] = r_all
        if cfg.proj:
            out["m"] = m_all
    return out


def _backward_impl(cfg: _Cfg, sv: dict[str, Tensor], gin: dict[str, Tensor], p: dict[str, Tensor],
                   need: dict[str, bool]) -> dict[str, Tensor]:
    """sv: the forward's saved tensors; gin: dy (T,B,P), dhT (B,P), dcT (B,H)[, mask].
    Returns the gradients named by `need` (x, h0, c0 and the parameter names)."""
    T, B, I, H, P, GH = cfg.T, cfg.B, cfg.I, cfg.H, cfg.P, cfg.gh
    cd, sd = cfg.cd, cfg.sd
    x = gin["x"]
    dev = x.device
    launch = _Launch(cfg, dev)
    ln = cfg.cell == "layernorm"
    w_hh = p["weight_hh"].to(cd)
    w_hr = p["weight_hr"].to(cd) if cfg.proj else None
    dy = gin["dy"]
    if cfg.steps is not None:
        # the padding outputs are constants: their incoming gradients are dropped, NaN or inf too
        # (with a projection the carry of finished rows would take them in)
        dy = torch.where(gin["mask"].unsqueeze(-1), dy, 0)
    dh = gin["dhT"].to(cd).clone()
    dc = gin["dcT"].to(sd).clone()
    dg = torch.empty(T, B, GH, device=dev, dtype=cd)
    dr = torch.empty_like(dg) if ln else None
    dn = torch.empty(T, B, H, device=dev, dtype=cd) if ln else None
    dh_all = torch.empty(T, B, P, device=dev, dtype=cd) if cfg.proj else None
    dm = torch.empty(B, H, device=dev, dtype=cd) if cfg.proj else None
    d = launch.dummy
    g, cbuf, hbuf = sv["g"], sv["cbuf"], sv["hbuf"]
    ext = _extras(cfg, p, launch)
    ext.pop("LNBH", None)
    kern = _bwd_step_kernel[launch.grid]
    gs, cs, dys, dgs = g.unbind(0), cbuf.unbind(0), dy.unbind(0), dg.unbind(0)
    rs, drs, dns = (sv["r"].unbind(0), dr.unbind(0), dn.unbind(0)) if ln else (None, None, None)
    dhs = dh_all.unbind(0) if cfg.proj else None
    for t, t_in, t_out, b in reversed(_order(cfg)):
        if cfg.proj:
            torch.add(dh, dys[t], out=dhs[t])
            torch.mm(dhs[t], w_hr, out=dm)
        kern(gs[t], rs[t] if ln else d, cs[t_in], cs[t_out], dh, dys[t], dm if cfg.proj else d, dc,
             dgs[t], drs[t] if ln else d, dns[t] if ln else d, **ext,
             n_active=b, B=B, H=H, eps=LN_EPS, **launch.const)
        if cfg.proj and b < B:
            dh[b:].copy_(dhs[t][b:])
        torch.mm((drs if ln else dgs)[t][:b], w_hh, out=dh[:b])

    out: dict[str, Tensor] = {}
    f32 = torch.float32 if cd != torch.float64 else cd
    dgf = dg.view(T * B, GH)  # (T*B, GH)
    if ln:
        dxw, dgam, dbet = torch.ops.aten.native_layer_norm_backward(
            dgf, sv["xw_raw"], [GH], sv["ln_mean"], sv["ln_rstd"], p["ln_weight_ih"].to(cd),
            p["ln_bias_ih"].to(cd), [need["x"] or need["weight_ih"], need["ln_weight_ih"], need["ln_bias_ih"]])
        if need["ln_weight_ih"]:
            out["ln_weight_ih"] = dgam
        if need["ln_bias_ih"]:
            out["ln_bias_ih"] = dbet
    else:
        dxw = dgf
    if need["x"]:
        out["x"] = (dxw @ p["weight_ih"].to(cd)).view(T, B, I)  # (T*B, GH) @ (GH, I) -> (T, B, I)
    if need["weight_ih"]:
        out["weight_ih"] = dxw.t() @ x.reshape(T * B, I).to(cd)  # (GH, T*B) @ (T*B, I)
    if need.get("bias_ih") or need.get("bias_hh"):
        db = dgf.sum(0, dtype=f32)
        # one sum, two tensors: autograd hands each to its own parameter (aliased gradients
        # would let an in-place change of one, e.g. an optimizer's, change the other)
        out["bias_ih"], out["bias_hh"] = db, db.clone()
    h_prev = hbuf[1:] if cfg.reverse else hbuf[:T]
    if need["weight_hh"]:
        out["weight_hh"] = (dr if ln else dg).view(T * B, GH).t() @ h_prev.reshape(T * B, P)  # (GH, T*B) @ (T*B, P)
    if cfg.proj and need["weight_hr"]:
        out["weight_hr"] = dh_all.view(T * B, P).t() @ sv["m"].view(T * B, H)  # (P, T*B) @ (T*B, H)
    c_prev = cbuf[1:] if cfg.reverse else cbuf[:T]
    c_new = cbuf[:T] if cfg.reverse else cbuf[1:]
    if cfg.cell == "peephole":
        dg_i, dg_f, _, dg_o = dg.split(H, -1)  # (T, B, H) each, in LSTM_GATES order
        if need["weight_ci"]:
            out["weight_ci"] = (dg_i.to(f32) * c_prev).sum((0, 1))
        if need["weight_cf"]:
            out["weight_cf"] = (dg_f.to(f32) * c_prev).sum((0, 1))
        if need["weight_co"]:
            out["weight_co"] = (dg_o.to(f32) * c_new).sum((0, 1))
    if ln:
        if need["ln_weight_hh"]:
            # the reference's two-pass LN, as the kernel's: where the variance overflows it is 0
            # (F.layer_norm's is NaN)
            rhat = layer_norm(sv["r"].to(f32), 1.0, 0.0)
            out["ln_weight_hh"] = (dg.to(f32) * rhat).sum((0, 1))
        if need["ln_bias_hh"]:
            out["ln_bias_hh"] = dg.sum((0, 1), dtype=f32)
        if need["ln_weight_c"]:
            chat = layer_norm(c_new.to(f32), 1.0, 0.0)
            out["ln_weight_c"] = (dn.to(f32) * chat).sum((0, 1))
        if need["ln_bias_c"]:
            out["ln_bias_c"] = dn.sum((0, 1), dtype=f32)
    out["h0"] = dh
    out["c0"] = dc
    return out


# --------------------------------------------------------------------------------------
# CUDA graphs: capture a layer's forward/backward once per shape, replay after
# --------------------------------------------------------------------------------------

_MAX_GRAPHS = 8


class _GraphEntry:
    """Static inputs, captured graphs and static outputs of one layer configuration.

    The forward's saved activations live in static buffers that are lent to the autograd
    context of the call that produced them; a forward that finds them still lent (a second
    forward before the first one's backward) runs eagerly instead. `generation` detects the
    only unsafe use left: a retained graph whose backward runs after a newer forward.
    """

    def __init__(self):
        self.fwd_graph = None
        self.fwd_in: dict[str, Tensor] = {}
        self.fwd_out: dict[str, Tensor] = {}
        self.bwd_graphs: dict[tuple, tuple] = {}
        self.busy = False
        self.generation = 0

    def release(self, generation: int) -> None:
        if self.generation == generation:
            self.busy = False


_graphs: OrderedDict[tuple, _GraphEntry] = OrderedDict()
_seen: OrderedDict[tuple, int] = OrderedDict()
_broken: set[tuple] = set()


def clear_graph_cache() -> None:
    """Drop every captured graph and its static buffers."""
    _graphs.clear()
    _seen.clear()
    _broken.clear()


def _capture(fn, *args):
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            out = fn(*args)
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    return graph, out


def _graph_key(cfg: _Cfg, x: Tensor, p: dict[str, Tensor], impl) -> tuple:
    return (cfg, impl.__name__, x.device.index, torch.is_inference_mode_enabled(),
            tuple((k, v.data_ptr(), v.dtype, tuple(v.shape)) for k, v in sorted(p.items())))


def _graph_entry(cfg: _Cfg, x: Tensor, p: dict[str, Tensor], inp: dict[str, Tensor], impl) -> _GraphEntry | None:
    """The entry to replay `impl(cfg, inp, p)` for this call, capturing it on the second sighting;
    None: run eagerly."""
    if not (USE_CUDA_GRAPHS and x.is_cuda) or torch.cuda.is_current_stream_capturing():
        return None
    key = _graph_key(cfg, x, p, impl)
    if key in _broken:
        return None
    entry = _graphs.get(key)
    if entry is not None:
        _graphs.move_to_end(key)
        return None if entry.busy else entry
    _seen[key] = _seen.get(key, 0) + 1
    _seen.move_to_end(key)
    while len(_seen) > 4 * _MAX_GRAPHS:
        _seen.popitem(last=False)
    if _seen[key] < 2:
        return None
    entry = _GraphEntry()
    entry.fwd_in = {k: v.clone() for k, v in inp.items()}
    try:
        with _matmul_precision(cfg.tf32):
            entry.fwd_graph, entry.fwd_out = _capture(impl, cfg, entry.fwd_in, p)
    except Exception:  # noqa: BLE001 - anything that cannot be captured runs eagerly
        _broken.add(key)
        return None
    _graphs[key] = entry
    while len(_graphs) > _MAX_GRAPHS:
        _graphs.popitem(last=False)
    return entry


# --------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------

_PARAM_ORDER = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
                "weight_ci", "weight_cf", "weight_co",
                "ln_weight_ih", "ln_bias_ih", "ln_weight_hh", "ln_bias_hh", "ln_weight_c", "ln_bias_c")


def _on_device(x: Tensor):
    """Triton launches on the current CUDA device: make it x's."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _Token:
    """Held by an autograd context that borrowed a graph entry's buffers."""


class _TritonLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg: _Cfg, mask, exposed, x, h0, c0, *params):
        p = {n: t for n, t in zip(_PARAM_ORDER, params) if t is not None}
        inp = {"x": x, "h0": h0, "c0": c0}
        if mask is not None:
            inp["mask"] = mask
        with torch.autocast(x.device.type, enabled=False), _on_device(x):
            entry = _graph_entry(cfg, x, p, inp, _forward_impl)
            if entry is not None:
                for k, v in inp.items():
                    entry.fwd_in[k].copy_(v)
                entry.fwd_graph.replay()
                res = entry.fwd_out
                y, hT, cT = res["y"].clone(), res["hT"].clone(), res["cT"].clone()
                if cfg.save:
                    entry.busy = True
                    entry.generation += 1
                    ctx.token = _Token()
                    weakref.finalize(ctx.token, entry.release, entry.generation)
            else:
                with _matmul_precision(cfg.tf32):
                    res = _forward_impl(cfg, inp, p)
                # y is a view of hbuf, which the backward reads: exposed with gradients, a copy (as
                # the graph path returns), so the caller may change y in place before the backward
                y = res["y"].clone() if cfg.save and exposed else res["y"]
                hT, cT = res["hT"].clone(), res["cT"].clone()
        ctx.cfg = cfg
        ctx.in_dtypes = (x.dtype, h0.dtype, c0.dtype)
        ctx.entry = entry
        ctx.generation = entry.generation if entry is not None else 0
        if cfg.save:
            ctx.mask = mask
            ctx.names = tuple(n for n, t in zip(_PARAM_ORDER, params) if t is not None)
            ctx.saved = None if entry is not None else {k: v for k, v in res.items() if k not in ("y", "hT", "cT")}
            ctx.save_for_backward(x, h0, c0, *[t for t in params if t is not None])
        pdt = params[0].dtype
        return y, hT.to(pdt), cT.to(pdt)

    @staticmethod
    def backward(ctx, dy, dhT, dcT):
        cfg: _Cfg = ctx.cfg
        if not cfg.save:
            raise RuntimeError("lstmkit triton backend: this layer ran without saving for backward")
        x, h0, c0, *params = ctx.saved_tensors
        p = dict(zip(ctx.names, params))
        if torch.is_grad_enabled() or batched(dy, dhT, dcT):
            # create_graph=True: a backward autograd can differentiate; or gradients batched by vmap
            # (autograd.grad's is_grads_batched, jacobian(vectorize=True)), which the kernels cannot read
            if ctx.entry is not None:
                ctx.entry.release(ctx.generation)
            pdt = params[0].dtype
            bs = torch.tensor(cfg.steps) if cfg.steps is not None else None
            dx, dstate, grads = reference.differentiable_grads(
                get_cell(cfg.cell), x.to(pdt), (h0.to(pdt), c0.to(pdt)), p, bs, cfg.reverse, (dy, dhT, dcT))
            result = [None, None, None] + [g if g is None else g.to(dt) for g, dt in zip((dx, *dstate), ctx.in_dtypes)]
            return tuple(result + [grads[n] if n in p else None for n in _PARAM_ORDER])
        n_fixed = 6  # cfg, mask, exposed, x, h0, c0
        need = {"x": ctx.needs_input_grad[3], "h0": ctx.needs_input_grad[4], "c0": ctx.needs_input_grad[5]}
        for k, n in enumerate(_PARAM_ORDER):
            need[n] = ctx.needs_input_grad[n_fixed + k]
        gin = {"x": x, "dy": dy.to(cfg.cd).contiguous(), "dhT": dhT.contiguous(), "dcT": dcT.contiguous()}
        if ctx.mask is not None:
            gin["mask"] = ctx.mask
        entry: _GraphEntry | None = ctx.entry
        with torch.autocast(x.device.type, enabled=False), _on_device(x):
            if entry is not None:
                if entry.generation != ctx.generation:
                    raise RuntimeError(
                        "lstmkit triton backend: the saved activations of this call were overwritten by a "
                        "later forward of the same layer (backward through a retained graph after another "
                        "forward). Set LSTMKIT_TRITON_GRAPHS=0 for this use.")
                grads = _graph_backward(cfg, entry, gin, p, need)
                entry.busy = False
            else:
                with _matmul_precision(cfg.tf32):
                    grads = _backward_impl(cfg, ctx.saved, gin, p, need)
        result = [None, None, None]
        for name, dtype in zip(("x", "h0", "c0"), ctx.in_dtypes):
            result.append(grads[name].to(dtype) if need[name] else None)
        for n in _PARAM_ORDER:
            if n in p and need[n]:
                result.append(grads[n].to(p[n].dtype))
            else:
                result.append(None)
        return tuple(result)


_refused: set[tuple] = set()  # persistent launches a device refused (OutOfResources): never tried again


def _persistent_impl(cfg: _Cfg, inp: dict[str, Tensor], p: dict[str, Tensor]) -> dict[str, Tensor]:
    from lstmkit.kernels import lstm_triton_persistent as pk
    y, hT, cT = pk.forward(cfg.cell, inp["x"], inp["h0"], inp["c0"], p, cfg.steps, cfg.reverse, cfg.cd, cfg.sd,
                           cfg.tf32, cfg.tune)
    return {"y": y, "hT": hT, "cT": cT}


def _persistent(cfg: _Cfg, x: Tensor, h0: Tensor, c0: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Inference through the persistent kernel, replayed as a CUDA graph with its input GEMM
    from the second call of a configuration on (unpacked input: a packed one would copy its
    batch sizes from the host inside the capture). The graph takes the host work off each call:
    on an H100, 150-220 us of a 450-900 us call through the module at T=100, B <= 2."""
    inp = {"x": x, "h0": h0, "c0": c0}
    with torch.autocast(x.device.type, enabled=False), _on_device(x):
        entry = _graph_entry(cfg, x, p, inp, _persistent_impl) if cfg.steps is None else None
        if entry is None:
            with _matmul_precision(cfg.tf32):
                out = _persistent_impl(cfg, inp, p)
            return out["y"], out["hT"], out["cT"]
        for k, v in inp.items():
            entry.fwd_in[k].copy_(v)
        entry.fwd_graph.replay()
        return entry.fwd_out["y"].clone(), entry.fwd_out["hT"].clone(), entry.fwd_out["cT"].clone()


def _graph_backward(cfg, entry: _GraphEntry, gin, p, need) -> dict[str, Tensor]:
    key = tuple(sorted(need.items()))
    if key not in entry.bwd_graphs:
        static_in = {k: v.clone() for k, v in gin.items() if k != "x"}
        static_in["x"] = entry.fwd_in["x"]
        with _matmul_precision(cfg.tf32):
            graph, out = _capture(_backward_impl, cfg, entry.fwd_out, static_in, p, need)
        entry.bwd_graphs[key] = (graph, static_in, out)
    graph, static_in, out = entry.bwd_graphs[key]
    for k, v in gin.items():
        if k != "x":
            static_in[k].copy_(v)
    graph.replay()
    return {k: v.clone() for k, v in out.items()}


# --------------------------------------------------------------------------------------
# The backend contract
# --------------------------------------------------------------------------------------

def layer(spec: CellSpec, x: Tensor, state: tuple[Tensor, ...], params: dict[str, Tensor],
          batch_sizes: Tensor | None = None, reverse: bool = False, *,
          exposed: bool = True) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The layer contract of lstmkit.kernels (see there) on CUDA tensors (CPU under the interpreter);
    forward-mode AD, torch.func's transforms and torch.jit.trace run the reference (`kernels.needs_reference`)."""
    if spec.name not in CELLS:
        raise ValueError(f"backend 'triton' implements cells {CELLS}, got cell={spec.name!r}")
    if x.device.type not in DEVICES:
        raise ValueError(f"backend 'triton' runs on {DEVICES}, got a {x.device.type} tensor")
    h0, c0 = state
    T, B, I = x.shape
    H = params["weight_hh"].shape[0] // spec.num_gates
    proj = "weight_hr" in params
    P = params["weight_hr"].shape[0] if proj else H
    pdt = params["weight_ih"].dtype
    cd, sd = _compute_dtypes(x, pdt)
    tf32 = cd == torch.float32 and x.is_cuda and rnn_allows_tf32()
    if T == 0:
        return x.new_zeros(0, B, P, dtype=cd), (h0, c0)
    ordered = [params.get(n) for n in _PARAM_ORDER]
    tensors = [x, h0, c0, *[t for t in ordered if t is not None]]
    if needs_reference(tensors):
        return reference.layer(spec, x, state, params, batch_sizes, reverse)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    steps = tuple(int(b) for b in batch_sizes.tolist()) if batch_sizes is not None else None

    fields = (spec.name, T, B, I, H, P, proj, "bias_ih" in params, bool(reverse), steps, cd, sd, tf32, save)
    if not save and USE_PERSISTENT:
        from lstmkit.kernels import lstm_triton_persistent as pk
        if pk.supported(spec.name, T, B, H, proj, cd, x.device):
            # the launch is part of the configuration, so a graph captured with another is not
            # replayed; settings() are global, so one a shape cannot take gives way to the default
            tune = pk.tuning(H, B, PERSISTENT_WARPS, PERSISTENT_SPLIT, PERSISTENT_FMA, strict=False)
            launch = (x.device, spec.name, B, H, cd, tf32, steps is not None, bool(reverse), tune)
            if launch not in _refused:
                try:
                    y, hT, cT = _persistent(_Cfg(*fields, tune=tune), x, h0, c0, params)
                except OutOfResources:
                    # the compiled kernel needs more shared memory (or threads at its register
                    # count) than this GPU gives a block: e.g. fp32 H=768 on an A100 or a 4090.
                    # Triton refuses before launching anything; the step kernels take this launch
                    _refused.add(launch)
                else:
                    return y, (hT.to(pdt), cT.to(pdt))

    cfg = _Cfg(*fields)
    mask = None
    if steps is not None:
        mask = torch.arange(B, device=x.device)[None, :] < torch.tensor(steps, device=x.device)[:, None]
    y, hT, cT = _TritonLayer.apply(cfg, mask, exposed, x, h0.to(cd), c0, *ordered)
    return y, (hT, cT)
