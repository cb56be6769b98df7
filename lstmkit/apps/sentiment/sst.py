"""`lstmkit sentiment sst`: a constituency Tree-LSTM on the Stanford Sentiment Treebank.

Every node of a training tree carries a label, and the loss is the cross-entropy over all
labelled nodes (Tai et al. 2015; `--no-all-nodes` for roots only). Trees of a batch are
recorded on one Fold and run as one batched call per (op, depth). The reported figure is
root (sentence) accuracy on dev (each epoch; the best epoch's model is kept) and on test.
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
from lstmkit.apps.sentiment.config import SSTConfig
from lstmkit.apps.sentiment.models import TreeSentiment
from lstmkit.apps.sentiment.vocab import Vocab, load_vectors
from lstmkit.data.sst import BINARY_CLASSES, FINE_CLASSES, load_splits, to_binary
from lstmkit.fold import Tree
from lstmkit.utils.runs import rng_state, seed_everything

MODEL_FORMAT = "lstmkit.sentiment.sst.model/1"
CHECKPOINT_FORMAT = "lstmkit.sentiment.sst.checkpoint/1"
EVAL_BATCH = 256


def classes(cfg: SSTConfig) -> tuple[str, ...]:
    return FINE_CLASSES if cfg.task == "fine" else BINARY_CLASSES


def load_data(cfg: SSTConfig, vocab: Vocab | None = None) -> tuple[dict[str, list[Tree]], Vocab]:
    """The splits with words mapped to ids (the vocabulary is built on train unless given)."""
    splits = load_splits(cfg.data_dir)
    if cfg.task == "binary":
        splits = {k: to_binary(v) for k, v in splits.items()}
    if cfg.train_limit:
        splits["train"] = splits["train"][: cfg.train_limit]
    for k, trees in splits.items():
        if not trees:  # files are never empty (load_splits), but the binary task can drop every tree
            raise ValueError(f"{Path(cfg.data_dir) / f'{k}.txt'}: no tree with a non-neutral root, nothing "
                             "for --task binary (it drops sentences whose root is neutral)")
    norm = str.lower if cfg.lowercase else (lambda w: w)
    for k, trees in splits.items():
        for i, t in enumerate(trees):
            for n in t.postorder():
                if len(n.children) not in (0, 2):
                    raise ValueError(f"SST {k}: tree {i + 1} has a node with {len(n.children)} children; "
                                     "the constituency Tree-LSTM needs binary trees")
    if vocab is None:
        vocab = Vocab.build((norm(w) for t in splits["train"] for w in t.words()), min_freq=cfg.min_freq)
    mapped = {k: [t.map(word=lambda w: vocab[norm(w)]) for t in v] for k, v in splits.items()}
    return mapped, vocab


def node_labels(trees: list[Tree], all_nodes: bool) -> torch.Tensor:
    """Targets in the models' node order (post-order, tree after tree); -100: no label / not used."""
    out = []
    for t in trees:
        nodes = list(t.postorder())
        out.extend((n.label if n.label is not None and (all_nodes or n is t) else -100) for n in nodes)
    return torch.tensor(out, dtype=torch.int64)


