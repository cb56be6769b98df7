"""Train every model on every task and length under one budget; measure input-gradient norms."""

from __future__ import annotations

import time
import numpy as np
import torch
from tqdm.auto import tqdm

from lstmkit.apps.longrange.config import LongRangeConfig
from lstmkit.apps.longrange.models import SequenceModel, matched_hidden, parameter_count
from lstmkit.apps.longrange.tasks import Task, get_task


STREAMS = ("train", "eval", "grad", "val")
FIXED = ("eval", "val")  # the same for every seed: spread across seeds is then training variance alone


def data_rng(task: str, length: int, stream: str, seed: int | None = None) -> np.random.Generator:
    """The generator of one data stream (one of STREAMS), the same for every model: of the task,
    the length and `seed` for "train" and "grad"; of the task and length alone for the FIXED
    streams (validation "val", held-out "eval"), which take no seed."""
    if stream not in STREAMS:
        raise ValueError(f"stream: expected one of {list(STREAMS)}, got {stream!r}")
    if (seed is None) != (stream in FIXED):
        raise TypeError(f"seed: expected {'None' if stream in FIXED else 'an integer'} for the {stream!r} stream, "
                        f"got {seed!r}")
    code, index = sum(map(ord, task)), STREAMS.index(stream)
    # A fixed stream's key has its index (1 or 3) where a seeded key has the task's code (a sum
    # of letters, above 3), so it is no seed's stream, even as numpy pads keys with zeros.
    key = [length, code, index] if seed is None else [seed, length, code, index]
    return np.random.default_rng(key)


EvalSet = tuple[torch.Tensor, torch.Tensor]


def fixed_sets(cfg: LongRangeConfig, task: Task, length: int) -> tuple[EvalSet, EvalSet]:
    """The validation set (for the stop decision) and the held-out set (for the reported metric)
    of a task and length: eval_size examples each, the same for every model and seed."""
    val = task.generate(cfg.eval_size, length, data_rng(task.name, length, "val"))
    held = task.generate(cfg.eval_size, length, data_rng(task.name, length, "eval"))
    return val, held


@torch.no_grad()
def evaluate(model: SequenceModel, task: Task, x: torch.Tensor, y: torch.Tensor, chunk: int = 500) -> float:
    """The task's metric over a fixed held-out set, in chunks (weighted by chunk size)."""
    model.eval()
    total, n = 0.0, x.shape[1]
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        total += task.score(model(x[:, s:e]), y[..., s:e]) * (e - s)
    model.train()
    return total / n


def build(cfg: LongRangeConfig, task: Task, name: str) -> SequenceModel:
    hidden = matched_hidden(name, task.input_size, cfg.hidden_size, task.output_size, cfg.match)
    return SequenceModel(name, task.input_size, hidden, task.output_size, cfg.backend, cfg.forget_bias)


def train_one(cfg: LongRangeConfig, task: Task, length: int, name: str, sets: tuple[EvalSet, EvalSet],
              bar=None) -> tuple[dict, SequenceModel]:
    """Train one model on one task and length; returns its record and the trained model.

    `sets`: (validation, held-out), from fixed_sets. Whether (and when) it is solved and stops is
    decided on validation; the held-out metric, which no decision has seen, is what is reported."""
    val_set, eval_set = sets
    torch.manual_seed(cfg.seed)
    model = build(cfg, task, name)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = data_rng(task.name, length, "train", cfg.seed)
    curve: list[list[float]] = []  # [step, held-out metric]
    val_curve: list[list[float]] = []  # [step, validation metric]
    start = time.perf_counter()
    solved_at = None
    step = 0
    for step in range(1, cfg.steps + 1):
        x, y = task.generate(cfg.batch_size, length, rng)
        loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if bar is not None:
            bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = evaluate(model, task, *val_set)
            value = evaluate(model, task, *eval_set)
            val_curve.append([step, val])
            curve.append([step, value])
            if bar is not None:
                bar.set_postfix_str(f"{task.name} T={length} {name} {task.metric}={value:.4f}")
            if solved_at is None and task.is_solved(val):
                solved_at = step
                if cfg.stop_when_solved:
                    break
    seconds = time.perf_counter() - start
    if bar is not None and step < cfg.steps:
        bar.update(cfg.steps - step)  # the budget this model did not need
    record = {
        "task": task.name, "length": length, "seq_len": task.seq_len(length), "model": name,
        "hidden_size": model.head.in_features,
        "params": parameter_count(name, task.input_size, model.head.in_features, task.output_size),
        "metric": task.metric, "final": curve[-1][1], "solved_at_step": solved_at, "steps_run": step,
        "seconds": round(seconds, 2), "curve": curve, "val_curve": val_curve,
    }
    return record, model


