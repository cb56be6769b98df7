"""Training a character language model, in one process or many (torchrun + DDP).

One optimizer step per batch of truncated BPTT; validation at the end of every epoch drives the
learning-rate schedule, early stopping and the best-model file. A time or step budget
(`max_time`, `max_steps`) interrupts training anywhere, mid-epoch included: the state is then
checkpointed so that `--resume` continues with exactly the numbers an uninterrupted run would
have produced (same batches, same dropout masks, same optimizer state). Ctrl-C (SIGINT) during
training stops it the same way, at the next step. A stop mid-epoch also validates the model it
stopped with and keeps it as the best model if it beats every validation before: a budgeted run
keeps its last progress, and a run stopped and resumed may end with another best model than an
unbroken one (its training, checkpoint and history are the same).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lstmkit.apps.charlm import runs
from lstmkit.apps.charlm.batching import batches, num_batches, rows_per_process
from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.corpus import check_run_text, load_run_corpus, min_train_tokens, preprocess_prefix
from lstmkit.apps.charlm.generate import generate
from lstmkit.apps.charlm.metrics import MAX_LOSS, Metrics, evaluate
from lstmkit.apps.charlm.model import CharLM
from lstmkit.data.prefetch import CUDAPrefetcher
from lstmkit.utils.checkpoint import atomic_write_json
from lstmkit.utils.runs import (
    check_loss, make_out_dir, new_run_dir, resolve_device, resolve_run, rng_state, save_config, seed_everything,
    set_rng_state,
)

# --- processes ------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist(device: str) -> Dist:
    """One process, or one of torchrun's (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    device = resolve_device(device).type
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, torch.device(device))
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(),
                torch.device("cuda", local) if device == "cuda" else torch.device("cpu"))


def gather(obj, d: Dist) -> list:
    """Every rank's `obj`, in rank order (a list of one without torchrun)."""
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def on_main(make: Callable[[], Path], d: Dist) -> Path:
    """make() run on rank 0 alone, as only rank 0 writes, and its result, or the error it raised
    (of the kinds the CLI reports in one line), on every rank: the ranks agree on a name drawn
    from rank 0's clock (each rank's own could name another), and a directory rank 0 cannot make
    stops them all with its error, rather than leave the others blocked in their first collective
    until torchrun kills them."""
    if d.world == 1:
        return make()
    import torch.distributed as dist

    kinds = {k.__name__: k for k in (ValueError, TypeError, OSError)}
    box: list = [None, None, None]  # result, error kind, error message
    if d.main:
        try:
            box[0] = make()
        except tuple(kinds.values()) as e:
            box[1:] = [next(n for n, k in kinds.items() if isinstance(e, k)), str(e)]
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise kinds[box[1]](box[2])
    return box[0]


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if it is true on any (so all ranks stop at the same step)."""
    if d.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def catch_sigint(d: Dist) -> tuple[threading.Event, Callable[[], None]]:
    """(an Event that SIGINT (Ctrl-C) sets from now on, a function that puts the previous handler
    back). The Event replaces a KeyboardInterrupt, which could land mid-step and lose everything
    since the last checkpoint: the training loop polls it before each step, through the same
    all-ranks vote as its budgets, so every rank stops at the same step and the stop is
    checkpointed like a budget's."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    # Signals reach the main thread only; a process told to ignore SIGINT keeps ignoring it.
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        return stop, lambda: None

    def handler(signum, frame):
        stop.set()
        # One process: a second Ctrl-C is the user insisting, so it interrupts at once. Under
        # torchrun a second SIGINT is the agent forwarding the user's Ctrl-C that every rank
        # already got from the terminal; the agent SIGKILLs ranks still running 30 s later,
        # and the checkpoint on disk is then the previous one (files are replaced atomically).
        if d.world == 1:
            signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    return stop, lambda: signal.signal(signal.SIGINT, previous)


# --- training -----------------------------------------------------------------------------

