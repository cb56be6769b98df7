"""`lstmkit explain`: parameters, FLOPs and training memory of a recurrent config, as a table."""

from __future__ import annotations

import argparse

from lstmkit import costs
from lstmkit.cells import CELLS
from lstmkit.utils.options import flag_errors

HELP = "Parameters per tensor, FLOPs per step and sequence, and training activation memory of a config."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=int, default=28, help="features per time step (I)")
    p.add_argument("--hidden-size", type=int, default=256, help="hidden units per layer and direction (H)")
    p.add_argument("--num-layers", type=int, default=1, help="stacked layers")
    p.add_argument("--cell", default="lstm", help=f"cell type, one of {', '.join(CELLS)}")
    p.add_argument("--bidirectional", action="store_true", help="two directions per layer")
    p.add_argument("--proj-size", type=int, default=0,
                   help="LSTM projection size P (0: none); h is projected H -> P, 0 < P < H")
    p.add_argument("--no-bias", action="store_true", help="no bias vectors (bias=False)")
    p.add_argument("--seq-len", type=int, default=35, help="time steps T, for FLOPs per sequence and memory")
    p.add_argument("--batch-size", type=int, default=32, help="batch size B, for FLOPs and memory")
    p.add_argument("--dtype", default="float32", help=f"element type for memory, one of {', '.join(costs.DTYPES)}")


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if k in right else c.ljust(w)
                             for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def _si(n: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}"


def _bytes(n: float) -> str:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def explain(config: costs.RNNConfig, seq_len: int, batch_size: int, dtype: str) -> str:
    """The report as text (what `lstmkit explain` prints)."""
    itemsize = costs.dtype_size(dtype)
    step = costs.step_flops(config, batch_size)
    seq = costs.sequence_flops(config, seq_len, batch_size)
    memory = costs.activation_memory(config, seq_len, batch_size)
    params = costs.parameter_table(config)
    total = sum(r.numel for r in params)
    dense = costs.dense_parameter_count(config)
    spec = CELLS[config.cell]

    out = [f"lstmkit explain: cell={config.cell}, input_size={config.input_size}, "
           f"hidden_size={config.hidden_size}, num_layers={config.num_layers}, "
           f"bidirectional={config.bidirectional}, proj_size={config.proj_size}, bias={config.bias}", ""]

    out.append("Parameters")
    rows = [("tensor", "shape", "count")]
    rows += [(r.name, " x ".join(map(str, r.shape)), f"{r.numel:,}") for r in params]
    rows += [("total", "", f"{total:,}"),
             ("dense layer [x; h] -> H, same stack", "", f"{dense:,}")]
    out += _table(rows, right={2})
    out.append(f"  {config.cell} / dense = {total / dense:.2f}x: {spec.num_gates} gate row block(s) "
               f"({', '.join(spec.gates)}), each with the weights of one dense layer")
    out.append(f"  weights take {_bytes(total * itemsize)} in {dtype} (gradients as much again)")
    out.append("")

    out.append(f"FLOPs (a multiply-add is 2 FLOPs), batch B={batch_size}")
    rows = [("", "per step", f"per sequence (T={seq_len})")]
    for label, a, b in (
        ("forward GEMMs", step.forward_gemm, seq.forward_gemm),
        ("forward pointwise", step.forward_pointwise, seq.forward_pointwise),
        ("forward", step.forward, seq.forward),
        ("backward GEMMs", step.backward_gemm, seq.backward_gemm),
        ("backward pointwise (2x forward)", step.backward_pointwise, seq.backward_pointwise),
        ("backward", step.backward, seq.backward),
        ("forward + backward", step.training, seq.training),
    ):
        rows.append((label, _si(a, "FLOP"), _si(b, "FLOP")))
    out += _table(rows, right={1, 2})
    out.append("  backward GEMMs: 2x forward per step (dX, dh_{t-1}, dW); a sequence's first step forms no dh_0 "
               "(h_0 needs no gradient)")
    base, per_bias = costs.POINTWISE_FLOPS[config.cell]
    out.append(f"  pointwise: {base + (per_bias if config.bias else 0)} FLOPs per hidden unit and row per step "
               f"for cell={config.cell} (each add, multiply, sigmoid, tanh counted as 1)")
    out.append("")

    out.append(f"Activation memory for training (T={seq_len}, B={batch_size}, {dtype}): what BPTT saves")
    rows = [("saved tensor", "floats", "bytes")]
    rows += [(m.what, f"{m.floats:,}", _bytes(m.floats * itemsize)) for m in memory]
    floats = sum(m.floats for m in memory)
    rows.append(("total", f"{floats:,}", _bytes(floats * itemsize)))
    out += _table(rows, right={1, 2})
    out.append("  summed over layers and directions; tanh(c_t) is recomputed, dropout masks not counted")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    with flag_errors(vars(args)):  # the library's arguments are this command's flags
        config = costs.RNNConfig(
            input_size=args.input_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
            cell=args.cell, bidirectional=args.bidirectional, proj_size=args.proj_size,
            bias=not args.no_bias,
        )
        text = explain(config, args.seq_len, args.batch_size, args.dtype)
    print(text)
    return 0
