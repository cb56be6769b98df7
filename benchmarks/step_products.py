"""The numba kernels' per-step products alone, on one thread, float32 (GFLOP/s, us per call).

usage: python benchmarks/step_products.py [REPEATS]

1. oneDNN's brgemm, C(M, N) += A(M, K) B(K, N), with B row-major (one call) against B laid out
   as 32-, 64- and 128-column panels (one call per panel; `lstmkit.kernels.panels`), at the
   shapes one thread meets per step: (16, 1024, 256) at (T, B, H) = (35 or 100, 32, 256) forward,
   (64, 2048, 512) and (64, 512, 2048) at (50, 128, 512) forward and backward, and H=1024.
2. The few-row product of the B <= 4 path (`_small_gates`, eight rows of W_hh per pass) for one
   row, over slices of W_hh (H=256) of 128, 512 and 1024 gate columns, against a plain sum over
   the same bytes (the rate at which this core's caches deliver them): the product is bound by
   reading the slice. 512 columns is what each of 2 threads streams per step at B=1, H=256.
Prints markdown tables; each figure is the median of REPEATS timings.
"""
import argparse
import statistics
import sys
import time

import numpy as np
import torch
from numba import njit

from lstmkit.kernels import lstm_numba_cells as K
from lstmkit.kernels.panels import _layout

torch.set_num_threads(1)


@njit(**K.JIT)
def _row_major(fn, a, b, c, reps):
    m, k = a.shape
    n = b.shape[1]
    for _ in range(reps):
        K.brgemm(fn, m, n, k, K.eptr(a, 0), k, K.eptr(b, 0), n, K.eptr(c, 0), n, True)


@njit(**K.JIT)
def _panels(fn, a, bp, c, reps):
    m, k = a.shape
    n = c.shape[1]
    for _ in range(reps):
        K.brgemm_panels(fn, m, n, k, K.eptr(a, 0), k, bp, 0, 0, c, 0, n, True)


@njit(cache=True, fastmath=True)
def _read(w, out, reps):
    """The sum of w (1-D): the rate at which reading alone goes."""
    for _ in range(reps):
        s = np.float32(0)
        for j in range(w.shape[0]):
            s += w[j]
        out[0, 0] = s


@njit(**K.JIT)
def _few_rows(whh, rows, m, h, out, reps):
    for _ in range(reps):  # rows empty: W_hh's rows are the gate columns
        K._small_gates(whh, rows, 0, m, whh.shape[1], h, 1, out, 0.0)


def per_call(repeats: int, fn, *args) -> float:
    """Median seconds per call over `repeats` timings of enough calls to last ~20 ms."""
    fn(*args, 2)
    t0 = time.perf_counter()
    fn(*args, 5)
    reps = max(5, int(0.02 / max((time.perf_counter() - t0) / 5, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, reps)
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repeats", type=int, nargs="?", default=7, help="timings per figure, median taken (default 7)")
    repeats = parser.parse_args().repeats
    if repeats < 1:
        parser.error(f"repeats: expected >= 1, got {repeats}")
    if not K.BRGEMM:
        sys.exit("torch exports no at::native::cpublas::brgemm: nothing to measure")
    rng = np.random.default_rng(0)
    print("| (M, N, K) | B row-major | 32-column panels | 64-column panels | 128-column panels |")
    print("|---|---|---|---|---|")
    for m, n, k in ((16, 1024, 256), (64, 2048, 512), (64, 512, 2048), (32, 4096, 1024), (32, 1024, 4096)):
        a = rng.standard_normal((m, k), np.float32)
        b = rng.standard_normal((k, n), np.float32)
        c = np.zeros((m, n), np.float32)
        row = [per_call(repeats, _row_major, K.BRGEMM, a, b, c)]
        for width in (32, 64, 128):
            row.append(per_call(repeats, _panels, K.BRGEMM, a, _layout(torch.from_numpy(b), width).numpy(), c))
        print(f"| ({m}, {n}, {k}) | " + " | ".join(f"{2 * m * n * k / s / 1e9:.0f}" for s in row) + " |")
    print()
    H = 256
    whh = rng.standard_normal((4 * H, H), np.float32)
    h = rng.standard_normal((1, H), np.float32)
    out = np.zeros((1, 4 * H), np.float32)
    print("| few-row product, 1 row: W_hh columns (KB) | us per call | GB/s of W_hh read | plain sum: us | GB/s |")
    print("|---|---|---|---|---|")
    for cols in (128, 512, 1024):
        s = per_call(repeats, _few_rows, whh, np.zeros(0, np.int64), cols, h, out)
        r = per_call(repeats, _read, whh[:cols].ravel(), out)  # the same bytes
        print(f"| {cols} ({cols * H * 4 // 1024}) | {s * 1e6:.2f} | {cols * H * 4 / s / 1e9:.0f} "
              f"| {r * 1e6:.2f} | {cols * H * 4 / r / 1e9:.0f} |")


if __name__ == "__main__":
    main()
