"""`lstmkit longrange`: long-range-dependency tasks, Elman RNN vs GRU vs LSTM vs peephole LSTM."""

from __future__ import annotations

import argparse
import json

from lstmkit.apps.longrange.config import LongRangeConfig
from lstmkit.apps.longrange.models import CELL, LABELS, MATCHES, MODELS
from lstmkit.apps.longrange.tasks import DEFAULT_LENGTHS, TASKS
from lstmkit.kernels import AUTO_PREFERENCE
from lstmkit.utils.options import check_threads

HELP = ("Synthetic long-range tasks (adding problem, delayed recall/copy, number agreement): train an Elman RNN, "
        "GRU, LSTM and peephole LSTM under one budget; metric vs length as a table and PNGs, and the input-gradient "
        "norm per time step, RNN vs LSTM.")

D = LongRangeConfig()
# The models train on the CPU: the backends offered are those that run there, the reference and
# what "auto" prefers on a CPU. Triton runs on one only in its interpreter (TRITON_INTERPRET=1),
# for debugging kernels, far too slow for these runs.
CPU_BACKENDS = ("auto", "reference", *AUTO_PREFERENCE["cpu"])


def _names(allowed):
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list from {list(allowed)}, got {text!r}")
        return names
    return parse


def _ints(text: str) -> list[int]:
    """Integers only: which are too short is each task's to say (LongRangeConfig.validate), as
    copy and agreement take 0 and adding needs 2."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = "; ".join(f"{t}: {','.join(map(str, v))}" for t, v in DEFAULT_LENGTHS.items())
    # The list defaults are given as typed, comma-separated: the formatter would join them by spaces.
    p.add_argument("--tasks", type=_names(TASKS), default=D.tasks, metavar="NAMES",
                   help=f"comma-separated, from {', '.join(TASKS)} (default: {','.join(D.tasks)})")
    p.add_argument("--lengths", type=_ints, default=None, metavar="INTS",
                   help=f"lengths for every task, each once: adding: the sequence length (at least 2); copy: the "
                        f"delay, blank steps between the symbols and the recall marker (at least 0); agreement: the "
                        f"distractor clause length (at least 0; 0: no attractor) (default per task: {defaults})")
    p.add_argument("--models", type=_names(MODELS), default=D.models, metavar="NAMES",
                   help=f"comma-separated, from {', '.join(MODELS)} (default: {','.join(D.models)})")
    p.add_argument("--hidden-size", type=int, default=D.hidden_size, help="the LSTM's hidden size")
    p.add_argument("--match", default=D.match, choices=MATCHES,
                   help="params: RNN and GRU get the hidden size with the LSTM's parameter count; hidden: same "
                        "hidden size for all")
    p.add_argument("--steps", type=int, default=D.steps, help="training steps per model, task and length")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help="examples per training step")
    p.add_argument("--lr", type=float, default=D.lr, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=D.clip, help="max gradient norm (0: none)")
    p.add_argument("--forget-bias", type=float, default=D.forget_bias, help="initial forget-gate bias of the LSTMs")
    p.add_argument("--eval-every", type=int, default=D.eval_every,
                   help="steps between evaluations on the validation and the held-out set")
    p.add_argument("--eval-size", type=int, default=D.eval_size,
                   help="examples per task and length in each of the validation and the held-out set")
    p.add_argument("--stop-when-solved", action=argparse.BooleanOptionalAction, default=D.stop_when_solved,
                   help="stop a model once its validation metric counts as solved (adding MSE <= 0.002, "
                        "accuracy >= 0.99); the held-out metric is what is reported")
    p.add_argument("--gradnorm", action=argparse.BooleanOptionalAction, default=D.gradnorm,
                   help="plot |dL/dx_t| per step for the RNN and the LSTM (adding, else the first task; longest "
                        "length)")
    p.add_argument("--seed", type=int, default=D.seed,
                   help="seed of the initialisation and the training examples; the validation and held-out sets "
                        "depend only on the task and length, the same for every seed")
    p.add_argument("--backend", default=D.backend, choices=CPU_BACKENDS,
                   help="the LSTMs' backend (lstmkit.LSTM's): the models train on the CPU, where these run")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many models at once, each in a process of one thread (at most the cores)")
    p.add_argument("--out", metavar="DIR", help="output directory, new or empty "
                   "(default: a new runs/longrange-<date>-<time>, with -2, -3, ... after it if that is taken)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")


def results_table(runs: list[dict]) -> str:
    """One Markdown table per task: a row per model, a column per length."""
    out = []
    for task_name in dict.fromkeys(r["task"] for r in runs):
        task = TASKS[task_name]
        rs = [r for r in runs if r["task"] == task_name]
        lengths = sorted({r["length"] for r in rs})
        what = "MSE (lower is better)" if task.metric == "mse" else "accuracy"
        out.append(f"**{task_name}**: held-out {what}, chance {task.chance:.3f}; "
                   "in brackets the step at which validation counted it solved")
        out.append("")
        out.append("| model | hidden | params | " + " | ".join(f"length {n}" for n in lengths) + " |")
        out.append("|---|---:|---:|" + "---:|" * len(lengths))
        for m in dict.fromkeys(r["model"] for r in rs):
            cells, first = [], None
            for n in lengths:
                r = next((r for r in rs if r["model"] == m and r["length"] == n), None)
                if r is None:
                    cells.append("-")
                    continue
                first = first or r
                cell = f"{r['final']:.4f}"
                if r["solved_at_step"]:
                    cell += f" ({r['solved_at_step']})"
                cells.append(cell)
            out.append(f"| {LABELS[m]} | {first['hidden_size']} | {first['params']} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.longrange.plots import plot_gradnorm, plot_task
    from lstmkit.apps.longrange.train import run_experiment
    from lstmkit.utils.checkpoint import atomic_write_bytes, atomic_write_json
    from lstmkit.utils.runs import backend_name, new_run_dir, save_config

    cfg = LongRangeConfig(
        tasks=args.tasks, lengths=args.lengths, models=args.models, hidden_size=args.hidden_size, match=args.match,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, clip=args.clip, forget_bias=args.forget_bias,
        eval_every=args.eval_every, eval_size=args.eval_size, stop_when_solved=args.stop_when_solved,
        seed=args.seed, backend=args.backend, gradnorm=args.gradnorm, progress=args.progress,
    ).validate()
    check_threads("--jobs", (args.jobs,))  # a process of one thread each: more than the cores only queue
    # The models run on the CPU. Checked for every model's cell, and resolved for config.json; only
    # where "auto" would pick different backends for different cells does it stay, as no one name
    # would say what ran.
    picked = {backend_name(cfg.backend, "cpu", CELL[m]) for m in cfg.models}
    if len(picked) == 1:
        cfg.backend = picked.pop()
    # Made before training, which an unwritable --out would throw away.
    out = new_run_dir(args.out, "longrange")
    save_config(out, cfg)  # before training too: a run stopped hours in still says what it was
    result = run_experiment(cfg, jobs=args.jobs)
    atomic_write_json(out / "results.json", result)
    md = results_table(result["runs"])
    atomic_write_bytes(out / "results.md", (md + "\n").encode())
    for task_name in cfg.tasks:
        plot_task(out / f"{task_name}.png", task_name, result["runs"])
    if result["gradnorm"]:
        plot_gradnorm(out / "gradnorm.png", result["gradnorm"])
        g = result["gradnorm"]
        for when in ("init", "trained"):
            ratios = ", ".join(f"{LABELS[m]} {v[0] / max(v[-1], 1e-30):.2e}" for m, v in g[when].items())
            print(f"|dL/dx_0| / |dL/dx_T-1| ({when}, {g['task']} length {g['length']}): {ratios}")
    print(md)
    print(f"output directory: {out} ({json.dumps(sorted(p.name for p in out.iterdir()))})")
    return 0
