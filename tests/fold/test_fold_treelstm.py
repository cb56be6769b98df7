"""Tree-LSTM modules: the Fold-batched path, the eager run and the plain recursion give the same
values and gradients, for binary (constituency) and Child-Sum trees."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from lstmkit.fold import BinaryTreeLSTM, ChildSumTreeLSTM, Fold, Tree, random_binary_tree

D = torch.float64
VOCAB = 11


def random_tree(rng: random.Random, depth: int) -> Tree:
    """Any number of children (0-4); a word at every leaf and at about half the inner nodes."""
    k = 0 if depth == 0 else rng.choice([0, 1, 2, 3, 4])
    word = rng.randrange(VOCAB) if (k == 0 or rng.random() < 0.5) else None
    return Tree(rng.randrange(5), [random_tree(rng, depth - 1) for _ in range(k)], word)


def caterpillar(n: int) -> Tree:
    t = Tree(0, word=0)
    for k in range(1, n):
        t = Tree(0, [t, Tree(0, word=k % VOCAB)])
    return t


def outputs_and_grads(module: nn.Module, trees, mode):
    module.zero_grad()
    node_h, root_h = module(trees, mode=mode)
    w = torch.linspace(-1, 1, node_h.numel(), dtype=D).view_as(node_h)
    ((node_h * w).sum() + root_h.square().sum()).backward()
    return node_h.detach(), root_h.detach(), [p.grad.clone() for p in module.parameters()]


def assert_same(a, b):
    for x, y in zip(a[:2], b[:2]):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)
    for x, y in zip(a[2], b[2]):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_fold_eager_recursive_agree(seed):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    trees = [random_binary_tree(rng.randint(1, 12), VOCAB, rng) for _ in range(9)]
    module = BinaryTreeLSTM(4, 6, embedding=nn.Embedding(VOCAB, 4)).to(D)
    ref = outputs_and_grads(module, trees, "recursive")
    assert_same(outputs_and_grads(module, trees, "fold"), ref)
    assert_same(outputs_and_grads(module, trees, "eager"), ref)
    assert ref[0].shape == (sum(t.size() for t in trees), 6) and ref[1].shape == (9, 6)


@pytest.mark.parametrize("seed", [0, 1])
def test_child_sum_fold_eager_recursive_agree(seed):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    trees = [random_tree(rng, rng.randint(0, 4)) for _ in range(8)]
    module = ChildSumTreeLSTM(4, 6, embedding=nn.Embedding(VOCAB, 4)).to(D)
    ref = outputs_and_grads(module, trees, "recursive")
    assert_same(outputs_and_grads(module, trees, "fold"), ref)
    assert_same(outputs_and_grads(module, trees, "eager"), ref)


def test_vector_leaves_without_embedding():
    torch.manual_seed(0)
    vecs = [torch.randn(3, dtype=D, requires_grad=True) for _ in range(3)]
    tree = Tree(1, [Tree(0, word=vecs[0]), Tree(2, [Tree(0, word=vecs[1]), Tree(0, word=vecs[2])])])
    module = BinaryTreeLSTM(3, 5).to(D)
    grads = []
    for mode in ("fold", "recursive"):
        for v in vecs:
            v.grad = None
        _, root = module([tree], mode=mode)
        root.sum().backward()
        grads.append([v.grad.clone() for v in vecs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_deep_tree_is_recorded_without_recursion():
    module = BinaryTreeLSTM(3, 4, embedding=nn.Embedding(VOCAB, 3)).to(D)
    tree = caterpillar(1500)  # deeper than Python's recursion limit
    node_h, root_h = module([tree], mode="fold")
    fold = Fold()
    module.record(fold, tree)
    assert fold.schedule()[-1][:2] == ("node", 1499)
    assert node_h.shape == (2999, 4) and torch.isfinite(root_h).all()


def test_binary_module_rejects_other_arities():
    module = BinaryTreeLSTM(3, 4, embedding=nn.Embedding(VOCAB, 3))
    tree = Tree(0, [Tree(0, word=1), Tree(0, word=2), Tree(0, word=3)])
    for mode in ("fold", "recursive"):
        with pytest.raises(ValueError, match="0 or 2 children"):
            module([tree], mode=mode)
    with pytest.raises(TypeError, match="token ids"):
        module([Tree(0, word="film")])
    with pytest.raises(ValueError, match="mode"):
        module([tree], mode="batched")
