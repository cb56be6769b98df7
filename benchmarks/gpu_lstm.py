"""GPU benchmark of backend="triton" against cuDNN's torch.nn.LSTM (issue 7's bars).

    python benchmarks/gpu_lstm.py [--quick] [--json out.json] [--skip-train] [--tune]

Prints markdown tables:
1. training (forward + backward: dX and every weight gradient) at the bar shapes: cuDNN's
   standard cell, then lstmkit's triton backend for each cell, ratio to cuDNN's standard cell;
2. small-batch inference latency (T=100): cuDNN vs the persistent kernel (and the per-step
   path), ratio cuDNN / lstmkit = how many times lower lstmkit's latency is; with --tune, the
   persistent kernel at each of its launches (warps x chains of the product) instead.
Both sides run fp32 with TF32 GEMMs exactly as cuDNN's RNN is configured
(torch.backends.cudnn.rnn.fp32_precision), plus bf16 autocast rows. Times are medians of CUDA
event timings after warm-up; the rows of one table are interleaved over several rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lstmkit  # noqa: E402
from lstmkit.kernels import lstm_triton as lt  # noqa: E402
from lstmkit.kernels import lstm_triton_persistent as pk  # noqa: E402
from lstmkit.utils.checkpoint import atomic_write_bytes  # noqa: E402

TRAIN_SHAPES = [(100, 64, 512, 512), (50, 128, 256, 1024)]
INFER_B = [1, 2, 4, 8]
INFER_H = [256, 512, 1024]


def _time(fn, reps: int) -> list[float]:
    """Per-call times in ms, each measured with CUDA events."""
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out


def _interleaved(fns: dict[str, object], rounds: int, reps: int, warmup: int) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k] += _time(fn, reps)
    return {k: statistics.median(v) for k, v in times.items()}


def _train_step(model, x, gy):
    params = [p for p in model.parameters()]

    def run():
        y, _ = model(x)
        torch.autograd.grad(y, [x, *params], gy)
    return run


def _with_autocast(fn):
    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fn()
    return run


def _with_flags(fn, **flags):
    """fn under lstm_triton.settings(**flags)."""
    def run():
        with lt.settings(**flags):
            fn()
    return run


def persistent_launches(H: int, B: int) -> list[pk.Tuning]:
    """The launches --tune sweeps: 4 and 8 warps with the product in 1, 2 or 4 mma chains, and at
    B <= 2 the multiply-add product with 8 and 32 warps. At most 8, the CUDA-graph cache's size:
    more, interleaved, would recapture on every call."""
    out = [pk.tuning(H, B, warps, split) for warps in (4, 8) for split in (1, 2, 4)
           if split <= max(16, triton.next_power_of_2(H)) // 16]
    if B <= pk.FMA_MAX_BATCH:
        out += [pk.tuning(H, B, warps, 1, fma=True) for warps in (8, 32)]
    return out


def bench_training(shapes, rounds, reps, warmup) -> list[dict]:
    rows = []
    for T, B, I, H in shapes:
        torch.manual_seed(0)
        x = torch.randn(T, B, I, device="cuda", requires_grad=True)
        gy = torch.randn(T, B, H, device="cuda")
        ref = torch.nn.LSTM(I, H).cuda()
        fns = {"cuDNN nn.LSTM (lstm)": _train_step(ref, x, gy)}
        models = {}
        for cell in ("lstm", "peephole", "cifg", "layernorm"):
            models[cell] = lstmkit.LSTM(I, H, cell=cell, backend="triton").cuda()
            fns[f"triton {cell}"] = _train_step(models[cell], x, gy)
        fns["triton lstm, no CUDA graphs"] = _with_flags(_train_step(models["lstm"], x, gy), graphs=False)
        fns["cuDNN nn.LSTM, bf16 autocast"] = _with_autocast(_train_step(ref, x, gy))
        fns["triton lstm, bf16 autocast"] = _with_autocast(_train_step(models["lstm"], x, gy))
        med = _interleaved(fns, rounds, reps, warmup)
        base = med["cuDNN nn.LSTM (lstm)"]
        for k, v in med.items():
            rows.append({"table": "train", "shape": f"T={T} B={B} I={I} H={H}", "impl": k, "ms": v,
                         "ratio": v / (med["cuDNN nn.LSTM, bf16 autocast"] if "autocast" in k else base)})
        print(f"# train T={T} B={B} I={I} H={H}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in med.items()),
              flush=True)
    return rows


def bench_inference(Bs, Hs, T, rounds, reps, warmup, tune: bool = False) -> list[dict]:
    rows = []
    for H in Hs:
        for B in Bs:
            torch.manual_seed(0)
            x = torch.randn(T, B, H, device="cuda")
            ref = torch.nn.LSTM(H, H).cuda().eval()
            mine = lstmkit.LSTM(H, H, backend="triton").cuda().eval()
            mine.load_state_dict(ref.state_dict())

            def call(m):
                def run():
                    with torch.no_grad():
                        m(x)
                return run
            if tune:
                variants = {f"persistent, {t.warps} warps, " + ("multiply-adds" if t.fma else f"{t.split} chains"):
                            dict(persistent=True, persistent_warps=t.warps, persistent_split=t.split,
                                 persistent_fma=t.fma)
                            for t in persistent_launches(H, B)}
            else:
                variants = {"persistent": dict(persistent=True), "per-step (graphs)": dict(persistent=False)}
            fns = {"cuDNN": call(ref), **{k: _with_flags(call(mine), **f) for k, f in variants.items()}}
            med = _interleaved(fns, rounds, reps, warmup)
            with torch.no_grad():
                want = ref(x)[0]
                err = 0.0
                for flags in variants.values():
                    with lt.settings(**flags):
                        err = max(err, (mine(x)[0] - want).abs().max().item())
            for k, v in med.items():
                rows.append({"table": "infer", "shape": f"T={T} B={B} H={H}", "impl": k, "ms": v,
                             "speedup": med["cuDNN"] / v, "max_abs_diff": err})
            ck = pk.last_compiled
            regs = f"; regs {getattr(ck, 'n_regs', '?')} spills {getattr(ck, 'n_spills', '?')}" if ck is not None else ""
            best = min((k for k in med if k != "cuDNN"), key=med.get)
            print(f"# infer B={B} H={H}: " + ", ".join(f"{k} {v * 1e3:.0f} us" for k, v in med.items())
                  + f"; fastest: {best}; max|diff| {err:.1e}; timeouts {int(pk.last_sync[1])}{regs}", flush=True)
    return rows


def profile_step(T, B, I, H) -> None:
    """Where the time of one eager (no graphs) training step of the standard cell goes."""
    from torch.profiler import ProfilerActivity, profile
    x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    gy = torch.randn(T, B, H, device="cuda")
    m = lstmkit.LSTM(I, H, backend="triton").cuda()
    ref = torch.nn.LSTM(I, H).cuda()
    for name, fn in (("triton eager", _with_flags(_train_step(m, x, gy), graphs=False)),
                     ("cuDNN", _train_step(ref, x, gy))):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        print(f"## profile: {name}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=60))


def markdown(rows: list[dict]) -> str:
    out = []
    train = [r for r in rows if r["table"] == "train"]
    if train:
        out += ["| shape | implementation | fwd+bwd ms | ratio to cuDNN |", "|---|---|---|---|"]
        for r in train:
            out.append(f"| {r['shape']} | {r['impl']} | {r['ms']:.3f} | {r['ratio']:.2f} |")
        out.append("")
    infer = [r for r in rows if r["table"] == "infer"]
    if infer:
        out += ["| shape | implementation | latency us | cuDNN / this |", "|---|---|---|---|"]
        for r in infer:
            out.append(f"| {r['shape']} | {r['impl']} | {r['ms'] * 1e3:.0f} | {r['speedup']:.2f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the kernel-time profile of one training step")
    ap.add_argument("--tune", action="store_true",
                    help="inference: time the persistent kernel at each launch persistent_launches gives")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_lstm.py: no CUDA device", file=sys.stderr)
        return 2
    print(f"# device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"cudnn {torch.backends.cudnn.version()}, cuDNN RNN TF32: {lt.rnn_allows_tf32()}", flush=True)
    rounds, reps, warmup = (2, 5, 3) if args.quick else (5, 10, 5)
    rows = []
    if args.profile:
        profile_step(*TRAIN_SHAPES[0])
    if not args.skip_train:
        rows += bench_training(TRAIN_SHAPES, rounds, reps, warmup)
    if not args.skip_infer:
        rows += bench_inference(INFER_B, INFER_H, 100, rounds, 2 * reps, warmup, args.tune)
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