def input_gradient_norms(model: SequenceModel, task: Task, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Mean over the examples of |dL_i/dx_t| (L_i: one example's loss) for every step t: (T,)."""
    model.eval()
    x = x.clone().requires_grad_(True)
    loss = task.loss(model(x), y) * x.shape[1]  # the batch-mean loss times B: each example's own gradient
    (grad,) = torch.autograd.grad(loss, x)
    model.train()
    return grad.norm(dim=-1).mean(dim=1).numpy()


def _job(cfg_dict: dict, task_name: str, length: int, name: str, keep: bool) -> tuple[dict, dict | None]:
    """One (task, length, model) training in a worker process (one thread: the parallelism is the jobs)."""
    torch.set_num_threads(1)
    cfg = LongRangeConfig(**{**cfg_dict, "progress": False})
    task = get_task(task_name)
    record, model = train_one(cfg, task, length, name, fixed_sets(cfg, task, length))
    return record, (model.state_dict() if keep else None)


def run_experiment(cfg: LongRangeConfig, jobs: int = 1) -> dict:
    """Every (task, length, model) under the same budget; returns {"runs": [...], "gradnorm": {...}}.

    jobs > 1 trains that many models at once in worker processes of one thread each (the records
    are the same as in one process, up to floating-point summation order).
    """
    cfg.validate()
    grid = [(t, n, m) for t in cfg.tasks for n in cfg.lengths_of(t) for m in cfg.models]
    grad_task = "adding" if "adding" in cfg.tasks else cfg.tasks[0]
    grad_length = max(cfg.lengths_of(grad_task))
    grad_models = [m for m in ("rnn", "lstm") if m in cfg.models] or cfg.models[:2]
    keep = [t == grad_task and n == grad_length and m in grad_models for t, n, m in grid]
    records: list[dict | None] = [None] * len(grid)
    kept: dict[str, SequenceModel] = {}

    def done(i: int, record: dict) -> None:
        records[i] = record
        task = get_task(record["task"])
        tqdm.write(f"{record['task']:9s} length {record['length']:4d}  {record['model']:8s}  {task.metric} "
                   f"{record['final']:.4f}  (chance {task.chance:.3f}; {record['steps_run']} steps, "
                   f"{record['seconds']:.0f} s)")

    with tqdm(total=len(grid) * cfg.steps, desc="longrange", unit="step", disable=not cfg.progress,
              dynamic_ncols=True) as bar:
        if jobs <= 1:
            current, sets = None, None
            for i, (task_name, length, name) in enumerate(grid):
                task = get_task(task_name)
                if current != (task_name, length):
                    current, sets = (task_name, length), fixed_sets(cfg, task, length)
                record, model = train_one(cfg, task, length, name, sets, bar)
                done(i, record)
                if keep[i]:
                    kept[name] = model
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_job, cfg.to_dict(), t, n, m, keep[i]): i for i, (t, n, m) in enumerate(grid)}
                for future in as_completed(futures):
                    i = futures[future]
                    record, state = future.result()
                    done(i, record)
                    bar.update(cfg.steps)
                    if state is not None:
                        model = build(cfg, get_task(grid[i][0]), grid[i][2])
                        model.load_state_dict(state)
                        kept[grid[i][2]] = model
    gradnorm = {}
    if cfg.gradnorm:
        task = get_task(grad_task)
        x, y = task.generate(256, grad_length, data_rng(grad_task, grad_length, "grad", cfg.seed))
        gradnorm = {"task": grad_task, "length": grad_length, "init": {}, "trained": {}}
        for name in grad_models:
            torch.manual_seed(cfg.seed)
            gradnorm["init"][name] = input_gradient_norms(build(cfg, task, name), task, x, y).tolist()
            gradnorm["trained"][name] = input_gradient_norms(kept[name], task, x, y).tolist()
    return {"runs": records, "gradnorm": gradnorm}
