"""Timing: every implementation of a (shape, threads, mode) group interleaved, medians of repeats.

For each thread count the GEMM peak is measured first (`measure_peak`: two n x n fp32 matrices,
the faster of torch.mm's sgemm and oneDNN's on a CPU).
Then, for each shape and mode, every runner is warmed up, and the timed repetitions go round
robin over the implementations (the starting implementation rotates each repetition), so a
noisy neighbour on the shared machine hits all of them alike. A sample is the mean of `number`
calls, with `number` chosen from the last warm-up call so that a sample lasts at least
`min_sample_s` (hence at least one warm-up call).
An implementation much slower than the rest gets fewer repetitions (at least 3) once its timed
samples would pass `max_impl_s`, and less warm-up: its ratio does not need the precision.

Modes: "fwd" runs under `torch.no_grad()` (inference); "fwd+bwd" runs the forward with autograd
and then `torch.autograd.grad` of the output against a fixed gradient for the input and every
parameter (dX and all weight gradients).

On a GPU every call ends with `torch.cuda.synchronize()`, so a sample is the latency of whole
calls, and the peak is torch.mm's on that GPU (fp32, with TF32 exactly when cuDNN's RNN uses it);
the CPU rows (`cpu:`) are measured against the CPU's GEMM peak at the same thread count.
`time_data_path` measures what overlapping host-to-device copies (`CUDAPrefetcher`) saves.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Callable

import torch

from lstmkit import costs
from lstmkit.bench.impls import BASELINE, Case, Impl, Runner, Shape, make_case
from lstmkit.kernels import onednn
from lstmkit.utils.options import check_seed, check_threads

MODES = ("fwd", "fwd+bwd")
# The CPU's GEMM peak in a GPU run: 2048 already saturates a CPU, and the GPU's 8192 would take
# seconds per call there.
CPU_PEAK_SIZE = 2048


def cpu_peak_size(peak_size: int) -> int:
    return min(peak_size, CPU_PEAK_SIZE)


def check_plan(shapes: list[Shape], threads: list[int], modes: list[str], repeats: int, flags: bool = False) -> None:
    """Refuse a run that would time something twice, or nothing: a repeated shape, thread count or
    mode (the report keeps one measurement per cell, and a second peak replaces the first), a mode
    not in MODES, or repeats < 1. Errors name the arguments, as flags with `flags`."""
    dashes = "--" if flags else ""
    for arg, values in (("shapes", [s.label for s in shapes]), ("threads", threads), ("modes", modes)):
        if not values:
            raise ValueError(f"{dashes}{arg}: expected at least one, got none")
        twice = next((v for k, v in enumerate(values) if v in values[:k]), None)
        if twice is not None:
            raise ValueError(f"{dashes}{arg}: {twice} given twice; each is timed once")
    check_threads(f"{dashes}threads", threads)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"{dashes}modes: expected some of {list(MODES)}, got {unknown[0]!r}")
    check_count(f"{dashes}repeats", repeats)


def check_warmup(name: str, value: object) -> None:
    check_count(name, value, " (the last warm-up call also sizes the samples)")


def check_count(name: str, value: object, why: str = "") -> None:
    """A ValueError naming `name` unless `value` is an int >= 1 (a command-line count: never a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1{why}, got {value!r}")


@dataclass
class Measurement:
    impl: str
    cell: str
    shape: str
    mode: str
    threads: int  # CPU threads (of the CPU rows, on a GPU run)
    number: int  # calls per sample
    times_ms: list[float]  # one per repetition, ms per call
    gemm_flops: int  # GEMM FLOPs of one call, from lstmkit.costs
    warmup_calls: int = 0  # untimed calls made (fewer than asked for a slow implementation)
    median_ms: float = 0.0
    spread: float = 0.0  # interquartile range / median
    gflops: float = 0.0
    peak_fraction: float = 0.0  # gflops / its device's GEMM peak at this thread count (the better of start and end)
    ratio: float | None = None  # median / nn.LSTM's median, same shape, threads and mode

    def finish(self, peak_gflops: float) -> None:
        self.median_ms = statistics.median(self.times_ms)
        if len(self.times_ms) >= 2:
            q = statistics.quantiles(self.times_ms, n=4, method="inclusive")
            self.spread = (q[2] - q[0]) / self.median_ms
        self.gflops = self.gemm_flops / (self.median_ms * 1e-3) / 1e9
        self.peak_fraction = self.gflops / peak_gflops if peak_gflops else 0.0


@dataclass
class BenchResult:
    measurements: list[Measurement] = field(default_factory=list)
    peak_gflops: dict[int, float] = field(default_factory=dict)  # threads -> GFLOP/s, before the shapes
    peak_gflops_end: dict[int, float] = field(default_factory=dict)  # threads -> GFLOP/s, after them
    cpu_peak_gflops: dict[int, float] = field(default_factory=dict)  # the CPU's, for the CPU rows of a GPU run
    cpu_peak_gflops_end: dict[int, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # "impl @ shape mode threads" -> message
    unavailable: dict[str, str] = field(default_factory=dict)  # impl -> why it did not run
    impls: dict[str, str] = field(default_factory=dict)  # impl -> description
    config: dict = field(default_factory=dict)
    device: str = "cpu"  # where the baseline ran
    data_path: list[dict] = field(default_factory=list)  # time_data_path's rows (GPU runs)

    def to_json(self) -> dict:
        return {
            "config": self.config,
            "device": self.device,
            "data_path": self.data_path,
            "peak_gflops": {str(k): v for k, v in self.peak_gflops.items()},
            "peak_gflops_end": {str(k): v for k, v in self.peak_gflops_end.items()},
            "cpu_peak_gflops": {str(k): v for k, v in self.cpu_peak_gflops.items()},
            "cpu_peak_gflops_end": {str(k): v for k, v in self.cpu_peak_gflops_end.items()},
            "impls": self.impls,
            "unavailable": self.unavailable,
            "errors": self.errors,
            "measurements": [asdict(m) for m in self.measurements],
        }


def measure_peak(size: int, device: str = "cpu") -> float:
    """The GEMM peak in GFLOP/s: an n x n by n x n fp32 product, the fastest of five calls, by the
    faster of the GEMMs torch has here. CPU: torch.mm (MKL's sgemm on x86) and oneDNN's, which
    nn.LSTM and lstmkit's kernels multiply with (on Zen 4 it is ~15% faster, so against sgemm
    alone those read above 100%), at the current thread count. GPU: torch.mm, with TF32 as
    cuDNN's RNN would use it."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    gemms = [lambda: torch.mm(a, b, out=out)]
    if device == "cpu" and onednn.LINEAR is not None:
        b_t = b.t()  # linear multiplies by its weight's transpose: this is a @ b, read in place
        gemms.append(lambda: onednn.linear(a, b_t))
    best = math.inf
    with _rnn_matmul_precision(device):
        for gemm in gemms:
            gemm()
            for _ in range(5):
                _sync(device)
                t0 = time.perf_counter()
                gemm()
                _sync(device)
                best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rnn_matmul_precision(device: str):
    """GPU: torch.mm at the precision cuDNN's RNN uses (TF32 by default); CPU: as it is."""
    if device != "cuda":
        return contextlib.nullcontext()
    try:
        from lstmkit.kernels.lstm_triton import _matmul_precision, rnn_allows_tf32
    except ImportError:  # no triton: torch's own setting
        return contextlib.nullcontext()
    return _matmul_precision(rnn_allows_tf32())


def gemm_flops(case: Case, impl: Impl, mode: str) -> int:
    """GEMM FLOPs of one call: forward, or forward + backward (about 3x: see lstmkit.costs), over
    the case's sequences."""
    s = case.shape
    flops = costs.packed_flops(costs.RNNConfig(s.I, s.H, cell=impl.cell, proj_size=s.P), case.lengths)
    return flops.forward_gemm + (flops.backward_gemm if mode == "fwd+bwd" else 0)


def _call(case: Case, runner: Runner, mode: str) -> Callable[[], None]:
    device = case.x.device.type
    if mode == "fwd":
        x = case.x

        def fwd() -> None:
            with runner.context(), torch.no_grad():
                runner.forward(x)
            _sync(device)
        return fwd

    x = case.x.clone().requires_grad_()
    inputs = [x, *runner.params]

    def fwd_bwd() -> None:
        with runner.context():
            y = runner.forward(x)
            torch.autograd.grad(y, inputs, case.grad_out)
        _sync(device)
    return fwd_bwd


def run_bench(
    impls: list[Impl],
    shapes: list[Shape],
    threads: list[int],
    modes: list[str],
    repeats: int,
    warmup: int,
    min_sample_s: float = 0.01,
    max_impl_s: float = 8.0,
    peak_size: int = 2048,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
    device: str = "cpu",
) -> BenchResult:
    """Time every implementation that supports each shape; see the module docstring."""
    check_plan(shapes, threads, modes, repeats)
    check_warmup("warmup", warmup)
    check_seed("seed", seed)
    result = BenchResult(impls={i.name: i.description for i in impls}, device=device)
    on_host = {i.name for i in impls if i.device == "cpu"} if device != "cpu" else set()

    def best_peak(m: Measurement) -> float:  # the better of start and end: load only lowers a peak
        start, end = ((result.cpu_peak_gflops, result.cpu_peak_gflops_end) if m.impl in on_host
                      else (result.peak_gflops, result.peak_gflops_end))
        return max(start[m.threads], end.get(m.threads, 0.0))

    def measure_peaks(n: int, at_end: bool) -> None:
        peaks, cpu_peaks, when = ((result.peak_gflops_end, result.cpu_peak_gflops_end, " at the end") if at_end
                                  else (result.peak_gflops, result.cpu_peak_gflops, ""))
        peaks[n] = measure_peak(peak_size, device=device)
        log(f"threads={n}: {device} GEMM peak {peaks[n]:.1f} GFLOP/s{when}")
        if on_host:
            cpu_peaks[n] = measure_peak(cpu_peak_size(peak_size))
            log(f"threads={n}: cpu GEMM peak {cpu_peaks[n]:.1f} GFLOP/s{when}")

    saved_threads = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            measure_peaks(n, at_end=False)
            for shape in shapes:
                cases = {"": make_case(shape, seed, device)}
                if on_host:
                    cases["cpu"] = make_case(shape, seed)
                runners: dict[str, tuple[Impl, Runner]] = {}
                for impl in impls:
                    if not impl.supports(shape):
                        continue
                    try:
                        runners[impl.name] = (impl, impl.build(cases.get(impl.device, cases[""])))
                    except Exception as e:  # noqa: BLE001 (one failing implementation must not end the run)
                        result.errors[f"{impl.name} @ {shape.label} threads={n}"] = f"build: {type(e).__name__}: {e}"
                for mode in modes:
                    t0 = time.perf_counter()
                    group = _time_group(cases, runners, mode, n, repeats, warmup, min_sample_s, max_impl_s,
                                        result)
                    for m in group:
                        m.finish(best_peak(m))
                    base = next((m for m in group if m.impl == BASELINE), None)
                    for m in group:
                        m.ratio = m.median_ms / base.median_ms if base else None
                    result.measurements += group
                    log(f"  {shape.label} {mode} ({time.perf_counter() - t0:.1f} s): " + ", ".join(
                        f"{m.impl} {m.median_ms:.3g} ms" for m in group))
            measure_peaks(n, at_end=True)
            for m in result.measurements:
                if m.threads == n:
                    m.finish(best_peak(m))
    finally:
        torch.set_num_threads(saved_threads)
    return result


def _time_group(cases: dict[str, Case], runners: dict[str, tuple[Impl, Runner]], mode: str, threads: int,
                repeats: int, warmup: int, min_sample_s: float, max_impl_s: float,
                result: BenchResult) -> list[Measurement]:
    """cases: the run's case under "", and its host copy under "cpu" in a GPU run with CPU rows."""
    case = cases[""]
    calls: dict[str, Callable[[], None]] = {}
    numbers: dict[str, int] = {}
    counts: dict[str, int] = {}
    warmups: dict[str, int] = {}
    for name, (impl, runner) in runners.items():
        if mode not in impl.modes:
            continue
        try:
            call = _call(cases.get(impl.device, case), runner, mode)
            elapsed = spent = 0.0
            warmups[name] = 0
            for _ in range(warmup):
                t0 = time.perf_counter()
                call()
                elapsed = time.perf_counter() - t0
                spent += elapsed
                warmups[name] += 1
                if spent > max_impl_s / 2:
                    break
        except Exception as e:  # noqa: BLE001
            result.errors[f"{name} @ {case.shape.label} {mode} threads={threads}"] = f"{type(e).__name__}: {e}"
            continue
        calls[name] = call
        numbers[name] = max(1, math.ceil(min_sample_s / max(elapsed, 1e-9)))
        affordable = int(max_impl_s / max(elapsed * numbers[name], 1e-9))
        counts[name] = max(min(3, repeats), min(repeats, affordable))
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    gc.collect()
    gc.disable()
    try:
        for rep in range(repeats):
            k = rep % len(order) if order else 0
            for name in order[k:] + order[:k]:  # round robin, rotating the first
                if len(times[name]) >= counts[name]:
                    continue
                call, number = calls[name], numbers[name]
                t0 = time.perf_counter()
                for _ in range(number):
                    call()
                times[name].append((time.perf_counter() - t0) / number * 1e3)
    finally:
        gc.enable()
    return [Measurement(name, runners[name][0].cell, case.shape.label, mode, threads, numbers[name], times[name],
                        gemm_flops(case, runners[name][0], mode), warmup_calls=warmups[name]) for name in calls]


def time_data_path(shape: Shape, repeats: int, log: Callable[[str], None]) -> list[dict]:
    """Training steps fed from host memory: each batch copied when it is needed (`.to(device)`,
    which waits for the copy) against `CUDAPrefetcher` (pinned, on a side stream, one batch ahead).

    The model is `lstmkit.LSTM(backend="auto")` (what `lstmkit train` builds); a step is forward,
    backward and an SGD update. Returns one row per way: ms per step (median over `repeats`
    passes over 8 host batches) and the ratio to the synchronous copy.
    """
    import lstmkit
    from lstmkit.data.prefetch import CUDAPrefetcher

    device, batches = "cuda", 8
    torch.manual_seed(0)
    model = lstmkit.LSTM(shape.I, shape.H, backend="auto").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    host = [(torch.randn(shape.T, shape.B, shape.I), torch.randn(shape.T, shape.B, shape.H)) for _ in range(batches)]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        out, _ = model(x)
        loss = torch.nn.functional.mse_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def synchronous() -> None:
        for x, y in host:
            step(x.to(device), y.to(device))

    def prefetched() -> None:
        for x, y in CUDAPrefetcher(host, device):
            step(x, y)

    ways = {"copy when needed (.to)": synchronous, "CUDAPrefetcher": prefetched}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for fn in ways.values():  # warm-up: compilation, graph capture, allocator
        fn()
        fn()
    for _ in range(repeats):
        for name, fn in ways.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / batches * 1e3)
    base = statistics.median(times["copy when needed (.to)"])
    rows = [{"shape": shape.label, "way": k, "ms_per_step": statistics.median(v),
             "ratio": statistics.median(v) / base} for k, v in times.items()]
    log("  data path " + ", ".join(f"{r['way']} {r['ms_per_step']:.3g} ms/step" for r in rows))
    return rows
