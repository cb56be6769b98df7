"""`lstmkit sentiment imdb`: a bidirectional LSTM on IMDB movie reviews.

Reviews are tokenised (lower case, words and punctuation marks), cut to `max_len` tokens and
mapped through a vocabulary of the most frequent training tokens. The model reads each batch
as a PackedSequence, so every review is processed for exactly its own length, and classifies
the mean of the LSTM outputs over those steps. A fraction of the training reviews is held out
to pick the best epoch; the reported figure is accuracy on the test split.
"""

from __future__ import annotations

import functools
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lstmkit.apps.sentiment import common
from lstmkit.apps.sentiment.config import IMDBConfig
from lstmkit.apps.sentiment.models import ReviewClassifier
from lstmkit.apps.sentiment.vocab import Vocab, load_vectors
from lstmkit.data.imdb import CLASSES, load_imdb, tokenize
from lstmkit.utils.runs import rng_state, seed_everything

MODEL_FORMAT = "lstmkit.sentiment.imdb.model/1"
# /2: the embedding has a parameter group of its own (no weight decay), which /1's optimizer state lacks
CHECKPOINT_FORMAT = "lstmkit.sentiment.imdb.checkpoint/2"
EVAL_BATCH = 256

Examples = tuple[list[list[int]], list[int]]  # token ids per review, labels


def load_data(cfg: IMDBConfig, vocab: Vocab | None = None) -> tuple[dict[str, Examples], Vocab]:
    """{train, val, test} as token ids; the vocabulary is built on train (minus val) unless given."""
    data = load_imdb(cfg.data)
    for split in ("train", "test"):
        if split not in data:
            raise ValueError(f"{cfg.data}: no reviews with split {split!r} (found {sorted(data)})")

    def subset(split: str, limit: int) -> list[tuple[str, int]]:
        rows = list(zip(data[split].texts, data[split].labels))
        if limit and limit < len(rows):
            # a generator per split: --test-limit leaves the training reviews as they were, and
            # runs that differ in --train-limit are scored on the same test reviews
            rows = random.Random(f"{cfg.seed}:{split}").sample(rows, limit)
        return rows

    train = subset("train", cfg.train_limit)
    test = subset("test", cfg.test_limit)
    random.Random(cfg.seed).shuffle(train)
    n_val = max(1, int(round(cfg.val_fraction * len(train))))
    if n_val >= len(train):
        raise ValueError(f"{cfg.data}: {len(train)} training review(s)"
                         + (f" (--train-limit {cfg.train_limit})" if cfg.train_limit else "")
                         + f" leave none to train on once --val-fraction {cfg.val_fraction} holds out {n_val} "
                         "for validation; expected at least 2")
    val, train = train[:n_val], train[n_val:]

    def tokens(rows):
        out = [tokenize(text) for text, _ in rows]
        return [t[: cfg.max_len] if cfg.max_len else t for t in out]

    toks = {"train": tokens(train), "val": tokens(val), "test": tokens(test)}
    if vocab is None:
        vocab = Vocab.build((w for t in toks["train"] for w in t), cfg.vocab_size, cfg.min_freq)
    rows = {"train": train, "val": val, "test": test}
    encoded = {k: ([vocab.encode(t) or [1] for t in toks[k]], [label for _, label in rows[k]]) for k in rows}
    return encoded, vocab


def batch_tensors(ids: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, T) padded with 0, lengths (B,))."""
    lengths = torch.tensor([len(x) for x in ids])
    tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.int64)
    for i, x in enumerate(ids):
        tokens[i, : len(x)] = torch.tensor(x)
    return tokens.to(device), lengths


def batches(n: int, lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices, each drawn from reviews of similar length (less padding)."""
    order = list(range(n))
    rng.shuffle(order)
    pool = 50 * batch_size
    out = []
    for p in range(0, n, pool):
        chunk = sorted(order[p:p + pool], key=lambda i: lengths[i])
        out.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


