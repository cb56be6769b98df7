"""Train every model on every task and length under one budget; measure input-gradient norms."""

from __future__ import annotations

import time
import numpy as np
import torch
from tqdm.auto import tqdm

from lstmkit.apps.longrange.config import LongRangeConfig
from lstmkit.apps.longrange.models import SequenceModel, matched_hidden, parameter_count
from lstmkit.apps.longrange.tasks import Task, get_task


def data_rng(seed: int, task: str, length: int, stream: str) -> np.random.Generator:
    """The generator of one data stream ("train", "eval" or "grad"): the same for every model."""
    key = [seed, length, sum(map(ord, task)), ("train", "eval", "grad").index(stream)]
    return np.random.default_rng(key)


def held_out(cfg: LongRangeConfig, task: Task, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation set of a task and length (the same for every model)."""
    return task.generate(cfg.eval_size, length, data_rng(cfg.seed, task.name, length, "eval"))


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


def train_one(cfg: LongRangeConfig, task: Task, length: int, name: str, eval_set, bar=None) -> tuple[dict, SequenceModel]:
    """Train one model on one task and length; returns its record and the trained model."""
    torch.manual_seed(cfg.seed)
    model = build(cfg, task, name)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = data_rng(cfg.seed, task.name, length, "train")
    curve: list[list[float]] = []
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
            value = evaluate(model, task, *eval_set)
            curve.append([step, value])
            if bar is not None:
                bar.set_postfix_str(f"{task.name} T={length} {name} {task.metric}={value:.4f}")
            if solved_at is None and task.is_solved(value):
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
        "metric": task.metric, "final": curve[-1][1], "best": min(c[1] for c in curve) if task.metric == "mse"
        else max(c[1] for c in curve), "solved_at_step": solved_at, "steps_run": step,
        "seconds": round(seconds, 2), "curve": curve,
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
    record, model = train_one(cfg, task, length, name, held_out(cfg, task, length))
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
            current, eval_set = None, None
            for i, (task_name, length, name) in enumerate(grid):
                task = get_task(task_name)
                if current != (task_name, length):
                    current, eval_set = (task_name, length), held_out(cfg, task, length)
                record, model = train_one(cfg, task, length, name, eval_set, bar)
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
        x, y = task.generate(256, grad_length, data_rng(cfg.seed, grad_task, grad_length, "grad"))
        gradnorm = {"task": grad_task, "length": grad_length, "init": {}, "trained": {}}
        for name in grad_models:
            torch.manual_seed(cfg.seed)
            gradnorm["init"][name] = input_gradient_norms(build(cfg, task, name), task, x, y).tolist()
            gradnorm["trained"][name] = input_gradient_norms(kept[name], task, x, y).tolist()
    return {"runs": records, "gradnorm": gradnorm}
