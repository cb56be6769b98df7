"""d2l partitioning: each token once per epoch, state carried across sequential batches, rank shards."""

import numpy as np
import pytest
import torch

from lstmkit.apps.charlm.batching import batches, eval_rows, num_batches, random_batches, sequential_batches
from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.model import CharLM


def positions(n):
    return torch.arange(n)  # token i has id i: batches show which positions they hold


@pytest.mark.parametrize("n, B, T, seed", [(1000, 4, 7, 0), (1001, 3, 10, 1), (97, 2, 5, 2), (5000, 32, 35, 3)])
def test_sequential_sees_every_token_once_and_rows_continue(n, B, T, seed):
    ids = positions(n)
    rng = np.random.default_rng(seed)
    got = list(sequential_batches(ids, B, T, rng))
    xs = torch.cat([x for x, _ in got], 1)  # (B, L): row i of every batch, in order
    ys = torch.cat([y for _, y in got], 1)
    assert torch.equal(ys, xs + 1)  # targets are the next tokens
    # Row i of batch k+1 continues row i of batch k: each row is one contiguous stretch of text.
    assert torch.equal(xs[:, 1:] - xs[:, :-1], torch.ones_like(xs[:, 1:]))
    # ... and the rows tile the text: every input position at most once, all but < T + B of them.
    flat = xs.flatten()
    assert len(set(flat.tolist())) == len(flat)
    assert torch.equal(flat, torch.arange(int(flat[0]), int(flat[0]) + len(flat)))
    assert n - 1 - len(flat) < T + B
    assert all(x.shape[1] == T for x, _ in got[:-1]) and 0 < got[-1][0].shape[1] <= T
    assert len(got) == num_batches(n, B, T, "sequential") or len(got) == num_batches(n, B, T, "sequential") - 1


@pytest.mark.parametrize("n, B, T", [(1000, 4, 7), (5000, 32, 35)])
def test_random_windows_are_disjoint_and_shuffled(n, B, T):
    ids = positions(n)
    got = list(random_batches(ids, B, T, np.random.default_rng(0)))
    assert len(got) == num_batches(n, B, T, "random") or len(got) == num_batches(n, B, T, "random") - 1
    starts = []
    for x, y in got:
        assert x.shape == (B, T) and torch.equal(y, x + 1)
        assert torch.equal(x - x[:, :1], torch.arange(T).expand(B, T))  # contiguous windows
        starts += x[:, 0].tolist()
    assert len(set(starts)) == len(starts)
    assert len({s % T for s in starts}) == 1  # one offset per epoch, windows on its grid
    assert starts != sorted(starts)


@pytest.mark.parametrize("partition", ["sequential", "random"])
def test_epochs_depend_on_seed_and_epoch_only(partition):
    ids = positions(2000)
    a = [x for x, _ in batches(partition, ids, 4, 9, seed=5, epoch=3)]
    b = [x for x, _ in batches(partition, ids, 4, 9, seed=5, epoch=3)]
    c = [x for x, _ in batches(partition, ids, 4, 9, seed=5, epoch=4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and len(a) == len(b)
    assert not all(torch.equal(u, v) for u, v in zip(a, c) if u.shape == v.shape)


@pytest.mark.parametrize("partition", ["sequential", "random"])
def test_ranks_take_disjoint_rows_of_the_global_batch(partition):
    ids = positions(3000)
    full = list(batches(partition, ids, 8, 11, seed=1, epoch=0))
    shards = [list(batches(partition, ids, 8, 11, seed=1, epoch=0, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(full)
    for k, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([shards[0][k][0], shards[1][k][0]]), x)
        assert torch.equal(torch.cat([shards[0][k][1], shards[1][k][1]]), y)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        next(batches(partition, ids, 7, 11, seed=1, epoch=0, rank=0, world=2))


def test_carried_state_equals_one_long_read():
    """Sequential TBPTT's forward: chunks with the state carried = the whole stream in one call."""
    torch.manual_seed(0)
    model = CharLM(20, CharLMConfig(embedding_size=6, hidden_size=12, output_dropout=0.0, backend="reference")).eval()
    ids = torch.randint(0, 20, (300,))
    got = list(sequential_batches(ids, 3, 8, np.random.default_rng(0)))
    xs = torch.cat([x for x, _ in got], 1)
    with torch.no_grad():
        whole, _ = model(xs.T)
        state, parts = None, []
        for x, _ in got:
            logits, state = model(x.T, state)
            parts.append(logits)
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-6)


def test_eval_rows_cover_every_target_once():
    ids = torch.arange(1, 104)  # 103 tokens -> 102 targets
    for rows in (1, 5, 16, 200):
        x, y = eval_rows(ids, rows)
        targets = y[y >= 0]
        assert sorted(targets.tolist()) == list(range(2, 104))
        assert torch.equal(y[y >= 0], x[y >= 0] + 1)