@dataclass
class Progress:
    """Everything about where training stands, saved in the checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps in all
    tokens: int = 0  # training tokens in all (all ranks)
    train_time: float = 0.0  # seconds in all, resumes included
    epoch_loss: float = 0.0  # summed token NLL of this epoch so far (this rank)
    epoch_tokens: int = 0
    lr: float = 0.0
    best_bpc: float = math.inf  # best end-of-epoch validation bpc: drives schedule, early stopping
    bad_epochs: int = 0
    saved_bpc: float = math.inf  # bpc of the model in model.safetensors
    saved_metrics: dict = field(default_factory=dict)
    done: bool = False  # all epochs run, or stopped early
    history: list = field(default_factory=list)


@dataclass
class TrainResult:
    run_dir: Path | None
    metrics: Metrics | None  # of the best model (rank 0), None on other ranks
    sample: str
    progress: Progress
    stopped: str  # why training ended in this invocation
    interrupted: bool  # by SIGINT (Ctrl-C) in this process


def make_optimizer(model: CharLM, cfg: CharLMConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def scheduled_lr(cfg: CharLMConfig, p: Progress, steps_per_epoch: int) -> float:
    """The learning rate for the next step (plateau's decays happen at epoch ends, in p.lr)."""
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(p.step, total) / total))
    return p.lr


def check_resumed_epochs(cfg: CharLMConfig, run_epochs: int) -> None:
    """Refuse another --epochs on resume under the cosine schedule: its horizon is epochs x
    steps per epoch, so a new count moves the learning rate of every step still to come (a larger
    one sends it from near min_lr back up near lr in one step), and the run would not be the one
    an unbroken run would have been. Under plateau and constant, --epochs is a budget alone."""
    if cfg.schedule == "cosine" and cfg.epochs != run_epochs:
        raise ValueError(f"--epochs: this run's cosine schedule spans its {run_epochs} epochs, so "
                         f"{cfg.epochs} would move its learning rate mid-run; resume without --epochs, "
                         f"or start a new run with --epochs {cfg.epochs}")


def lm_loss(model, x: torch.Tensor, y: torch.Tensor, state=None):
    """Mean token NLL of y (T, B) given x (T, B): the training objective. -> (loss, state)."""
    logits, state = model(x, state)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), state


def train_step(model, optimizer, x, y, state, clip: float):
    """One step of truncated BPTT: forward, backward, clip by global norm, update. -> (loss, state)."""
    loss, state = lm_loss(model, x, y, state)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.detach(), state