@torch.no_grad()
def predict(model: ReviewClassifier, examples: Examples, device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    ids, labels = examples
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pred = torch.empty(len(ids), dtype=torch.int64)
    for b in range(0, len(order), EVAL_BATCH):
        idx = order[b:b + EVAL_BATCH]
        tokens, lengths = batch_tensors([ids[i] for i in idx], device)
        pred[idx] = model(tokens, lengths).argmax(1).cpu()
    return pred, torch.tensor(labels)


def build_model(cfg: IMDBConfig, vocab: Vocab) -> ReviewClassifier:
    return ReviewClassifier(len(vocab), cfg.embedding_size, cfg.hidden_size, len(CLASSES),
                            cfg.num_layers, cfg.dropout, cfg.backend)


def train_imdb(cfg: IMDBConfig | None = None, out: str | None = None, resume: str | None = None,
               overrides: dict | None = None, log=print) -> dict:
    """Train (or resume) a run; returns its metrics (also written to metrics.json)."""
    return common.train(IMDBConfig, CHECKPOINT_FORMAT, lambda cfg: "imdb", _train, cfg, out, resume, overrides, log)


def _train(cfg: IMDBConfig, state: dict | None, run_dir: Path, log) -> dict:
    device = torch.device(cfg.device)  # resolved by common.train
    seed_everything(cfg.seed)

    data, vocab = load_data(cfg, Vocab.from_list(state["vocab"]) if state else None)
    vectors_found = None
    if state is None and cfg.vectors:
        matrix, vectors_found = load_vectors(cfg.vectors, vocab)
        cfg.embedding_size = matrix.shape[1]
    model = build_model(cfg, vocab)
    if state is None and cfg.vectors:
        with torch.no_grad():
            model.embedding.weight.copy_(matrix)
    model.to(device)
    opt = common.make_optimizer(cfg, model, model.embedding)

    history, best, start_epoch = common.begin(state, run_dir, cfg, model, opt, vocab.to_list(), "val_accuracy")

    train_ids, train_labels = data["train"]
    lengths = [len(x) for x in train_ids]
    log(f"IMDB: {len(train_ids)} train / {len(data['val'][0])} validation / {len(data['test'][0])} test reviews, "
        f"vocabulary {len(vocab)}, mean length {sum(lengths) / len(lengths):.0f} tokens (max_len {cfg.max_len})"
        + (f", {vectors_found} words with vectors" if vectors_found is not None else ", random embeddings")
        + f"; run directory {run_dir}")
    budget = common.Budget(cfg.max_time)
    rng = random.Random(cfg.seed)
    for _ in range(start_epoch - 1):
        batches(len(train_ids), lengths, cfg.batch_size, rng)  # replay the epochs already done
    stopped = False
    for epoch in range(start_epoch, cfg.epochs + 1):
        plan = batches(len(train_ids), lengths, cfg.batch_size, rng)
        model.train()
        total, count, correct = 0.0, 0, 0
        bar = tqdm(plan, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not cfg.progress, file=sys.stderr)
        budget.start()
        steps = 0
        for idx in bar:
            tokens, lens = batch_tensors([train_ids[i] for i in idx], device)
            target = torch.tensor([train_labels[i] for i in idx], device=device)
            logits = model(tokens, lens)
            loss = F.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            correct += int((logits.argmax(1) == target).sum())
            steps += 1
            bar.set_postfix(loss=f"{total / count:.3f}", acc=f"{correct / count:.3f}")
            if budget.exhausted:
                stopped = True
                break
        budget.stop()
        bar.close()
        pred, gold = predict(model, data["val"], device)
        val_acc = float((pred == gold).float().mean())
        record = {"epoch": epoch - 1 + steps / len(plan), "train_loss": total / max(count, 1),
                  "train_accuracy": correct / max(count, 1), "val_accuracy": val_acc,
                  "train_seconds": round(budget.used, 1)}
        best, improved = common.end_epoch(run_dir, (MODEL_FORMAT, CHECKPOINT_FORMAT), cfg, model, opt, vocab.to_list(),
                                          epoch, history, best, record, "val_accuracy", rng_state())
        log(f"epoch {record['epoch']:.2f}: train loss {record['train_loss']:.4f}, train accuracy "
            f"{record['train_accuracy']:.4f}, validation accuracy {val_acc:.4f}{' (best)' if improved else ''}, "
            f"{budget.used:.0f} s of training")
        if stopped:
            log(common.stopped_message(cfg, record, run_dir))
            break

    results = common.evaluate_best(run_dir, MODEL_FORMAT, model,
                                   {split: functools.partial(predict, model, data[split], device)
                                    for split in ("val", "test")},
                                   CLASSES, "accuracy", "IMDB", log)
    metrics = {"task": "imdb", "best": best, "history": history, **results, "vectors": cfg.vectors,
               "train_seconds": round(budget.used, 1)}
    common.write_metrics(run_dir, metrics)
    log(f"IMDB: test accuracy {results['test']['accuracy']:.4f} (validation {results['val']['accuracy']:.4f}, "
        f"best epoch {best['epoch']:.2f}); outputs in {run_dir}")
    return metrics
