"""Tree-LSTM training step: Fold-batched vs per-tree recursion (issue 5's bar), CPU.

One step = encode 256 random binary trees of 10-30 leaves (leaf: Linear(d, 3d) on the word
embedding; internal node: Linear(2d, 5d) on [h_l; h_r]), a 5-class cross-entropy on the roots,
backward, SGD update of every parameter (embedding included). The Fold step includes recording
the trees on a fresh Fold. Both paths use the same module (lstmkit.fold.BinaryTreeLSTM).

GFLOP counts the matrix products the fold actually runs (identical leaves are computed once),
fwd+bwd = 3x forward. The GEMM peak is measured in the same run with the same threads, on
2048x2048 fp32: torch.mm (MKL sgemm: the issue's roofline) and oneDNN's linear, which the fused
Tree-LSTM ops use for their forward product and which is faster on AMD Zen; the achieved rate is
given as a percentage of each: the median over repetitions of (the repetition's fold rate / the
peak sampled in the same repetition). Timings are medians over interleaved repetitions,
wall-clock; on a machine shared with other work, `--clock cpu` (process CPU time) is steadier for
one thread (it is meaningless for two: it adds up both threads).

    python benchmarks/treelstm_fold.py                      # dims 100 300, threads 1 2
    python benchmarks/treelstm_fold.py --dims 100 --threads 1 --rec-steps 2 --steps 5
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch
from torch import nn

from lstmkit.fold import BinaryTreeLSTM, Fold, random_binary_tree
from lstmkit.kernels import onednn


class Model(nn.Module):
    def __init__(self, vocab: int, dim: int, classes: int = 5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.tree = BinaryTreeLSTM(dim, dim, embedding=self.embedding)
        self.out = nn.Linear(dim, classes)


def make_trees(n: int, lo: int, hi: int, vocab: int, seed: int):
    rng = random.Random(seed)
    return [random_binary_tree(rng.randint(lo, hi), vocab, rng) for _ in range(n)]


def step_fold(model: Model, opt, trees, labels, cache: bool = True) -> None:
    fold = Fold(cache=cache)
    roots = [model.tree.record(fold, t)[-1] for t in trees]
    (states,) = fold.apply(model.tree, [roots])
    loss = nn.functional.cross_entropy(model.out(model.tree.hidden(states)), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_recursive(model: Model, opt, trees, labels) -> None:
    h = torch.cat([model.tree.recursive(t)[-1][0] for t in trees])
    loss = nn.functional.cross_entropy(model.out(h), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


CLOCK = time.perf_counter


def gemm_gflops(n: int = 2048, reps: int = 3) -> tuple[float, float]:
    """(torch.mm, oneDNN linear) GFLOP/s on n x n fp32; oneDNN 0.0 where torch has none."""
    a, b, zero = torch.randn(n, n), torch.randn(n, n), torch.zeros(n)
    fns = [lambda: torch.mm(a, b)]
    if onednn.LINEAR is not None:
        fns.append(lambda: onednn.linear(a, b, zero))
    out = []
    for fn in fns:
        fn()
        times = []
        for _ in range(reps):
            times.append(timed(fn))
        out.append(2 * n ** 3 / statistics.median(times) / 1e9)
    return out[0], out[1] if len(out) > 1 else 0.0


def fold_gflop(trees, dim: int, classes: int = 5, cache: bool = True) -> float:
    """Forward+backward matmul GFLOP of one fold step (distinct leaf calls when caching)."""
    fold = Fold(cache=cache)
    tree = BinaryTreeLSTM(1, 1, embedding=nn.Embedding(1, 1))  # recording only; no compute
    for t in trees:
        tree.record(fold, t)
    leaves = sum(n for op, _, n in fold.schedule() if op == "leaf")
    nodes = sum(n for op, _, n in fold.schedule() if op == "node")
    fwd = leaves * 2 * dim * 3 * dim + nodes * 2 * 2 * dim * 5 * dim + len(trees) * 2 * dim * classes
    return 3 * fwd / 1e9


def timed(fn) -> float:
    t = CLOCK()
    fn()
    return CLOCK() - t


def run(dim: int, threads: int, args) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    trees = make_trees(args.trees, args.min_leaves, args.max_leaves, args.vocab, args.seed)
    labels = torch.tensor([t.label for t in trees])
    model = Model(args.vocab, dim)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step_fold(model, opt, trees, labels)  # warm-up
    step_fold(model, opt, trees, labels, cache=False)
    fold_t, nocache_t, rec_t, mm_peak, dnn_peak = [], [], [], [], []
    for r in range(max(args.steps, args.rec_steps)):
        if r < args.rec_steps:
            rec_t.append(timed(lambda: step_recursive(model, opt, trees, labels)))
        if r < args.steps:
            fold_t.append(timed(lambda: step_fold(model, opt, trees, labels)))
            nocache_t.append(timed(lambda: step_fold(model, opt, trees, labels, cache=False)))
            mm, dnn = gemm_gflops()
            mm_peak.append(mm)
            dnn_peak.append(dnn)
    gflop = fold_gflop(trees, dim)
    res = {
        "dim": dim, "threads": threads,
        "rec": statistics.median(rec_t), "fold": statistics.median(fold_t),
        "nocache": statistics.median(nocache_t), "mm_peak": statistics.median(mm_peak),
        "dnn_peak": statistics.median(dnn_peak),
        "gflop": gflop,
        # each repetition's fold rate against the peak sampled in the same repetition, then the
        # median: a pair shares the machine's drift, which medians taken apart do not cancel
        "mm_share": statistics.median(gflop / f / p for f, p in zip(fold_t, mm_peak)),
        "dnn_share": statistics.median(gflop / f / p for f, p in zip(fold_t, dnn_peak)) if dnn_peak[0] else 0.0,
    }
    res["speedup"] = res["rec"] / res["fold"]
    res["rate"] = gflop / res["fold"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[100, 300])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--trees", type=int, default=256)
    p.add_argument("--min-leaves", type=int, default=10)
    p.add_argument("--max-leaves", type=int, default=30)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--steps", type=int, default=7, help="timed fold steps (median)")
    p.add_argument("--rec-steps", type=int, default=3, help="timed recursion steps (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (one thread only)")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time

    trees = make_trees(args.trees, args.min_leaves, args.max_leaves, args.vocab, args.seed)
    n_nodes = sum(t.size() for t in trees)
    heights = [t.height() for t in trees]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}; {args.trees} trees, "
          f"{n_nodes} nodes, heights {min(heights)}-{max(heights)}, vocab {args.vocab}; {args.clock} clock\n")
    print("| dim | threads | recursion s/step | Fold s/step | speedup | Fold, no cache s/step | speedup "
          "| GFLOP/step | Fold GFLOP/s | peak GFLOP/s: torch.mm (sgemm) / oneDNN | % of sgemm / oneDNN peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dim in args.dims:
        for threads in args.threads:
            r = run(dim, threads, args)
            print(f"| {dim} | {threads} | {r['rec']:.3f} | {r['fold']:.4f} | {r['speedup']:.1f}x "
                  f"| {r['nocache']:.4f} | {r['rec'] / r['nocache']:.1f}x | {r['gflop']:.2f} "
                  f"| {r['rate']:.1f} | {r['mm_peak']:.1f} / {r['dnn_peak']:.1f} "
                  f"| {100 * r['mm_share']:.0f}% / {100 * r['dnn_share']:.0f}% |",
                  flush=True)


if __name__ == "__main__":
    main()
