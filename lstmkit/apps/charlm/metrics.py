"""Perplexity and bits per character from summed negative log-likelihoods, and model evaluation.

    perplexity = exp(total NLL / tokens)           NLL in nats
    bpc        = total NLL / (ln 2 * characters)   characters == tokens at character level
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmkit.apps.charlm.batching import eval_rows
from lstmkit.nn.checks import positive_int

# The largest mean NLL (nats per token) whose perplexity, exp(loss), a float holds: past it,
# math.exp raises OverflowError.
MAX_LOSS = math.log(sys.float_info.max)


@dataclass(frozen=True)
class Metrics:
    nll: float  # summed, nats
    tokens: int
    chars: int

    @property
    def loss(self) -> float:
        """Mean NLL per token, nats."""
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        """inf past MAX_LOSS: `lstmkit eval` of a text a model fits that badly reports it, not a traceback."""
        return math.inf if self.loss >= MAX_LOSS else math.exp(self.loss)  # NaN stays NaN

    @property
    def bpc(self) -> float:
        return self.nll / (math.log(2) * self.chars)

    def line(self, what: str = "validation") -> str:
        """The one-line summary that ends `lstmkit train`, `eval` and `ngram` output."""
        return (f"{what}: perplexity {self.perplexity:.4f}, bits per character {self.bpc:.4f} "
                f"({self.tokens:,} tokens)")

    def to_dict(self) -> dict:
        return {"loss": self.loss, "perplexity": self.perplexity, "bpc": self.bpc,
                "tokens": self.tokens, "chars": self.chars}


def check_scored(n: int) -> None:
    """Refuse `ids` of fewer than 2 tokens: only the tokens after the first are scored, and none
    scored is a loss of 0 / 0."""
    if n < 2:
        raise ValueError(f"ids: expected at least 2 tokens (the first is only context), got {n}")


@torch.no_grad()
def evaluate(model, ids: Tensor, chunk: int = 256, rows: int = 4, char_lengths: Tensor | None = None,
             rank: int = 0, world: int = 1, device=None) -> Metrics:
    """NLL of every token of `ids` after the first, given the tokens before it in `ids`.

    The text is read as `rows` contiguous streams, each from a zero state, `chunk` tokens per
    call with the state carried (`chunk` changes nothing but speed). One row gives every token
    its whole history; each extra row starts cold once, which costs little (one model on the
    Time Machine validation split: 2.1271 bpc with 1 row, 2.1286 with 4, 2.1299 with 16) and
    saves much time at batch 1, where a step costs nearly as much as at batch 4. Under data
    parallelism each rank reads its share of the streams and the sums are all-reduced.
    `model(x (T, B), state) -> (logits, state)`.
    """
    if not isinstance(ids, Tensor):
        raise TypeError(f"ids: expected a 1-D tensor of token ids, got {type(ids).__name__}")
    if ids.dim() != 1:
        raise ValueError(f"ids: expected a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
    check_scored(len(ids))
    positive_int("chunk", chunk)  # range() refuses 0, and a negative step reads nothing
    positive_int("rows", rows)
    positive_int("world", world)
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank: expected an int, got {type(rank).__name__}")
    if not 0 <= rank < world:  # a rank past the last reads no stream, and nothing says so
        raise ValueError(f"rank: expected an int in [0, world={world}), got {rank!r}")
    was_training = model.training
    model.eval()
    try:
        x_all, y_all = eval_rows(ids, rows)
        mine = slice(rank, None, world)
        x_all, y_all = x_all[mine], y_all[mine]
        nll = torch.zeros((), dtype=torch.float64)
        chars = torch.zeros((), dtype=torch.float64)
        tokens = torch.zeros((), dtype=torch.int64)
        state = None
        if len(x_all):
            for i in range(0, x_all.shape[1], chunk):
                x = x_all[:, i: i + chunk].T.contiguous().to(device)  # (T, B)
                y = y_all[:, i: i + chunk].T.contiguous().to(device)
                logits, state = model(x, state)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                       ignore_index=-100, reduction="sum")
                nll += loss.double().cpu()
                valid = y.reshape(-1).cpu()
                valid = valid[valid >= 0]
                tokens += len(valid)
                chars += len(valid) if char_lengths is None else char_lengths[valid].sum()
        if world > 1:
            import torch.distributed as dist
            sums = torch.stack([nll, chars, tokens.double()]).to(device)  # nccl needs GPU tensors
            dist.all_reduce(sums)
            nll, chars, tokens = sums.cpu().unbind()
        return Metrics(float(nll), int(tokens), int(round(float(chars))))
    finally:
        model.train(was_training)
