"""`lstmkit bench`: time every LSTM implementation against torch.nn.LSTM in one process."""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from lstmkit.bench import harness, report
from lstmkit.bench.impls import BASELINE, Shape, gpu_registry, registry
from lstmkit.utils.options import check_number, check_seed
from lstmkit.utils.runs import new_run_dir, removed_if_empty_on_failure

HELP = ("Time every LSTM implementation (loops, TorchScript, torch.compile, nn.LSTM with and without "
        "oneDNN, each lstmkit backend and cell) side by side: ratios to nn.LSTM, GFLOP/s, a table and a plot.")

DEFAULT_SHAPES = report.CPU_BAR_SHAPES
QUICK_SHAPES = ("T5,B3,I4,H8", "T5,B3,I4,H8,packed", "T5,B3,I4,H8,P3")
# (full, --quick) values of the options left unset.
PRESETS = {
    "shapes": (DEFAULT_SHAPES, QUICK_SHAPES),
    "threads": ([1, 2], [1]),
    "repeats": (7, 2),
    "warmup": (3, 1),
    "min_sample_ms": (20.0, 0.0),
    "max_impl_s": (8.0, 1.0),
    "peak_size": (2048, 256),
}
# A GPU run (--device cuda): issue 7's training shapes and its small-batch inference grid.
GPU_SHAPES = (*report.GPU_TRAIN_SHAPES,
              *(f"T100,B{b},I{h},H{h}" for h in (256, 512, 1024) for b in (1, 2, 4, 8)))
GPU_PRESETS = {
    "shapes": (GPU_SHAPES, ("T5,B3,I4,H8", "T5,B3,I4,H8,packed")),
    "threads": ([torch.get_num_threads()], [1]),
    "peak_size": (8192, 256),
}
DATA_PATH_SHAPE = report.GPU_TRAIN_SHAPES[0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    unset = argparse.SUPPRESS  # options left out take the full or the --quick preset (PRESETS)
    p.add_argument("--shapes", nargs="+", metavar="SHAPE", default=unset,
                   help="shapes as T100,B32,I128,H256 with optional ,packed (PackedSequence of random sorted "
                        "lengths) or ,P128 (proj_size); default: the issue's four shapes plus a packed and a "
                        "proj_size row; with --device cuda, issue 7's two training shapes and T100 at B 1, 2, 4, 8 and "
                        "I = H 256, 512, 1024")
    p.add_argument("--threads", nargs="+", type=int, metavar="N", default=unset,
                   help="torch.set_num_threads values (default: 1 2; with --device cuda, torch's current count)")
    p.add_argument("--modes", nargs="+", choices=harness.MODES, default=list(harness.MODES),
                   help="fwd (under no_grad) and/or fwd+bwd (dX and every weight gradient)")
    p.add_argument("--repeats", type=int, default=unset,
                   help="timed repetitions per implementation; the median is reported (default: 7)")
    p.add_argument("--warmup", type=int, default=unset,
                   help="untimed calls per implementation before timing, at least 1: the last one also sizes "
                        "the samples (default: 3)")
    p.add_argument("--min-sample-ms", type=float, default=unset,
                   help="a sample repeats a short call until it lasts this long (default: 20)")
    p.add_argument("--max-impl-s", type=float, default=unset,
                   help="an implementation whose timed samples would take longer than this gets fewer "
                        "repetitions (at least 3) and less warm-up, per shape and mode (default: 8)")
    p.add_argument("--impls", nargs="+", metavar="PATTERN",
                   help=f"only implementations matching these shell patterns (e.g. 'lstmkit-*' 'loop-*'); "
                        f"{BASELINE} always runs, as the baseline of every ratio")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile (a cold compile takes ~17 s, and more per shape)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds: tiny shapes, 1 thread, 2 repetitions, 1 warm-up call, "
                        "a 256x256 peak (options given explicitly win)")
    p.add_argument("--peak-size", type=int, default=unset,
                   help="n of the n x n fp32 product that measures the GEMM peak (default: 2048; 8192 with "
                        "--device cuda)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: nn.LSTM on cuDNN is the baseline, against each triton kernel (the persistent "
                        "one included), the CPU implementations for scale, and the data path with and "
                        "without CUDAPrefetcher")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and packed lengths")
    p.add_argument("--out", type=Path, help="directory for bench.md, bench.json, bench.png, new or empty (default: "
                                             "a new runs/bench-<date>-<time>, with -2, -3, ... after it if that is "
                                             "taken)")
    p.add_argument("--list", action="store_true", help="list the implementations and why any cannot run, then exit")