def train(cfg: CharLMConfig, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: dict | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train per `cfg` into run directory `out`, or continue the run in `resume` (whose saved
    config is used, with `overrides` applied). Prints progress on rank 0."""
    if resume is not None:
        saved = runs.load_training_state(resume, "--resume")
        cfg = CharLMConfig.from_dict({**saved["config"], **(overrides or {})})
        out = Path(resume)
    cfg.validate()
    if resume is not None:
        check_resumed_epochs(cfg, saved["config"]["epochs"])
    resolve_run(cfg, cfg.cell)  # the saved config names what was used, wherever it is resumed from
    d = setup_dist(cfg.device)
    rows_per_process(cfg.batch_size, d.world)
    if resume is None:
        if cfg.text is not None:
            cfg.text = str(Path(cfg.text).resolve())
            cfg.corpus = None  # the saved config names the file read, and no corpus beside it
    else:
        check_run_text(cfg, resume, "put it back there to resume the run")
    corpus = load_run_corpus(cfg)  # errors here leave nothing written
    corpus.require_train(min_train_tokens(cfg.batch_size, cfg.num_steps),
                         f"one batch of batch_size={cfg.batch_size} x num_steps={cfg.num_steps}",
                         "a smaller --batch-size / --num-steps")
    if resume is not None:
        corpus.check_unchanged(saved["corpus_sha256"], "--resume")
        if saved["world"] != d.world:
            raise ValueError(f"--resume: the run used {saved['world']} process(es), this is {d.world}; "
                             "resume with the same number")

    def make_run_dir() -> Path:
        if resume is not None:
            return make_out_dir(out, "--resume")
        return new_run_dir(out, "charlm", resume=f"--resume {out}")

    run_dir = on_main(make_run_dir, d)  # before the model is built and trained, which an unwritable one would waste
    bar = None

    def say(msg: str) -> None:  # rank 0 only; above the progress bar when there is one
        if not d.main:
            return
        if log is not None:
            log(msg)
        elif bar is not None:
            bar.write(msg, file=sys.stdout)
        else:
            print(msg, flush=True)

    seed_everything(cfg.seed)
    model = CharLM(len(corpus.vocab), cfg).to(d.device)
    if d.rank:  # other ranks draw other dropout masks; rank 0 draws what a single process would
        torch.manual_seed(cfg.seed + 7919 * d.rank)
    optimizer = make_optimizer(model, cfg)
    p = Progress(lr=cfg.lr)
    carry = None
    if resume is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        p = Progress(**saved["progress"])
        p.done = p.epoch >= cfg.epochs or bool(cfg.patience and p.bad_epochs >= cfg.patience)  # --epochs may grow
        set_rng_state(saved["rng"][d.rank])
        p.epoch_loss, p.epoch_tokens = saved["epoch_sums"][d.rank]  # this rank's share of the epoch so far
        c = saved["carry"][d.rank]
        carry = None if c is None else tuple(t.to(d.device) for t in c)
    net = model
    if d.world > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        # DDP gets a process group of its own: in torch 2.13 DDP keeps its group alive past
        # destroy_process_group, worker threads included. On the default group, which carries
        # this run's own collectives (gather, the final barrier), such a thread released the
        # last barrier's work (and the gathered tensors it held) while the interpreter was
        # finalizing, and the rank aborted at exit ("terminate called without an active
        # exception": 10 of ~145 runs under load, none of 110 since). The default group is now
        # destroyed whole, its threads joined
        net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                                      process_group=dist.new_group())

    steps_per_epoch = num_batches(len(corpus.train), cfg.batch_size, cfg.num_steps, cfg.partition)
    char_lengths = corpus.vocab.char_lengths() if cfg.level == "word" else None
    n_params = sum(t.numel() for t in model.parameters())

    def checkpoint() -> None:
        rngs = gather(rng_state(), d)
        carries = gather(None if carry is None else tuple(t.cpu() for t in carry), d)
        sums = gather([p.epoch_loss, p.epoch_tokens], d)
        if d.main:
            runs.save_training_state(run_dir, {
                "config": cfg.to_dict(), "vocab": corpus.vocab.to_dict(), "corpus_sha256": corpus.sha256,
                "world": d.world, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "progress": vars(p), "rng": rngs, "carry": carries, "epoch_sums": sums,
            })

    def validate() -> Metrics:
        # Before the model, checkpoint or metrics are written: a diverged model is not one to keep,
        # nor one to resume, and the files of the last finite validation stay as they were.
        m = evaluate(model, corpus.val, char_lengths=char_lengths, rank=d.rank, world=d.world, device=d.device)
        check_loss(f"the validation loss (nats per token) at epoch {p.epoch + 1}, step {p.step:,}", m.loss,
                   cfg.clip, below=MAX_LOSS)
        return m

    def keep_if_best(m: Metrics, epoch: float) -> None:
        if m.bpc < p.saved_bpc:
            p.saved_bpc, p.saved_metrics = m.bpc, m.to_dict()
            if d.main:
                runs.save_model(run_dir, model, cfg, corpus.vocab, m.to_dict(), epoch, corpus.sha256)

    def record(m: Metrics, epoch: float) -> None:
        train_loss = p.epoch_loss / max(1, p.epoch_tokens)
        if d.world > 1:
            train_loss = sum(gather(train_loss, d)) / d.world
        p.history.append({"epoch": epoch, "step": p.step, "tokens": p.tokens, "time": round(p.train_time, 2),
                          "lr": p.lr, "train_loss": train_loss, "val_loss": m.loss,
                          "val_perplexity": m.perplexity, "val_bpc": m.bpc})
        write_metrics()

    def write_metrics() -> None:
        # the history holds epoch ends only, so a resumed run's files equal an unbroken run's
        if d.main:
            atomic_write_json(run_dir / "metrics.json", {"history": p.history, "best": p.saved_metrics})
            runs.plot_curves(run_dir / "curves.png", p.history)

    # The budget of this invocation.
    t_start = time.perf_counter()
    steps_at_start, tokens_at_start, time_at_start = p.step, p.tokens, p.train_time
    total_steps = cfg.epochs * steps_per_epoch
    stopped = "the run had already finished" if p.done else ""

    def budget_left() -> str:
        if cfg.max_steps and p.step >= cfg.max_steps:
            return f"--max-steps {cfg.max_steps} reached"
        if cfg.max_time and time.perf_counter() - t_start >= cfg.max_time:
            return f"--max-time {cfg.max_time:g} s reached"
        return ""

    interrupt, restore_sigint = catch_sigint(d)  # before "run directory:", which tells a watcher training began
    try:
        if d.main:
            save_config(run_dir, cfg)
            atomic_write_json(run_dir / "vocab.json", corpus.vocab.to_dict())
            say(f"data: {corpus.describe()}")
            say(f"model: {'embedding ' + str(cfg.embedding_size) if cfg.embedding_size else 'one-hot'} -> "
                f"LSTM(cell={cfg.cell}, {cfg.num_layers} x {cfg.hidden_size}"
                f"{', proj ' + str(cfg.proj_size) if cfg.proj_size else ''}, backend={cfg.backend}) -> "
                f"{len(corpus.vocab)}{' (tied)' if cfg.tie_weights else ''}; {n_params:,} parameters")
            say(f"training: {cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule}), batch {cfg.batch_size} x "
                f"{cfg.num_steps} steps ({cfg.partition}), {steps_per_epoch} batches/epoch, {cfg.epochs} epochs, "
                f"max time {cfg.max_time:g} s, {d.world} process(es) on {d.device.type}")
            say(f"run directory: {run_dir}" + (f" (resuming at epoch {p.epoch + 1}, step {p.step:,})" if resume else ""))
            if cfg.progress:
                bar = tqdm(total=total_steps, initial=min(p.step, total_steps), unit="step", dynamic_ncols=True,
                           disable=None, file=sys.stderr,
                           bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        model.train()
        while not p.done and not stopped:
            epoch_batches = batches(cfg.partition, corpus.train, cfg.batch_size, cfg.num_steps,
                                    cfg.seed, p.epoch, d.rank, d.world)
            todo = ((i, xb.T.contiguous(), yb.T.contiguous())  # (T, B); batches done before a resume skipped
                    for i, (xb, yb) in enumerate(epoch_batches) if i >= p.batch)
            t_epoch = time.perf_counter()
            # on a GPU, batch i+1 is copied (pinned, side stream) while batch i computes
            for i, x, y in CUDAPrefetcher(todo, d.device):
                reason = "interrupted (Ctrl-C)" if interrupt.is_set() else budget_left()
                if any_rank(bool(reason), d):
                    stopped = reason or "another process stopped (a budget or Ctrl-C)"
                    break
                state = carry if cfg.partition == "sequential" else None
                p.lr = scheduled_lr(cfg, p, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = p.lr
                loss, state = train_step(net, optimizer, x, y, state, cfg.clip)
                if cfg.partition == "sequential":
                    carry = tuple(s.detach() for s in state)
                n_tok = y.numel()
                p.epoch_loss += float(loss) * n_tok
                p.epoch_tokens += n_tok
                p.batch, p.step, p.tokens = i + 1, p.step + 1, p.tokens + n_tok * d.world
                if bar is not None:
                    elapsed = time.perf_counter() - t_start
                    rate = (p.tokens - tokens_at_start) / max(elapsed, 1e-9)
                    steps_rate = (p.step - steps_at_start) / max(elapsed, 1e-9)
                    eta = (total_steps - p.step) / max(steps_rate, 1e-9)
                    if cfg.max_time:
                        eta = min(eta, max(0.0, cfg.max_time - elapsed))
                    bar.set_description_str(f"epoch {p.epoch + 1}/{cfg.epochs} ", refresh=False)
                    bar.set_postfix_str(f"loss {float(loss):.3f}, {rate / 1000:.1f}k tok/s, eta {eta:.0f}s",
                                        refresh=False)
                    bar.update(1)
            p.train_time = time_at_start + (time.perf_counter() - t_start)
            if stopped:
                if p.batch:  # mid-epoch: report this model, leave the schedule's view untouched
                    m = validate()
                    keep_if_best(m, p.epoch + p.batch / max(1, steps_per_epoch))
                    write_metrics()
                checkpoint()
                break
            # End of an epoch: validate, schedule, maybe stop, checkpoint.
            m = validate()
            epoch_tok_s = p.epoch_tokens * d.world / max(time.perf_counter() - t_epoch, 1e-9)
            improved = m.bpc < p.best_bpc - 1e-4
            p.best_bpc = min(p.best_bpc, m.bpc)
            p.bad_epochs = 0 if improved else p.bad_epochs + 1
            keep_if_best(m, p.epoch + 1)
            record(m, p.epoch + 1)
            if d.main:
                say(f"epoch {p.epoch + 1}/{cfg.epochs}: train loss {p.history[-1]['train_loss']:.4f} | "
                          f"val loss {m.loss:.4f} ppl {m.perplexity:.3f} bpc {m.bpc:.4f}"
                          f"{' *' if improved else ''} | lr {p.lr:.2g} | {epoch_tok_s / 1000:.1f}k tok/s | "
                          f"{p.train_time:.0f} s")
            if cfg.schedule == "plateau" and not improved:
                p.lr = max(cfg.min_lr, p.lr * cfg.lr_decay)
            p.epoch, p.batch, p.epoch_loss, p.epoch_tokens = p.epoch + 1, 0, 0.0, 0
            carry = None
            if p.epoch >= cfg.epochs:
                p.done, stopped = True, f"{cfg.epochs} epochs done"
            elif cfg.patience and p.bad_epochs >= cfg.patience:
                p.done, stopped = True, f"early stop: no improvement in {cfg.patience} epochs"
            checkpoint()
    finally:
        restore_sigint()
        if bar is not None:
            bar.close()

    metrics, sample = None, ""
    if d.main:
        say(f"stopped: {stopped} (epoch {p.epoch + (p.batch > 0)}, step {p.step:,}, "
                  f"{p.train_time:.0f} s of training)"
                  + ("" if p.done else f"; continue with: lstmkit train --resume {run_dir}"))
        if p.saved_metrics:
            s = p.saved_metrics
            metrics = Metrics(s["loss"] * s["tokens"], s["tokens"], s["chars"])
        if cfg.sample_length and not interrupt.is_set() and (run_dir / runs.MODEL).exists():  # Ctrl-C asked to leave
            best = runs.load_model(run_dir, d.device)[0]
            prefix = preprocess_prefix(cfg.sample_prefix, cfg.preprocess)
            try:
                sample = generate(best, corpus.vocab, prefix, cfg.sample_length, cfg.temperature, cfg.top_k,
                                  seed=cfg.seed, device=d.device)
                say(f"sample (temperature {cfg.temperature:g}, seed {cfg.seed}):\n{sample}")
            except ValueError as e:  # a prefix this corpus cannot start from
                say(f"no sample: {e}")
        if metrics is not None:
            say(metrics.line("validation"))
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(run_dir if d.main else None, metrics, sample, p, stopped, interrupt.is_set())
