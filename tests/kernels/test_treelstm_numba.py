"""The fused float32 Tree-LSTM kernels against the reference cells (computed in float64): values
and every gradient, with gates large enough to reach the saturated ends of tanh and sigmoid."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from lstmkit.cells.treelstm import binary_tree_lstm_leaf, binary_tree_lstm_node
from lstmkit.fold import BinaryTreeLSTM, random_binary_tree
from lstmkit.kernels import treelstm_numba as kernels


def check(fused, reference, inputs, grad_out):
    """fused(*float32 inputs) vs reference(*float64 inputs): output and input gradients."""
    x32 = [t.detach().float().requires_grad_() for t in inputs]
    x64 = [t.detach().double().requires_grad_() for t in inputs]
    out32, out64 = fused(*x32), reference(*x64)
    out32.backward(grad_out.float())
    out64.backward(grad_out.double())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=2e-6)
    for a, b in zip(x32, x64):
        scale = b.grad.abs().max().item() + 1e-6
        torch.testing.assert_close(a.grad.double() / scale, b.grad / scale, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("B", [1, 37])
def test_leaf_kernel_matches_the_cell(B):
    g = torch.Generator().manual_seed(B)
    I, H = 7, 6
    x = torch.randn(B, I, generator=g) * 3  # gates up to about +-15: the clamped ends of tanh
    w, b = torch.randn(3 * H, I, generator=g), torch.randn(3 * H, generator=g)

    def reference(x, w, b):
        return torch.cat(binary_tree_lstm_leaf(x, w, b), 1)

    check(kernels.LeafFn.apply, reference, [x, w, b], torch.randn(B, 2 * H, generator=g))


@pytest.mark.parametrize("B", [1, 37])
def test_node_kernel_matches_the_cell(B):
    g = torch.Generator().manual_seed(B)
    H = 6
    P = torch.randn(B, 2, 2 * H, generator=g) * 2  # children states [[h_l, c_l], [h_r, c_r]]
    w, b = torch.randn(5 * H, 2 * H, generator=g), torch.randn(5 * H, generator=g)

    def reference(P, w, b):
        hx = torch.cat([P[:, 0, :H], P[:, 1, :H]], 1)
        return torch.cat(binary_tree_lstm_node(hx, P[:, 0, H:], P[:, 1, H:], w, b), 1)

    check(kernels.NodeFn.apply, reference, [P, w, b], torch.randn(B, 2 * H, generator=g))


def test_float32_fold_equals_the_float64_recursion():
    torch.manual_seed(0)
    rng = random.Random(0)
    trees = [random_binary_tree(rng.randint(1, 40), 50, rng) for _ in range(40)]
    m32 = BinaryTreeLSTM(8, 8, embedding=nn.Embedding(50, 8))
    m64 = BinaryTreeLSTM(8, 8, embedding=nn.Embedding(50, 8)).double()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    grads = []
    for m, mode in ((m32, "fold"), (m64, "recursive")):
        node_h, root_h = m(trees, mode=mode)
        (node_h.sin().sum() + root_h.sum()).backward()
        grads.append((node_h, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(grads[0][0].double(), grads[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def _second_derivatives(fn, inputs, r, v):
    """d/d(inputs) of <v, d<r, fn(inputs)>/d(weight)>: a Hessian-vector product through the backward."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    (gw,) = torch.autograd.grad((fn(*inputs) * r).sum(), inputs[1], create_graph=True)
    return torch.autograd.grad((gw * v).sum(), inputs)


def test_create_graph_differentiates_the_reference_cell():
    g = torch.Generator().manual_seed(0)
    H = 3
    x, P = torch.randn(2, 4, generator=g), torch.randn(2, 2, 2 * H, generator=g)
    leaf = [x, torch.randn(3 * H, 4, generator=g), torch.randn(3 * H, generator=g)]
    node = [P, torch.randn(5 * H, 2 * H, generator=g), torch.randn(5 * H, generator=g)]

    def reference_node(P, w, b):
        return torch.cat(binary_tree_lstm_node(torch.cat([P[:, 0, :H], P[:, 1, :H]], 1), P[:, 0, H:], P[:, 1, H:],
                                               w, b), 1)

    for fused, reference, inputs in ((kernels.LeafFn.apply, lambda *a: torch.cat(binary_tree_lstm_leaf(*a), 1), leaf),
                                     (kernels.NodeFn.apply, reference_node, node)):
        r, v = torch.randn(2, 2 * H, generator=g), torch.randn_like(inputs[1])
        got = _second_derivatives(fused, inputs, r, v)
        want = _second_derivatives(reference, [t.double() for t in inputs], r.double(), v.double())
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
    # mode="eager" runs these kernels in float32, and differentiates twice as mode="recursive" does
    m = BinaryTreeLSTM(4, 3, embedding=nn.Embedding(10, 4))
    tree = random_binary_tree(5, 10, random.Random(0))
    grads = []
    for mode in ("eager", "recursive"):
        (gw,) = torch.autograd.grad(m([tree], mode=mode)[1].sum(), m.node_weight, create_graph=True)
        grads.append(torch.autograd.grad(gw.square().sum(), m.leaf_weight))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