@torch.no_grad()
def predict(model: TreeSentiment, trees: list[Tree], mode: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(root predictions, root labels) of `trees`."""
    model.eval()
    preds = []
    for i in range(0, len(trees), EVAL_BATCH):
        _, root_logits = model(trees[i:i + EVAL_BATCH], mode=mode)
        preds.append(root_logits.argmax(1).cpu())
    return torch.cat(preds), torch.tensor([t.label for t in trees])


def build_model(cfg: SSTConfig, vocab: Vocab) -> TreeSentiment:
    return TreeSentiment(len(vocab), cfg.embedding_size, cfg.hidden_size, len(classes(cfg)), cfg.dropout)


def train_sst(cfg: SSTConfig | None = None, out: str | None = None, resume: str | None = None,
              overrides: dict | None = None, log=print) -> dict:
    """Train (or resume) a run; returns its metrics (also written to metrics.json)."""
    return common.train(SSTConfig, CHECKPOINT_FORMAT, lambda cfg: f"sst-{cfg.task}", _train, cfg, out, resume,
                        overrides, log)


def _train(cfg: SSTConfig, state: dict | None, run_dir: Path, log) -> dict:
    device = torch.device(cfg.device)  # resolved by common.train
    seed_everything(cfg.seed)

    data, vocab = load_data(cfg, Vocab.from_list(state["vocab"]) if state else None)
    vectors_found = None
    if state is None and cfg.vectors:
        matrix, vectors_found = load_vectors(cfg.vectors, vocab, lowercase_fallback=not cfg.lowercase)
        cfg.embedding_size = matrix.shape[1]
    model = build_model(cfg, vocab)
    if state is None and cfg.vectors:
        with torch.no_grad():
            model.embedding.weight.copy_(matrix)
    model.embedding.weight.requires_grad_(not cfg.freeze_embeddings)
    model.to(device)
    opt = common.make_optimizer(cfg, model, model.embedding, cfg.embedding_lr)

    history, best, start_epoch = common.begin(state, run_dir, cfg, model, opt, vocab.to_list(), "dev_accuracy")

    train, dev, test = data["train"], data["dev"], data["test"]
    log(f"SST {cfg.task}: {len(train)} train / {len(dev)} dev / {len(test)} test trees, "
        f"vocabulary {len(vocab)}" + (f", {vectors_found} words with vectors from {cfg.vectors}"
                                      if vectors_found is not None else ", random embeddings")
        + f"; run directory {run_dir}")
    train_targets = [node_labels([t], cfg.all_nodes) for t in train]
    budget = common.Budget(cfg.max_time)
    order = list(range(len(train)))
    rng = random.Random(cfg.seed)
    for _ in range(start_epoch - 1):
        rng.shuffle(order)  # the orders of the epochs already done, so a resumed run continues the same
    stopped = False
    for epoch in range(start_epoch, cfg.epochs + 1):
        rng.shuffle(order)
        model.train()
        total, count, steps = 0.0, 0, 0
        batches = range(0, len(order), cfg.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not cfg.progress, file=sys.stderr)
        budget.start()
        for b in bar:
            idx = order[b:b + cfg.batch_size]
            trees = [train[i] for i in idx]
            target = torch.cat([train_targets[i] for i in idx]).to(device)
            node_logits, _ = model(trees, mode=cfg.mode)
            loss = F.cross_entropy(node_logits, target, ignore_index=-100, reduction="sum")
            n = int((target != -100).sum())
            opt.zero_grad(set_to_none=True)
            (loss / max(n, 1)).backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += float(loss.detach())
            count += n
            steps += 1
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
            if budget.exhausted:
                stopped = True
                break
        budget.stop()
        bar.close()
        pred, gold = predict(model, dev, cfg.mode, device)
        dev_acc = float((pred == gold).float().mean())
        fraction = steps / len(batches)
        record = {"epoch": epoch - 1 + fraction, "train_loss": total / max(count, 1),
                  "dev_accuracy": dev_acc, "train_seconds": round(budget.used, 1)}
        best, improved = common.end_epoch(run_dir, (MODEL_FORMAT, CHECKPOINT_FORMAT), cfg, model, opt, vocab.to_list(),
                                          epoch, history, best, record, "dev_accuracy", rng_state())
        log(f"epoch {record['epoch']:.2f}: train loss {record['train_loss']:.4f}, dev root accuracy "
            f"{dev_acc:.4f}{' (best)' if improved else ''}, {budget.used:.0f} s of training")
        if stopped:
            log(common.stopped_message(cfg, record, run_dir))
            break

    results = common.evaluate_best(run_dir, MODEL_FORMAT, model,
                                   {split: functools.partial(predict, model, trees, cfg.mode, device)
                                    for split, trees in (("dev", dev), ("test", test))},
                                   classes(cfg), "root_accuracy", f"SST {cfg.task}", log)
    metrics = {"task": f"sst-{cfg.task}", "best": best, "history": history, **results,
               "vectors": cfg.vectors, "train_seconds": round(budget.used, 1)}
    common.write_metrics(run_dir, metrics)
    log(f"SST {cfg.task}: test root accuracy {results['test']['root_accuracy']:.4f} "
        f"(dev {results['dev']['root_accuracy']:.4f}, best epoch {best['epoch']:.2f}); outputs in {run_dir}")
    return metrics