def run(args: argparse.Namespace) -> int:
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise ValueError("--device: expected a machine with CUDA for 'cuda', got none (torch.cuda.is_available() "
                         "is False)")
    for name, (full, quick) in PRESETS.items():
        if not hasattr(args, name):
            full, quick = GPU_PRESETS.get(name, (full, quick)) if gpu else (full, quick)
            setattr(args, name, quick if args.quick else full)
    shapes = [_parse_shape(s) for s in args.shapes]
    harness.check_plan(shapes, args.threads, args.modes, args.repeats, flags=True)
    check_number("--peak-size", args.peak_size, 0, above=True)
    check_number("--max-impl-s", args.max_impl_s, 0, above=True)
    harness.check_warmup("--warmup", args.warmup)
    check_number("--min-sample-ms", args.min_sample_ms, 0)
    check_seed("--seed", args.seed)

    impls, unavailable = gpu_registry() if gpu else registry(compile=args.compile)
    if args.list:
        for impl in impls:
            print(f"{impl.name:32s} {impl.description}")
        for name, why in unavailable.items():
            print(f"{name:32s} not available: {why}")
        return 0
    if args.impls:
        names = [i.name for i in impls] + list(unavailable)
        for pattern in args.impls:
            if not fnmatch.filter(names, pattern):
                raise ValueError(f"--impls: {pattern!r} matches none of {names}")
        impls = [i for i in impls if i.name == BASELINE or any(fnmatch.fnmatch(i.name, p) for p in args.impls)]
        unavailable = {k: v for k, v in unavailable.items() if any(fnmatch.fnmatch(k, p) for p in args.impls)}

    out = new_run_dir(args.out, "bench")  # before the minutes of timing that an unwritable --out would throw away
    with removed_if_empty_on_failure(out, args.out is None):  # a bench stopped mid-way leaves no empty run
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        load_start = os.getloadavg()
        result = harness.run_bench(impls, shapes, args.threads, args.modes, args.repeats, args.warmup,
                                   args.min_sample_ms / 1e3, args.max_impl_s, args.peak_size, args.seed, log,
                                   device=args.device)
        if gpu:
            data_shape = Shape.parse(shapes[0].label if args.quick else DATA_PATH_SHAPE)
            result.data_path = harness.time_data_path(data_shape, repeats=2 if args.quick else 5, log=log)
        result.unavailable = unavailable
        result.config = {
            "argv": args._argv, "shapes": [s.label for s in shapes], "threads": args.threads,
            "modes": args.modes, "repeats": args.repeats, "warmup": args.warmup,
            "min_sample_ms": args.min_sample_ms, "max_impl_s": args.max_impl_s, "peak_size": args.peak_size,
            "seed": args.seed,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_start": f"{load_start[0]:.2f}", "loadavg_end": f"{os.getloadavg()[0]:.2f}",
            "device": args.device,
        }
        if gpu:
            result.config["gpu"] = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
        command = " ".join(["lstmkit", *map(shlex.quote, args._argv)])
        print(report.write(result, out, command), end="")
        print(f"wrote {out / 'bench.md'}, bench.json, bench.png", file=sys.stderr)
    return 0


def _parse_shape(text: str) -> Shape:
    """Shape.parse, with the errors of Shape's own field checks also naming the flag."""
    try:
        return Shape.parse(text)
    except ValueError as e:
        if str(e).startswith("--shapes:"):
            raise
        raise ValueError(f"--shapes: {text!r}: {e}") from None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
