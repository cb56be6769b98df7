"""Tree-LSTM modules: the Fold-batched path, the eager run and the plain recursion give the same
values and gradients, for binary (constituency) and Child-Sum trees."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
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
        with pytest.raises(ValueError, match=r"trees\[0\]: children: expected 0 or 2 at every node .* got 3"):
            module([tree], mode=mode)
    with pytest.raises(TypeError, match=r"trees\[1\]: word: expected a token id \(int\) with an embedding, got str"):
        module([Tree(0, word=1), Tree(0, word="film")])
    with pytest.raises(ValueError, match="mode"):
        module([tree], mode="batched")


def test_shared_subtrees_agree_in_every_mode():
    """One Tree object as the child of several nodes (a DAG): each occurrence is a node."""
    torch.manual_seed(0)
    leaf, other = Tree(1, word=5), Tree(2, word=7)
    pair = Tree(0, [leaf, other])
    binary = [Tree(1, [leaf, leaf]), Tree(0, [pair, Tree(3, [pair, leaf])]), leaf]
    child_sum = [Tree(1, [leaf, leaf, pair], word=2), Tree(0, [pair, pair]), leaf]
    for module, trees in ((BinaryTreeLSTM(4, 6, embedding=nn.Embedding(VOCAB, 4)).to(D), binary),
                          (ChildSumTreeLSTM(4, 6, embedding=nn.Embedding(VOCAB, 4)).to(D), child_sum)):
        ref = outputs_and_grads(module, trees, "recursive")
        assert ref[0].shape[0] == sum(t.size() for t in trees)  # every occurrence has its row
        assert_same(outputs_and_grads(module, trees, "fold"), ref)
        assert_same(outputs_and_grads(module, trees, "eager"), ref)


def test_deep_tree_with_a_shared_leaf():
    module = BinaryTreeLSTM(3, 4, embedding=nn.Embedding(VOCAB, 3)).to(D)
    leaf = Tree(0, word=5)
    tree = leaf
    for _ in range(1500):  # deeper than the recursion limit: fold and eager only
        tree = Tree(0, [tree, leaf])
    assert_same(outputs_and_grads(module, [tree], "fold"), outputs_and_grads(module, [tree], "eager"))


def test_deep_tree_records_each_node_once():
    module = BinaryTreeLSTM(3, 4, embedding=nn.Embedding(VOCAB, 3))
    for right in (False, True):
        tree = Tree(0, word=5)
        for k in range(1500):
            tree = Tree(0, [Tree(0, word=k % VOCAB), tree] if right else [tree, Tree(0, word=k % VOCAB)])
        fold = Fold(cache=False)  # every add is recorded: len(fold) counts the calls
        nodes = module.record(fold, tree)
        assert len(fold) == len(nodes) == tree.size() == 3001
        assert fold.schedule()[0] == ("leaf", 0, 1501)


def test_input_errors_name_what_was_expected():
    with_ids = BinaryTreeLSTM(3, 4, embedding=nn.Embedding(VOCAB, 3))
    for module in (BinaryTreeLSTM(3, 4), ChildSumTreeLSTM(3, 4)):
        for mode in ("fold", "eager", "recursive"):
            with pytest.raises(TypeError, match=r"trees\[0\]: word: expected a tensor of shape \(3,\) without an "
                                                r"embedding, got int"):
                module([Tree(0, word=3)], mode=mode)
            with pytest.raises(ValueError, match=r"trees\[0\]: word: expected a vector of shape \(3,\) \(input_size\), "
                                                 r"got \(5,\)"):
                module([Tree(0, [Tree(0, word=torch.zeros(3)), Tree(0, word=torch.zeros(5))])], mode=mode)
            with pytest.raises(TypeError, match="word vectors: expected the parameters' dtype torch.float32, got torch.float64"):
                module([Tree(0, word=torch.zeros(3, dtype=D))], mode=mode)
            with pytest.raises(TypeError, match=r"trees\[1\]: expected a Tree, got str"):
                module([Tree(0, word=torch.zeros(3)), "(1 (2 a) (3 b))"], mode=mode)
            with pytest.raises(TypeError, match=r"trees\[0\]: word: expected a token id .* got bool"):
                with_ids([Tree(0, [Tree(0, word=True), Tree(0, word=1)])], mode=mode)
            with pytest.raises(ValueError, match=r"trees\[1\]: word: expected one at a leaf, got None"):
                with_ids([Tree(0, word=1), Tree(0, [Tree(0, word=None), Tree(0, word=1)])], mode=mode)
    # numpy ids are token ids
    a = with_ids([Tree(0, [Tree(0, word=np.int64(1)), Tree(0, word=np.int32(2))])])[1]
    torch.testing.assert_close(a, with_ids([Tree(0, [Tree(0, word=1), Tree(0, word=2)])])[1])


def awkward_trees(vecs):
    """A single node, depth 1, and an unbalanced tree, on leaves that require grad."""
    single = Tree(0, word=vecs[0])
    depth1 = Tree(1, [Tree(0, word=vecs[1]), Tree(2, word=vecs[2])])
    unbalanced = Tree(0, [Tree(0, word=vecs[0]), Tree(0, [Tree(0, word=vecs[1]),
                                                            Tree(0, [Tree(0, word=vecs[2]), Tree(0, word=vecs[3])])])])
    return single, depth1, unbalanced


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_fold_gradcheck_on_awkward_trees(backend):
    torch.manual_seed(0)
    vecs = [torch.randn(2, dtype=D, requires_grad=True) for _ in range(4)]
    single, depth1, unbalanced = awkward_trees(vecs)
    binary = BinaryTreeLSTM(2, 3, backend=backend).to(D)  # "numba": the fused kernels, in float64
    child_sum = ChildSumTreeLSTM(2, 3).to(D)
    # Child-Sum: a node with a word and children, one without, a single child.
    cs_tree = Tree(0, [Tree(0, word=vecs[0]), Tree(0, [Tree(0, word=vecs[1])], word=vecs[2]),
                       Tree(0, [Tree(0, word=vecs[3])])])
    for module, trees in ((binary, [single, depth1, unbalanced]), (child_sum, [single, depth1, cs_tree])):
        for batch in [[t] for t in trees] + [trees]:
            assert torch.autograd.gradcheck(lambda *_: module(batch, mode="fold"), (*vecs, *module.parameters()))


def test_create_graph_needs_recursive_or_eager_torch_ops():
    torch.manual_seed(0)
    vecs = [torch.randn(2, dtype=D, requires_grad=True) for _ in range(4)]
    trees = list(awkward_trees(vecs))
    for module in (BinaryTreeLSTM(2, 3).to(D), BinaryTreeLSTM(2, 3, backend="numba").to(D), ChildSumTreeLSTM(2, 3).to(D)):
        inputs = (*vecs, *module.parameters())
        for mode in ("recursive", "eager"):
            assert torch.autograd.gradgradcheck(lambda *_: module(trees, mode=mode)[1], inputs)
        _, root = module(trees, mode="fold")
        with pytest.raises(RuntimeError, match="create_graph=True .* not supported through a batched Fold"):
            torch.autograd.grad(root.square().sum(), inputs, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float32, D])
def test_autograd_modes_and_torch_func_in_eager_match_recursive(dtype):
    """Forward-mode AD, torch.func.grad and batched gradients on the numba backend ("auto" in
    float32) hand the call to the reference ops (before: NotImplementedError/RuntimeError); in
    mode "fold" each is refused with a message naming it."""
    torch.manual_seed(0)
    vecs = [torch.randn(2, dtype=dtype) for _ in range(4)]
    module = BinaryTreeLSTM(2, 3, backend="numba").to(dtype)
    names = [n for n, _ in module.named_parameters()]

    def root(v0, mode, params=None):
        trees = awkward_trees([v0, *vecs[1:]])
        if params is None:
            return module(list(trees), mode=mode)[1]
        return torch.func.functional_call(module, dict(zip(names, params)), (list(trees),), {"mode": mode})[1]

    def tangent(mode):
        with fwAD.dual_level():
            return fwAD.unpack_dual(root(fwAD.make_dual(vecs[0], torch.ones_like(vecs[0])), mode)).tangent

    def func_grad(mode):
        return torch.func.grad(lambda ps: root(vecs[0], mode, ps).square().sum())(tuple(module.parameters()))

    def jacobian(mode):
        v = vecs[0].clone().requires_grad_()
        r = root(v, mode)
        eye = torch.eye(r.numel(), dtype=dtype).view(-1, *r.shape)
        return torch.autograd.grad(r, v, eye, is_grads_batched=True)[0]

    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for fn, error in ((tangent, "forward-mode AD"), (func_grad, "torch.func's transforms"),
                      (jacobian, "is_grads_batched=True")):
        torch.testing.assert_close(fn("eager"), fn("recursive"), **tol)
        with pytest.raises(RuntimeError, match=f"{error} .* not supported through a batched Fold"):
            fn("fold")


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_forward_ad_through_fold_when_nothing_requires_grad(backend):
    """The refusal guards the gradient buffer, which a fold with no tensor that requires grad
    does not build: tangents then flow through the memory's copies and reads."""
    torch.manual_seed(0)
    vecs = [torch.randn(2, dtype=D) for _ in range(4)]
    module = BinaryTreeLSTM(2, 3, backend=backend).to(D).requires_grad_(False)

    def tangent(mode):
        with fwAD.dual_level():
            trees = awkward_trees([fwAD.make_dual(vecs[0], torch.ones_like(vecs[0])), *vecs[1:]])
            return fwAD.unpack_dual(module(list(trees), mode=mode)[1]).tangent

    want = tangent("recursive")
    assert want is not None and want.abs().sum() > 0
    torch.testing.assert_close(tangent("fold"), want, rtol=1e-12, atol=1e-13)
