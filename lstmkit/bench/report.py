"""`lstmkit bench` output: a markdown report, the JSON of every sample, and a PNG of the ratios."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

from lstmkit.bench.harness import MODES, BenchResult, Measurement, cpu_peak_size
from lstmkit.bench.impls import Shape
from lstmkit.utils.checkpoint import atomic_write_bytes

# The bars: lstmkit time / nn.LSTM time (standard cell, 2 threads, both modes) by kind
# of shape, and for the variants (fwd+bwd) against nn.LSTM's standard cell, at the shapes
# only (a bar set for one shape says nothing about another, e.g. a one-step T=1 call).
CPU_BAR_SHAPES = (
    "T100,B32,I128,H256", "T50,B128,I256,H512", "T35,B32,I28,H256", "T100,B1,I64,H256",
    "T100,B32,I128,H256,packed", "T100,B32,I128,H256,P128",
)
BAR_STANDARD = 1.10
BAR_BATCH1 = 0.70
BAR_NO_ONEDNN = 0.60  # PackedSequence and proj_size, where nn.LSTM loses oneDNN
BAR_VARIANT = 1.25
BAR_THREADS = 2
# GPU (issue 7), against cuDNN: training (fwd+bwd) of the standard cell and of the variants at the
# issue's two training shapes, and inference latency of the persistent kernel at B <= 8 (at least
# 3x lower than cuDNN's).
GPU_TRAIN_SHAPES = ("T100,B64,I512,H512", "T50,B128,I256,H1024")
GPU_BAR_STANDARD = 1.10
GPU_BAR_VARIANT = 1.30
GPU_BAR_PERSISTENT = 1 / 3
GPU_PERSISTENT_MAX_B = 8


def _key(m: Measurement) -> tuple[str, str, int, str]:
    return (m.impl, m.shape, m.threads, m.mode)


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def _cell(m: Measurement | None) -> str:
    if m is None:
        return "-"
    ratio = f"{m.ratio:.2f}x" if m.ratio is not None else "n/a"
    ms = f"{m.median_ms:.3g}" if m.median_ms < 100 else f"{m.median_ms:.0f}"
    return f"{ratio} · {ms} ms · {m.gflops:.3g} ({100 * m.peak_fraction:.0f}%)"


def _peaks(start: dict[int, float], end: dict[int, float]) -> str:
    return ", ".join(f"{v:.0f} GFLOP/s with {k} thread{'s' if k > 1 else ''}"
                     f" ({end.get(k, float('nan')):.0f} at the end)" for k, v in start.items())


def bar_threads(result: BenchResult) -> int:
    """The bars are for 2 threads; a run without 2 threads is judged at its largest count."""
    return BAR_THREADS if BAR_THREADS in result.peak_gflops else max(result.peak_gflops, default=0)


def _gpu_bar(m: Measurement) -> float | None:
    shape = Shape.parse(m.shape)
    if m.mode == "fwd+bwd" and m.shape in GPU_TRAIN_SHAPES and m.impl.startswith("lstmkit-triton") \
            and m.impl != "lstmkit-triton-no-graphs":
        return GPU_BAR_STANDARD if m.cell == "lstm" else GPU_BAR_VARIANT
    if m.mode == "fwd" and m.impl == "lstmkit-triton" and shape.plain and shape.B <= GPU_PERSISTENT_MAX_B:
        return GPU_BAR_PERSISTENT
    return None


def bar_rows(result: BenchResult) -> list[tuple[str, str, str, float, float, bool]]:
    """(impl, shape, mode, ratio, limit, met) for every fast lstmkit measurement a bar applies to."""
    if result.device == "cuda":
        rows = []
        for m in result.measurements:
            limit = _gpu_bar(m) if m.ratio is not None else None
            if limit is not None:
                rows.append((m.impl, m.shape, m.mode, m.ratio, limit, m.ratio <= limit))
        return rows
    threads = bar_threads(result)
    rows = []
    for m in result.measurements:
        if not m.impl.startswith("lstmkit-") or m.impl.startswith("lstmkit-reference") \
                or m.threads != threads or m.ratio is None or m.shape not in CPU_BAR_SHAPES:
            continue
        shape = Shape.parse(m.shape)
        if m.cell != "lstm":
            if m.mode != "fwd+bwd":
                continue
            limit = BAR_VARIANT
        elif not shape.plain:
            limit = BAR_NO_ONEDNN
        elif shape.B == 1:
            limit = BAR_BATCH1
        else:
            limit = BAR_STANDARD
        rows.append((m.impl, m.shape, m.mode, m.ratio, limit, m.ratio <= limit))
    return rows


def markdown(result: BenchResult, command: str) -> str:
    ms = result.measurements
    by_key = {_key(m): m for m in ms}
    shapes = _ordered(m.shape for m in ms)
    impls = [name for name in result.impls if any(m.impl == name for m in ms)]
    c = result.config
    out = [f"`{command}`", ""]
    fewer = (f" (down to 3 for an implementation whose samples would take over {c.get('max_impl_s')} s)"
             if c.get("repeats", 0) > 3 else "")
    warmups = [m.warmup_calls for m in ms] or [c.get("warmup")]
    fewer_warmups = (f" (down to {min(warmups)} for an implementation whose warm-up took over half of "
                     f"{c.get('max_impl_s')} s)" if min(warmups) != max(warmups) else "")
    out.append(f"{c.get('date', '')}, {c.get('machine', '')}, torch {c.get('torch', '')}, "
               f"medians of {c.get('repeats')} interleaved repetitions{fewer} after {max(warmups)} warm-up "
               f"call(s){fewer_warmups}, load average {c.get('loadavg_start', '?')} at the start and "
               f"{c.get('loadavg_end', '?')} at the end.")
    gpu = result.device == "cuda"
    n = c.get("peak_size", 2048)
    if gpu:
        peaks = ", ".join(f"{v:.0f} GFLOP/s ({result.peak_gflops_end.get(k, float('nan')):.0f} at the end)"
                          for k, v in result.peak_gflops.items())
        out.append(f"GPU: {c.get('gpu', '?')}. GEMM peak in this run (torch.mm {n}x{n} fp32 on the GPU, TF32 as "
                   f"cuDNN's RNN uses it, before the shapes and after them): {peaks}.")
        if result.cpu_peak_gflops:
            size = cpu_peak_size(n)
            out.append(f"CPU rows (`cpu:`) ran on the same case in host memory; their percent is of the CPU's GEMM "
                       f"peak ({size}x{size} fp32, the faster of torch.mm and oneDNN, before the shapes and after them): "
                       f"{_peaks(result.cpu_peak_gflops, result.cpu_peak_gflops_end)}.")
    else:
        out.append(f"GEMM peak in this run ({n}x{n} fp32, the faster of torch.mm's sgemm and oneDNN's, before the "
                   "shapes and after them): "
                   f"{_peaks(result.peak_gflops, result.peak_gflops_end)}.")
    if ms:
        spreads = [m.spread for m in ms]
        out.append(f"Noise: the interquartile range of the repetitions is {100 * statistics.median(spreads):.0f}% "
                   f"of the median for the typical measurement, {100 * max(spreads):.0f}% at worst.")
    baseline = "nn.LSTM on the GPU (cuDNN)" if gpu else "nn.LSTM (oneDNN on)"
    out += ["", f"Each cell: time ratio to {baseline} at the same shape, threads and mode · median "
            "time per call · GFLOP/s of the matrix products (percent of the GEMM peak) (lstmkit.costs: forward 2·rows·(I+R)·G·H "
            "(+2·rows·H·P), fwd+bwd 3x that less 2·B·R·G·H, as h_0 needs no gradient). `fwd` runs under "
            "torch.no_grad(); `fwd+bwd` also computes dX and every weight gradient. Shapes: T steps, B batch, "
            "I input, H hidden; `packed`: a PackedSequence of random sorted lengths (longest T); `P`: proj_size.", ""]
    for threads in result.peak_gflops:
        for mode in MODES:
            if not any(m.threads == threads and m.mode == mode for m in ms):
                continue
            where = "GPU" if gpu else f"{threads} thread{'s' if threads > 1 else ''}"
            out.append(f"### {mode}, {where}")
            out.append("")
            out.append("| implementation | " + " | ".join(shapes) + " |")
            out.append("|---|" + "---|" * len(shapes))
            for impl in impls:
                cells = [_cell(by_key.get((impl, s, threads, mode))) for s in shapes]
                if any(x != "-" for x in cells):
                    out.append(f"| {impl} | " + " | ".join(cells) + " |")
            out.append("")
    bars = bar_rows(result)
    if bars:
        if gpu:
            out.append("### The GPU bars (lstmkit time / cuDNN time: training of every cell at "
                       f"{' and '.join(GPU_TRAIN_SHAPES)}; inference latency of the persistent kernel at "
                       f"B <= {GPU_PERSISTENT_MAX_B}, at least 3x lower)")
        else:
            n = bar_threads(result)
            note = "" if n == BAR_THREADS else f"; the bars are set for {BAR_THREADS} threads, judged here at the largest count run"
            out.append(f"### The issue's bars ({n} thread{'s' if n > 1 else ''}; lstmkit time / nn.LSTM time{note})")
        out.append("")
        out.append("| implementation | shape | mode | ratio | bar | met |")
        out.append("|---|---|---|---|---|---|")
        for impl, shape, mode, ratio, limit, met in bars:
            out.append(f"| {impl} | {shape} | {mode} | {ratio:.2f} | <= {limit:.2f} | {'yes' if met else '**no**'} |")
        out.append("")
    if result.data_path:
        out.append("### Data path: training steps fed from host memory (`lstmkit.data.prefetch.CUDAPrefetcher`)")
        out.append("")
        out.append("| shape | host-to-device copy | ms per step | ratio |")
        out.append("|---|---|---|---|")
        for r in result.data_path:
            out.append(f"| {r['shape']} | {r['way']} | {r['ms_per_step']:.3g} | {r['ratio']:.2f} |")
        out.append("")
    if result.unavailable:
        out.append("Not run: " + "; ".join(f"{k} ({v})" for k, v in result.unavailable.items()) + ".")
    if result.errors:
        out.append("Errors: " + "; ".join(f"{k}: {v}" for k, v in result.errors.items()) + ".")
    out.append("Implementations: " + "; ".join(f"`{k}` {v}" for k, v in result.impls.items()) + ".")
    return "\n".join(out).rstrip() + "\n"


def plot(result: BenchResult) -> bytes:
    """A PNG: ratio to nn.LSTM per implementation (bars) per shape (groups), one panel per threads x mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in result.measurements if m.ratio is not None]
    panels = [(t, mode) for t in result.peak_gflops for mode in MODES
              if any(m.threads == t and m.mode == mode for m in ms)]
    shapes = _ordered(m.shape for m in ms)
    impls = [name for name in result.impls if any(m.impl == name for m in ms)]
    by_key = {_key(m): m for m in ms}
    fig, axes = plt.subplots(max(1, len(panels)), 1, figsize=(max(8.0, 1.6 * len(shapes) + 4), 3.6 * max(1, len(panels))),
                             squeeze=False)
    cmap = plt.get_cmap("tab20")
    width = 0.8 / max(1, len(impls))
    for ax, (threads, mode) in zip(axes[:, 0], panels):
        for k, impl in enumerate(impls):
            xs, ys = [], []
            for j, s in enumerate(shapes):
                m = by_key.get((impl, s, threads, mode))
                if m is not None:
                    xs.append(j - 0.4 + (k + 0.5) * width)
                    ys.append(m.ratio)
            ax.bar(xs, ys, width, label=impl, color=cmap(k % 20))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels([s.replace(",", " ") for s in shapes], fontsize=8)
        ax.set_ylabel("time / nn.LSTM (cuDNN)" if result.device == "cuda" else "time / nn.LSTM")
        where = "GPU" if result.device == "cuda" else f"{threads} thread{'s' if threads > 1 else ''}"
        ax.set_title(f"{mode}, {where}", fontsize=10)
    if panels:
        axes[0, 0].legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110)
    finally:
        plt.close(fig)
    return png.getvalue()


def write(result: BenchResult, out_dir: Path, command: str) -> str:
    """Write bench.md, bench.json and bench.png under `out_dir`; return the markdown.

    All three are rendered before the first is written, so a failing plot leaves the previous
    run's files as they were, not a mix of two runs.
    """
    text = markdown(result, command)
    files = {"bench.md": text.encode(), "bench.json": (json.dumps(result.to_json(), indent=1) + "\n").encode(),
             "bench.png": plot(result)}
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)
    return text
