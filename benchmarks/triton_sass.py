"""Compile the persistent LSTM kernel for a GPU target without a GPU, and report what the
compiled code costs per step: registers, local-memory spills, shared memory, the mma (HMMA)
instructions one warp issues per step with the longest chain of them that depend on each other
through their accumulator (each link waits for the previous mma's result), and the block-wide
barriers (BAR.SYNC) per step, each a meeting of the program's warps.

For kernel work on a machine without a GPU: Triton compiles to PTX and ptxas (bundled with
triton) assembles it for the target; cuobjdump (also bundled) disassembles. Nothing runs.

    python benchmarks/triton_sass.py --hidden 256 512 1024 [--warps 8] [--split 4 | --fma]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lstmkit.kernels import lstm_triton_persistent as pk

_HMMA = re.compile(r"HMMA\.\S+\s+(R\d+),\s*R\d+(?:\.reuse)?,\s*R\d+(?:\.reuse)?,\s*(R\d+|RZ)")
_WRITE = re.compile(r"\*/\s+(?:@!?P\d\s+)?[A-Z][\w.]*\s+(R\d+)")


def mma_chains(sass: str) -> tuple[int, int]:
    """(mma count, longest accumulator chain) in a disassembly: a chain continues while an mma
    reads as its accumulator the register the previous one wrote; any other write ends it."""
    depth: dict[str, int] = {}
    count = longest = 0
    for line in sass.splitlines():
        m = _HMMA.search(line)
        if m is None:
            w = _WRITE.search(line)
            if w is not None:
                depth.pop(w.group(1), None)
            continue
        count += 1
        depth[m.group(1)] = depth.get(m.group(2), 0) + 1
        longest = max(longest, depth[m.group(1)])
    return count, longest


def step_barriers(sass: str) -> int:
    """BAR.SYNC instructions in the time loop: the widest span from a backward branch's target
    to the branch (the polling loop nests inside it)."""
    lines = [(int(m.group(1), 16), line) for line in sass.splitlines()
             if (m := re.search(r"/\*([0-9a-f]{4,})\*/", line))]
    spans = [(int(m.group(1), 16), addr) for addr, line in lines
             if (m := re.search(r"\bBRA\b.*?0x([0-9a-f]+)", line)) and int(m.group(1), 16) < addr]
    lo, hi = max(spans, key=lambda s: s[1] - s[0])
    return sum("BAR.SYNC" in line for addr, line in lines if lo <= addr <= hi)


def compile_persistent(H: int, sms: int, warps: int, split: int, fma: bool, capability: int) -> dict:
    """The kernel as `lstm_triton_persistent.forward` would launch it for the standard cell in
    fp32 (TF32 products), unpacked, forward, on a GPU with `sms` multiprocessors (with `fma`, at
    B=2, the widest batch of the multiply-add product)."""
    tune = pk.tuning(H, pk.FMA_MAX_BATCH if fma else pk.MAX_BATCH, warps, split, fma)
    u = pk.units_per_program(H, sms)
    kp = max(16, triton.next_power_of_2(H))
    pointers = {"BS": "*i32", "SYNC": "*i32"}
    scalars = ("T", "B", "H", "n_prog", "spin_limit")
    consts = dict(CELL=0, NG=4, PACKED=False, REVERSE=False, BB=pk.FMA_MAX_BATCH if fma else 16, KP=kp, U=u,
                  SPLIT=tune.split, FMA=fma, ACC=tl.float32, PREC="tf32", ACQ=True)
    fn = pk._persistent_lstm_kernel
    sig = {a: "constexpr" if a in consts else "i32" if a in scalars else pointers.get(a, "*fp32")
           for a in fn.arg_names}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                       target=GPUTarget("cuda", capability, 32), options=dict(num_warps=tune.warps))
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(k.asm["cubin"])
        sass, usage = (subprocess.run([os.path.join(bindir, "cuobjdump"), flag, path], check=True,
                                      capture_output=True, text=True).stdout
                       for flag in ("-sass", "-res-usage"))
    regs, stack = (int(v) for v in re.search(r"REG:(\d+) STACK:(\d+)", usage).groups())
    mma, chain = mma_chains(sass)
    return dict(H=H, units=u, programs=triton.cdiv(H, u), regs=regs, stack_bytes=stack,
                spill_ops=len(re.findall(r"\b(?:LDL|STL)\b", sass)), smem_bytes=k.metadata.shared,
                mma_per_warp=mma, longest_chain=chain, step_barriers=step_barriers(sass))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 512, 1024], help="hidden sizes H")
    ap.add_argument("--warps", type=int, default=4, help="warps per program (the kernel's default: 4)")
    ap.add_argument("--split", type=int, default=1,
                    help="independent mma chains of the recurrent product (the kernel's default: 1)")
    ap.add_argument("--fma", action="store_true", help="the multiply-add product of B <= 2 (no mma)")
    ap.add_argument("--sms", type=int, default=132, help="multiprocessors of the target GPU (H100 SXM: 132)")
    ap.add_argument("--capability", type=int, default=90, help="compute capability x10 (H100: 90)")
    args = ap.parse_args(argv)
    for name in ("warps", "split", "sms", "capability"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: expected >= 1, got {getattr(args, name)}")
    if min(args.hidden) < 1:
        ap.error(f"--hidden: expected sizes >= 1, got {min(args.hidden)}")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the GPU path's default; silences triton 3.9
    product = "multiply-adds" if args.fma else f"{args.split} chains"
    print(f"triton {triton.__version__}, sm_{args.capability}, {args.warps} warps, {product}")
    try:
        rows = [compile_persistent(H, args.sms, args.warps, args.split, args.fma, args.capability)
                for H in args.hidden]
    except ValueError as e:
        ap.error(f"--{str(e)}")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
