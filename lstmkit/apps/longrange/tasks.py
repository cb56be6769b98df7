"""Synthetic tasks whose answer depends on something far back, as seeded generators.

Each task turns (batch size, length, numpy Generator) into time-major inputs `x` (T, B, I)
and targets, and knows which model outputs it reads, its loss, its metric and chance level.
The same seed gives the same batches, bit for bit.

- adding (Hochreiter & Schmidhuber 1997, experiment 4; the two-halves form of Arjovsky et al.
  2016): two channels, a value ~ U(0, 1) and a marker; one marker in the first half, one in
  the second; the target is the sum of the two marked values. length = T. Metric: MSE;
  predicting the mean 1.0 gives Var(U1 + U2) = 1/6 ~ 0.167 (chance).
- copy (delayed recall; the copy-memory task of Arjovsky et al. 2016, K = 10 symbols from an
  alphabet of A = 8): K symbols, `length` blank steps, a recall marker, K-1 more blanks; the
  model must emit the K symbols in order over the last K steps. length = the delay (0: the
  marker follows the symbols at once). Metric: accuracy per symbol; chance 1/A. K = 10, not
  fewer: 8^10 ~ 1e9 sequences, so the default budget (256,000 training examples) draws
  almost no held-out one (with K = 5, 8^5 = 32,768 sequences, it drew 99.9% of them, and
  held-out accuracy measured recall of sequences seen in training).
- agreement (in the spirit of Linzen et al. 2016, "The cat(s), which ..., was/were full"):
  a subject noun, singular or plural, the word "which", a distractor clause of `length`
  words (fillers, and attractor nouns of random number), then a query step where the model
  must give the subject's number. The nearest noun is an attractor of random number, so
  looking back only a little gives chance. length = the clause length (0: no attractor, the
  baseline). Metric: accuracy; chance 1/2. Short clauses have few sequences (8 at length 0,
  8 * 16^(length-1) * 8 from length 1: 16,384 at length 3): the default budget draws in
  training every held-out sequence up to length 3, 72% of them at length 4, about 10% at 5
  and 1% at 6, so at short lengths held-out accuracy cannot tell the rule from a lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Task:
    name: str
    input_size: int
    output_size: int
    metric: str  # "mse" (lower is better) or "accuracy" (higher is better)
    chance: float
    solved: float  # the metric at which a run counts as solved (and may stop early)
    length_name: str  # what `length` means for the task, for messages
    min_length: int  # the shortest length the generator can make

    def check_length(self, length: int) -> None:
        if length < self.min_length:
            raise ValueError(f"{self.name}: {self.length_name} must be >= {self.min_length}, got {length}")

    def generate(self, batch: int, length: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def read(self, out: Tensor) -> Tensor:
        """The outputs the task is scored on, from the model's outputs at every step (T, B, O)."""
        raise NotImplementedError

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, out: Tensor, y: Tensor) -> float:
        raise NotImplementedError

    def is_solved(self, value: float) -> bool:
        return value <= self.solved if self.metric == "mse" else value >= self.solved

    def seq_len(self, length: int) -> int:
        return length

    def read_steps(self) -> int:
        """How many of the last steps `read` takes outputs from (the steps the loss is read at)."""
        return 1


class Adding(Task):
    def __init__(self) -> None:
        # One marked value in each half: a half needs one step.
        super().__init__("adding", 2, 1, "mse", 1.0 / 6.0, 0.002, "length", 2)

    def generate(self, batch, length, rng):
        self.check_length(length)
        values = rng.random((length, batch), dtype=np.float64).astype(np.float32)
        first = rng.integers(0, length // 2, size=batch)
        second = rng.integers(length // 2, length, size=batch)
        markers = np.zeros((length, batch), dtype=np.float32)
        cols = np.arange(batch)
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        y = values[first, cols] + values[second, cols]
        return torch.from_numpy(np.stack([values, markers], -1)), torch.from_numpy(y)

    def read(self, out):
        return out[-1, :, 0]

    def loss(self, out, y):
        return F.mse_loss(self.read(out), y)

    def score(self, out, y):
        return float(F.mse_loss(self.read(out), y))


class Copy(Task):
    def __init__(self, symbols: int = 10, alphabet: int = 8) -> None:
        # channels: alphabet symbols, blank, recall marker
        super().__init__("copy", alphabet + 2, alphabet, "accuracy", 1.0 / alphabet, 0.99, "the delay", 0)
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "alphabet", alphabet)

    def seq_len(self, length):
        return 2 * self.symbols + length

    def read_steps(self):
        return self.symbols

    def generate(self, batch, length, rng):
        self.check_length(length)
        K, A = self.symbols, self.alphabet
        T = self.seq_len(length)
        seq = rng.integers(0, A, size=(K, batch))
        tokens = np.full((T, batch), A, dtype=np.int64)  # blank
        tokens[:K] = seq
        tokens[K + length] = A + 1  # recall marker
        x = np.eye(A + 2, dtype=np.float32)[tokens]  # (T, B, A+2)
        return torch.from_numpy(x), torch.from_numpy(seq)  # y: (K, B)

    def read(self, out):
        return out[-self.symbols:]  # (K, B, A)

    def loss(self, out, y):
        logits = self.read(out)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def score(self, out, y):
        return float((self.read(out).argmax(-1) == y).float().mean())


class Agreement(Task):
    """Tokens: nouns 0..2N-1 (stem s singular = 2s, plural = 2s+1), "which", fillers, query."""

    def __init__(self, nouns: int = 4, fillers: int = 8, attractor_rate: float = 0.3) -> None:
        vocab = 2 * nouns + 1 + fillers + 1
        super().__init__("agreement", vocab, 2, "accuracy", 0.5, 0.99, "the clause length", 0)
        object.__setattr__(self, "nouns", nouns)
        object.__setattr__(self, "fillers", fillers)
        object.__setattr__(self, "attractor_rate", attractor_rate)

    def seq_len(self, length):
        return length + 3

    def generate(self, batch, length, rng):
        self.check_length(length)
        N, nf = self.nouns, self.fillers
        which, first_filler, query = 2 * N, 2 * N + 1, 2 * N + 1 + nf
        number = rng.integers(0, 2, size=batch)  # 0 singular, 1 plural: the target
        subject = 2 * rng.integers(0, N, size=batch) + number
        clause = first_filler + rng.integers(0, nf, size=(length, batch))
        attractor = rng.random((length, batch)) < self.attractor_rate
        attractor_nouns = 2 * rng.integers(0, N, size=(length, batch)) + rng.integers(0, 2, size=(length, batch))
        clause = np.where(attractor, attractor_nouns, clause)
        if length:
            # The last clause word is always an attractor of random number: the nearest noun says nothing.
            clause[-1] = attractor_nouns[-1]
        tokens = np.concatenate([subject[None], np.full((1, batch), which), clause, np.full((1, batch), query)])
        x = np.eye(self.input_size, dtype=np.float32)[tokens]
        return torch.from_numpy(x), torch.from_numpy(number)

    def read(self, out):
        return out[-1]  # (B, 2)

    def loss(self, out, y):
        return F.cross_entropy(self.read(out), y)

    def score(self, out, y):
        return float((self.read(out).argmax(-1) == y).float().mean())


TASKS: dict[str, Task] = {t.name: t for t in (Adding(), Copy(), Agreement())}
DEFAULT_LENGTHS = {"adding": (50, 100, 200), "copy": (10, 50, 100), "agreement": (5, 20, 50)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {name!r}")
    return TASKS[name]
