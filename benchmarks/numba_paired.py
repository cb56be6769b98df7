"""Time ratio lstmkit.LSTM(backend="numba") / torch.nn.LSTM, interleaved in one process.

usage: NT=2 python benchmarks/numba_paired.py REPS CELLS SHAPES MODE [dx]
  CELLS: comma list of lstmkit cells (each timed against nn.LSTM's standard cell)
  SHAPES: letters of SHAPES below; MODE: plain | packed (PackedSequence, lengths U[T/2, T],
  unsorted) | proj (proj_size = H/2); dx: the input needs its gradient too (as in `lstmkit bench`).
fwd = forward under torch.no_grad(); fwd+bwd = forward then .sum().backward() (gradients of
all parameters, and of the input with dx). Prints, over REPS interleaved repetitions: the median
of the per-repetition ratios ("paired"), the ratio of the minima and the ratio of the medians;
and the load average.
"""
import argparse
import os
import statistics
import time

import torch

import lstmkit

SHAPES = {"a": (100, 32, 128, 256), "b": (50, 128, 256, 512), "c": (35, 32, 28, 256), "d": (100, 1, 64, 256)}
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("reps", type=int, nargs="?", default=15, help="interleaved repetitions (default 15)")
parser.add_argument("cells", nargs="?", default="lstm", help="comma list of lstmkit cells (default lstm)")
parser.add_argument("shapes", nargs="?", default="abcd",
                    help="letters of " + ", ".join(f"{k}={v}" for k, v in SHAPES.items()) + " (T, B, I, H)")
parser.add_argument("mode", nargs="?", default="plain", choices=["plain", "packed", "proj"])
parser.add_argument("dx", nargs="?", choices=["dx"], help="the input needs its gradient too")
args = parser.parse_args()
if args.reps < 1:
    parser.error(f"reps: expected >= 1, got {args.reps}")
if not args.shapes or set(args.shapes) - set(SHAPES):
    parser.error(f"shapes: expected letters of {''.join(SHAPES)}, got {args.shapes!r}")
torch.set_num_threads(int(os.environ.get("NT", "2")))
reps, cells, shapes, mode, input_grad = args.reps, args.cells.split(","), args.shapes, args.mode, bool(args.dx)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


for key in shapes:
    T, B, I, H = SHAPES[key]
    torch.manual_seed(0)
    proj = H // 2 if mode == "proj" else 0
    ref = torch.nn.LSTM(I, H, proj_size=proj)
    x = torch.randn(T, B, I)
    if mode == "packed":
        lengths = torch.randint(T // 2, T + 1, (B,))
        lengths[0] = T
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        # its data as the leaf: a packing op in the graph would be freed by the first backward
        inp = packed._replace(data=packed.data.requires_grad_(input_grad))
    else:
        inp = x.requires_grad_(input_grad)
    mods = {"nn": ref}
    for cell in cells:
        m = lstmkit.LSTM(I, H, proj_size=proj, cell=cell, backend="numba")
        if cell == "lstm":
            m.load_state_dict(ref.state_dict())
        mods[cell] = m

    def fwd(m):
        with torch.no_grad():
            m(inp)

    def fwdbwd(m):
        out, _ = m(inp)
        (out.data if mode == "packed" else out).sum().backward()

    for m in mods.values():  # warm-up (and compile)
        fwd(m), fwdbwd(m), fwd(m), fwdbwd(m)
    times = {(n, k): [] for n in mods for k in ("fwd", "fwdbwd")}
    for _ in range(reps):
        for n, m in mods.items():
            times[(n, "fwd")].append(timed(lambda: fwd(m)))
            times[(n, "fwdbwd")].append(timed(lambda: fwdbwd(m)))
    load = open("/proc/loadavg").read().split()[0]
    label = f"{mode}{' dx' if input_grad else ''} T{T} B{B} I{I} H{H}" + (f" P{proj}" if proj else "")
    line = f"[paired load {load}] {label}:"
    for cell in cells:  # median over repetitions of (ours / nn.LSTM in the same repetition)
        rf = statistics.median(a / b for a, b in zip(times[cell, "fwd"], times["nn", "fwd"]))
        rb = statistics.median(a / b for a, b in zip(times[cell, "fwdbwd"], times["nn", "fwdbwd"]))
        line += f" {cell} {rf:.2f} / {rb:.2f}"
    print(line, flush=True)
    for stat in ("min", "median"):
        v = {k: (min(t) if stat == "min" else statistics.median(t)) for k, t in times.items()}
        line = f"[{stat:6s} load {load}] {label}: nn {v['nn', 'fwd'] * 1e3:.2f} / {v['nn', 'fwdbwd'] * 1e3:.2f} ms |"
        for cell in cells:
            line += f" {cell} {v[cell, 'fwd'] / v['nn', 'fwd']:.2f} / {v[cell, 'fwdbwd'] / v['nn', 'fwdbwd']:.2f}"
        print(line, flush=True)
