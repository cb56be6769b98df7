"""Minibatches for truncated BPTT, as the d2l book makes them (sec. 9.3), with ranks' shards.

Random partitioning: drop a random offset, cut the rest into windows of `num_steps`, shuffle
the windows, `batch_size` windows per batch. Windows of one batch are unrelated to the next
batch's, so the state starts from zero every batch.

Sequential partitioning: drop a random offset, lay the rest out as `batch_size` contiguous
streams (rows), and walk along them `num_steps` at a time, so row i of batch k+1 continues row
i of batch k and the state is carried (detached) across batches. Unlike the book, the last
batch of an epoch is shorter when the rows are not a multiple of `num_steps` long, so every
token after the offset is an input exactly once per epoch (bar fewer than `batch_size` at the end).

Randomness comes from a generator seeded by (seed, epoch) alone: an epoch's batches are the
same however training got there, which is what makes resuming mid-epoch exact.

Under data parallelism `batch_size` is the global batch; rank r of w takes rows
[r*B/w, (r+1)*B/w) of every batch: in sequential mode that is a contiguous shard of the text.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def rows_per_process(batch_size: int, world: int) -> int:
    """Each process's rows of the global batch, which they share evenly."""
    if batch_size % world:
        raise ValueError(f"batch_size: expected a multiple of the number of processes ({world}), got {batch_size} "
                         "(the global batch is split evenly across them)")
    return batch_size // world


def _rows(batch_size: int, rank: int, world: int) -> slice:
    per = rows_per_process(batch_size, world)
    return slice(rank * per, (rank + 1) * per)


def sequential_batches(ids: Tensor, batch_size: int, num_steps: int, rng: np.random.Generator,
                       rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """(X, Y) of shape (B/world, T'), T' = num_steps except maybe the last; Y is X shifted by one."""
    rows = _rows(batch_size, rank, world)
    offset = int(rng.integers(0, num_steps))
    length = (len(ids) - offset - 1) // batch_size
    n = length * batch_size
    xs = ids[offset: offset + n].reshape(batch_size, length)[rows]
    ys = ids[offset + 1: offset + 1 + n].reshape(batch_size, length)[rows]
    for i in range(0, length, num_steps):
        yield xs[:, i: i + num_steps], ys[:, i: i + num_steps]


def random_batches(ids: Tensor, batch_size: int, num_steps: int, rng: np.random.Generator,
                   rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """(X, Y) of shape (B/world, num_steps): random, non-overlapping windows of the text."""
    rows = _rows(batch_size, rank, world)
    offset = int(rng.integers(0, num_steps))
    n_windows = (len(ids) - offset - 1) // num_steps
    starts = offset + num_steps * rng.permutation(n_windows)
    index = torch.arange(num_steps)
    for b in range(n_windows // batch_size):
        s = torch.from_numpy(starts[b * batch_size: (b + 1) * batch_size][rows]).unsqueeze(1) + index
        yield ids[s], ids[s + 1]


def num_batches(n_tokens: int, batch_size: int, num_steps: int, partition: str) -> int:
    """Batches per epoch (the exact count can be one less for some offsets)."""
    if partition == "sequential":
        return -(-((n_tokens - 1) // batch_size) // num_steps)
    return ((n_tokens - 1) // num_steps) // batch_size


def batches(partition: str, ids: Tensor, batch_size: int, num_steps: int, seed: int, epoch: int,
            rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    fn = {"sequential": sequential_batches, "random": random_batches}[partition]
    return fn(ids, batch_size, num_steps, epoch_rng(seed, epoch), rank, world)


def eval_rows(ids: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """All of `ids` as `rows` streams for evaluation: every token after the first is a target once.

    Returns X, Y of shape (rows, L); the last stream is padded (X with 0, Y with -100, the
    loss's ignore_index).
    """
    n = len(ids) - 1
    rows = max(1, min(rows, n))
    length = -(-n // rows)
    x = torch.zeros(rows * length, dtype=ids.dtype)
    y = torch.full((rows * length,), -100, dtype=ids.dtype)
    x[:n], y[:n] = ids[:-1], ids[1:]
    return x.reshape(rows, length), y.reshape(rows, length)
