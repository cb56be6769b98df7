"""A persistent LSTM kernel for small-batch inference (Persistent RNNs, Diamos et al. 2016; GRNN,
Holmes et al. 2019).

One launch runs the whole sequence. Program p owns hidden units [p*U, (p+1)*U) of all gates:
it loads its rows of W_hh once, keeps them on chip (registers / shared memory) for all T
steps, and keeps its slice of the cell state in registers. Per step it reads the full h_{t-1}
(B x H, from L2), computes its gate columns with one tl.dot, adds the precomputed input
projection, updates its c and h slices and writes its h slice. The programs then meet at a
grid-wide barrier (a monotonic counter in global memory) once per step; h is double-buffered,
so one barrier per step is enough.

The grid is at most one program per multiprocessor, so all programs are resident at once
(a precondition of any grid barrier). The spin has a bound: if the barrier ever waited that
long (a co-residency failure), the kernel counts it in `last_sync[1]` and the program's
outputs from then on (y, and through h those of the programs that read it) and the final
states are NaN, instead of a hang.

Used by lstm_triton.layer for inference (no gradient) on NVIDIA GPUs with B <= 16, cells lstm,
peephole and cifg, no projection, and a weight slice that fits on chip (a launch the GPU
refuses for its shared memory falls back to the step kernels there). Under TRITON_INTERPRET=1
the grid is one program (the interpreter runs programs one after another, so a barrier
between several would never open).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from lstmkit.cells import get_cell
from lstmkit.kernels.lstm_triton import _CELL_ID, _CIFG, _PEEPHOLE, INTERPRET, _acc_dtype, _next_pow2, _sigmoid, _tanh

CELLS = ("lstm", "peephole", "cifg")
MAX_BATCH = 16
FMA_MAX_BATCH = 2  # the widest batch the multiply-add product takes (rows are padded to a power of 2)
MAX_SLICE_BYTES = 128 * 1024  # W_hh slice one program keeps on chip
SPIN_LIMIT = 1 << 20

last_sync: Tensor | None = None
last_compiled = None  # the compiled kernel of the last launch (registers, spills: diagnostics)


@dataclass(frozen=True)
class Tuning:
    """How the kernel is launched (`tuning` picks it; benchmarks/gpu_lstm.py --tune sweeps it)."""
    warps: int  # warps per program
    split: int  # independent mma chains the product's reduction over H runs as (a power of 2)
    fma: bool = False  # B <= FMA_MAX_BATCH: the product as fp32 multiply-adds on the CUDA cores, no mma


@triton.jit
def _load_acquire(ptr):
    """ld.acquire.gpu: a load that orders every later read after it (no read-modify-write)."""
    return tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [ptr],
                                     dtype=tl.int32, is_pure=False, pack=1)


@triton.jit(do_not_specialize=["T"])
def _persistent_lstm_kernel(
    XW, W, PI, PF, PO, BS, Y, HX, HN, CN, C0, SYNC,
    T, B, H, n_prog, spin_limit,
    CELL: tl.constexpr, NG: tl.constexpr, PACKED: tl.constexpr, REVERSE: tl.constexpr,
    BB: tl.constexpr, KP: tl.constexpr, U: tl.constexpr, SPLIT: tl.constexpr, FMA: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, ACQ: tl.constexpr,
):
    pid = tl.program_id(0)
    N: tl.constexpr = 4 * U
    GH = NG * H
    # this program's gate columns, unit-major: unit j, slot q (gate); column n = 4*(j - pid*U) + q,
    # so a unit's four gates are neighbours and come apart by tl.split, without the cross-warp
    # reductions (block-wide barriers) a gate-major order needs
    cols = tl.arange(0, N)
    slot = cols % 4
    unit = pid * U + cols // 4
    col_ok = (unit < H) & (slot < NG)
    wrow = slot * H + unit
    # the recurrent product's reduction over H runs as SPLIT independent mma chains, one per
    # chunk of KC rows of W_hh^T, summed at the end: shorter chains, one more cross-warp sum
    # (one chain is written out on its own: as a chunk of one, it compiles to more registers)
    if SPLIT == 1:
        ks = tl.arange(0, KP)
        k_ok = ks < H
        w_ptrs = W + wrow[None, :] * H + ks[:, None]  # W_hh^T slice (KP, N)
        w_mask = k_ok[:, None] & col_ok[None, :]
    else:
        KC: tl.constexpr = KP // SPLIT
        ks = tl.arange(0, SPLIT)[:, None] * KC + tl.arange(0, KC)[None, :]  # (S, KC): rows of W_hh^T
        k_ok = ks < H
        w_ptrs = W + wrow[None, None, :] * H + ks[:, :, None]  # W_hh^T slice as chunks (S, KC, N)
        w_mask = k_ok[:, :, None] & col_ok[None, None, :]
    w = tl.load(w_ptrs, mask=w_mask, other=0.0)  # loaded once, kept on chip for all T steps
    if FMA:
        w = w.to(ACC)

    rows = tl.arange(0, BB)
    row_ok = rows < B
    ju = pid * U + tl.arange(0, U)
    own = row_ok[:, None] & (ju < H)[None, :]
    s_off = rows[:, None] * H + ju[None, :]
    c = tl.load(C0 + s_off, mask=own, other=0.0).to(ACC)
    h = tl.load(HX + s_off, mask=own, other=0.0).to(ACC)
    if CELL == _PEEPHOLE:
        p_i = tl.load(PI + ju, mask=ju < H, other=0.0).to(ACC)[None, :]
        p_f = tl.load(PF + ju, mask=ju < H, other=0.0).to(ACC)[None, :]
        p_o = tl.load(PO + ju, mask=ju < H, other=0.0).to(ACC)[None, :]
    if SPLIT == 1:
        k_mask = row_ok[:, None] & k_ok[None, :]  # (BB, KP)
    else:
        k_mask = row_ok[None, :, None] & k_ok[:, None, :]  # (S, BB, KC)
    x_mask = row_ok[:, None] & col_ok[None, :]
    hty = HX.dtype.element_ty
    # a step's offset in XW and Y in int64: t*B*4H passes 2^31 at B=16, H=1024 after 32768 steps
    # (one scalar product a step; the offsets within a step stay int32)
    x_step = tl.cast(B, tl.int64) * GH
    y_step = tl.cast(B, tl.int64) * H
    stalled = 0
    # the input projection of the first step; each later one is fetched during the barrier
    t0 = T - 1 if REVERSE else 0
    xw = tl.load(XW + t0 * x_step + rows[:, None] * GH + wrow[None, :], mask=x_mask, other=0.0)
    for s in range(T):
        if REVERSE:
            t = T - 1 - s
            t_next = (t - 1 + T) % T  # wraps at the last step: a harmless in-range load
        else:
            t = s
            t_next = (t + 1) % T
        if PACKED:
            n_act = tl.load(BS + t)
        else:
            n_act = B
        if FMA:  # a row or two: multiply-adds on the CUDA cores, not an mma tile of 16 mostly padding rows
            hk = tl.load(HX + (s % 2) * B * H + rows[:, None] * H + ks[None, :], mask=k_mask, other=0.0,
                         cache_modifier=".cg").to(ACC)  # (BB, KP)
            acc = tl.sum(hk[:, :, None] * w[None, :, :], axis=1)  # (BB, KP, N) -> (BB, N)
        elif SPLIT == 1:
            hk = tl.load(HX + (s % 2) * B * H + rows[:, None] * H + ks[None, :], mask=k_mask, other=0.0,
                         cache_modifier=".cg")
            acc = tl.dot(hk, w, input_precision=PREC, out_dtype=ACC)  # (BB, N)
        else:
            hk = tl.load(HX + (s % 2) * B * H + rows[None, :, None] * H + ks[:, None, :], mask=k_mask,
                         other=0.0, cache_modifier=".cg")  # (S, BB, KC)
            acc = tl.sum(tl.dot(hk, w, input_precision=PREC, out_dtype=ACC), axis=0)  # (S, BB, N) -> (BB, N)
        pre = tl.reshape(acc + xw.to(ACC), (BB, U, 2, 2))  # [b, j, q // 2, q % 2]
        even, odd = tl.split(pre)  # (BB, U, 2) each: slots 0, 2 and 1, 3
        a0, a2 = tl.split(even)  # (BB, U)
        a1, a3 = tl.split(odd)
        if CELL == _CIFG:
            f = _sigmoid(a0)
            i = 1.0 - f
            g = _tanh(a1)
            a_o = a2
        else:
            if CELL == _PEEPHOLE:
                a0 += p_i * c
                a1 += p_f * c
            i = _sigmoid(a0)
            f = _sigmoid(a1)
            g = _tanh(a2)
            a_o = a3
        c_new = f * c + i * g
        if CELL == _PEEPHOLE:
            a_o += p_o * c_new
        h_new = _sigmoid(a_o) * _tanh(c_new)
        act = own & (rows < n_act)[:, None]
        c = tl.where(act, c_new, c)
        h = tl.where(act, h_new, h)
        tl.store(Y + t * y_step + s_off, tl.where(act, h_new, 0.0).to(Y.dtype.element_ty), mask=own)
        tl.store(HX + ((s + 1) % 2) * B * H + s_off, h.to(hty), mask=own)
        # grid barrier: every program has written its slice of h_t before anyone reads it.
        # Arrive with a release atomic, poll with acquire loads (ld.acquire.gpu: no
        # read-modify-write traffic on the counter, and the load that sees the count orders the
        # reads of h after it). The interpreter has no inline PTX: it polls with volatile loads
        # and orders with one acquire atomic (one L2 round trip more per step).
        tl.debug_barrier()
        tl.atomic_add(SYNC, 1, sem="release", scope="gpu")
        # the next step's projection is independent of the other programs: fetched while waiting
        # for them, and after the release (whose fence would otherwise wait for this load too)
        xw = tl.load(XW + t_next * x_step + rows[:, None] * GH + wrow[None, :], mask=x_mask, other=0.0)
        target = (s + 1) * n_prog
        spins = 0
        limit = tl.where(stalled > 0, 0, spin_limit)  # after one timeout, never wait again
        if ACQ:
            seen = _load_acquire(SYNC)
            while (seen < target) & (spins < limit):
                seen = _load_acquire(SYNC)
                spins += 1
        else:
            seen = tl.load(SYNC, volatile=True)
            while (seen < target) & (spins < limit):
                seen = tl.load(SYNC, volatile=True)
                spins += 1
            seen = tl.atomic_add(SYNC, 0, sem="acquire", scope="gpu")
        timed_out = seen < target
        stalled += timed_out.to(tl.int32)
        if timed_out:  # never on a healthy run (one branch a step, nothing per element)
            # the h read next may be another step's: every later output is garbage, so make
            # it NaN (y through c, the final states, and other programs' through this h)
            h = h + float("nan")
            c = c + float("nan")
        tl.debug_barrier()
    if stalled > 0:  # make the failure visible without a host sync
        tl.atomic_add(SYNC + 1, 1)
    tl.store(HN + s_off, h.to(HN.dtype.element_ty), mask=own)
    tl.store(CN + s_off, c.to(CN.dtype.element_ty), mask=own)


@functools.cache
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def units_per_program(H: int, sms: int) -> int:
    """The fewest hidden units a program owns (4, 8, ...) for which the grid fits one program per
    multiprocessor."""
    u = 4
    while triton.cdiv(H, u) > sms:
        u *= 2
    return u


def _plan(H: int, elem: int, device: torch.device) -> tuple[int, int, int] | None:
    """(units per program U, programs, padded K) or None when the slice does not fit on chip."""
    kp = max(16, _next_pow2(H))
    if INTERPRET or device.type != "cuda":
        u = max(4, _next_pow2(H))
        return u, 1, kp
    u = units_per_program(H, _num_sms(device.index if device.index is not None else torch.cuda.current_device()))
    if kp * 4 * u * elem > MAX_SLICE_BYTES:
        return None
    return u, triton.cdiv(H, u), kp


def _power_of_2(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1 and not v & (v - 1)


def tuning(H: int, B: int, warps: int | None = None, split: int | None = None,
           fma: bool | None = None, strict: bool = True) -> Tuning:
    """The launch for hidden size H and batch B; `warps`/`split`/`fma` override the measured choice.

    strict=False (lstm_triton.settings, which hold for every shape): more chains than this H
    has chunks of 16 rows, or the multiply-add product at B > FMA_MAX_BATCH, give way to the
    default for this shape instead of raising (values no shape takes still raise)."""
    # measured on an H100 (BENCHMARKS.md): 4 warps beat 8 at every H (by 10-27% at H=1024, with
    # 128 KB slices: 255 registers a thread and no spills), and 8 beat 16 by 1.4-1.5x; one chain
    # of mma is the only product timed so far
    warps = 4 if warps is None else warps
    split = 1 if split is None else split
    fma = False if fma is None else fma
    most = max(16, _next_pow2(H)) // 16  # each chunk of the reduction is at least one mma deep
    if not strict:
        if _power_of_2(split) and split > most:
            split = 1
        if fma is True and B > FMA_MAX_BATCH:
            fma = False
    for name, v, hi in (("warps", warps, 32), ("split", split, most)):
        if not (_power_of_2(v) and v <= hi):
            raise ValueError(f"{name}: expected a power of 2 in [1, {hi}] (H={H}), got {v!r}")
    if not isinstance(fma, bool):
        raise TypeError(f"fma: expected a bool, got {type(fma).__name__}")
    if fma and (B > FMA_MAX_BATCH or split != 1):
        raise ValueError(f"fma: the multiply-add product takes B <= {FMA_MAX_BATCH} and split=1, "
                         f"got B={B}, split={split}")
    return Tuning(warps, split, fma)


def supported(cell: str, T: int, B: int, H: int, proj: bool, cd: torch.dtype,
              device: torch.device | None = None) -> bool:
    """Whether lstm_triton.layer runs this inference here: on an NVIDIA GPU only, as the barrier
    polls with PTX (ROCm, whose GPUs torch also calls "cuda", has no ld.acquire.gpu)."""
    dev = device if device is not None else torch.device("cuda")
    if dev.type != "cuda" or torch.version.hip:
        return False
    if cell not in CELLS or proj or B > MAX_BATCH or cd == torch.float64 and not INTERPRET:
        return False
    plan = _plan(H, torch.empty((), dtype=cd).element_size(), dev)
    # the barrier's int32 counter reaches T * programs (16M steps on 132 SMs)
    return plan is not None and T * plan[1] < 2 ** 31


def forward(cell: str, x: Tensor, h0: Tensor, c0: Tensor, params: dict[str, Tensor],
            steps: tuple[int, ...] | None, reverse: bool, cd: torch.dtype, sd: torch.dtype,
            tf32: bool, tune: Tuning | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The whole layer in one launch (after the input GEMM). Returns y (T,B,H), h_T, c_T."""
    T, B, I = x.shape
    ng = get_cell(cell).num_gates
    H = params["weight_hh"].shape[0] // ng
    tune = tuning(H, B) if tune is None else tune
    dev = x.device
    u, n_prog, kp = _plan(H, torch.empty((), dtype=cd).element_size(), dev)
    w_ih = params["weight_ih"].to(cd)
    xf = x.reshape(T * B, I).to(cd)  # (T*B, I)
    if "bias_ih" in params:
        xw = torch.addmm((params["bias_ih"] + params["bias_hh"]).to(cd), xf, w_ih.t())
    else:
        xw = xf @ w_ih.t()
    w_hh = params["weight_hh"].to(cd).contiguous()
    hx = torch.empty(2, B, H, device=dev, dtype=cd)
    hx[0].copy_(h0)
    c0 = c0.to(sd).contiguous()
    y = torch.empty(T, B, H, device=dev, dtype=cd)
    hn = torch.empty(B, H, device=dev, dtype=cd)
    cn = torch.empty(B, H, device=dev, dtype=sd)
    sync = torch.zeros(2, device=dev, dtype=torch.int32)
    bs = torch.tensor(steps, device=dev, dtype=torch.int32) if steps is not None else sync
    if cell == "peephole":
        pi, pf, po = (params[n].contiguous() for n in ("weight_ci", "weight_cf", "weight_co"))
    else:
        pi = pf = po = c0
    global last_compiled
    last_compiled = _persistent_lstm_kernel[(n_prog,)](
        xw, w_hh, pi, pf, po, bs, y, hx, hn, cn, c0, sync,
        T, B, H, n_prog, SPIN_LIMIT,
        CELL=_CELL_ID[cell], NG=ng, PACKED=steps is not None, REVERSE=bool(reverse),
        BB=_next_pow2(B) if tune.fma else 16, KP=kp, U=u, SPLIT=tune.split, FMA=tune.fma, ACC=_acc_dtype(cd),
        PREC="tf32" if tf32 else "ieee",
        ACQ=not INTERPRET, num_warps=tune.warps,
    )
    global last_sync
    last_sync = sync  # [arrivals, timeouts]: the tests read it; no host sync here
    return y, hn, cn
