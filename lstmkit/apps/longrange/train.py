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
    """The generator of one data stream ("train" or "eval"): the same for every model."""
    key = [seed, length, sum(map(ord, task)), 0 if stream == "train" else 1]
    return np.random.default_rng(key)


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


def run_experiment(cfg: LongRangeConfig) -> dict:
    """Every (task, length, model) under the same budget; returns {"runs": [...], "gradnorm": {...}}."""
    cfg.validate()
    jobs = [(t, n) for t in cfg.tasks for n in cfg.lengths_of(t)]
    total = len(jobs) * len(cfg.models) * cfg.steps
    runs: list[dict] = []
    kept: dict[tuple[str, int, str], SequenceModel] = {}
    grad_task = "adding" if "adding" in cfg.tasks else cfg.tasks[0]
    grad_length = max(cfg.lengths_of(grad_task))
    grad_models = [m for m in ("rnn", "lstm") if m in cfg.models] or cfg.models[:2]
    with tqdm(total=total, desc="longrange", unit="step", disable=not cfg.progress, dynamic_ncols=True) as bar:
        for task_name, length in jobs:
            task = get_task(task_name)
            eval_set = task.generate(cfg.eval_size, length, data_rng(cfg.seed, task.name, length, "eval"))
            for name in cfg.models:
                record, model = train_one(cfg, task, length, name, eval_set, bar)
                runs.append(record)
                if task_name == grad_task and length == grad_length and name in grad_models:
                    kept[(task_name, length, name)] = model
                tqdm.write(f"{task_name:9s} length {length:4d}  {name:8s}  {task.metric} {record['final']:.4f}"
                           f"  (chance {task.chance:.3f}; {record['steps_run']} steps, {record['seconds']:.0f} s)")
    gradnorm = {}
    if cfg.gradnorm:
        task = get_task(grad_task)
        x, y = task.generate(256, grad_length, data_rng(cfg.seed, grad_task, grad_length, "grad"))
        gradnorm = {"task": grad_task, "length": grad_length, "init": {}, "trained": {}}
        for name in grad_models:
            torch.manual_seed(cfg.seed)
            gradnorm["init"][name] = input_gradient_norms(build(cfg, task, name), task, x, y).tolist()
            gradnorm["trained"][name] = input_gradient_norms(kept[(grad_task, grad_length, name)], task, x, y).tolist()
    return {"runs": runs, "gradnorm": gradnorm}
