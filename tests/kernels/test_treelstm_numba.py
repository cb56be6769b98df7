"""The fused Tree-LSTM kernels against the reference ops: float32 against float64 values and
every gradient, with gates large enough to reach the saturated ends of tanh and sigmoid; gradcheck
in float64; backend= resolution of BinaryTreeLSTM."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from lstmkit.fold import BinaryTreeLSTM, Tree, random_binary_tree
from lstmkit.kernels import BackendUnavailable, reference, resolve_tree_backend
from lstmkit.kernels import treelstm_numba as kernels


def check(fused, ref, inputs, grad_out):
    """fused(*float32 inputs) vs ref(*float64 inputs): output and input gradients."""
    x32 = [t.detach().float().requires_grad_() for t in inputs]
    x64 = [t.detach().double().requires_grad_() for t in inputs]
    out32, out64 = fused(*x32), ref(*x64)
    out32.backward(grad_out.float())
    out64.backward(grad_out.double())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=2e-6)
    for a, b in zip(x32, x64):
        scale = b.grad.abs().max().item() + 1e-6
        torch.testing.assert_close(a.grad.double() / scale, b.grad / scale, rtol=1e-4, atol=2e-5)


def leaf_inputs(B, I, H, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, I, generator=g) * scale  # scale 3: gates up to about +-15, the clamped ends of tanh
    return [x, torch.randn(3 * H, I, generator=g), torch.randn(3 * H, generator=g)], g


def node_inputs(B, H, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(B, 2, 2 * H, generator=g) * scale  # children states [[h_l, c_l], [h_r, c_r]]
    return [P, torch.randn(5 * H, 2 * H, generator=g), torch.randn(5 * H, generator=g)], g


# B=1: one row; H=3, 5: gate blocks that end off any vector width; 37 rows, H=6
SHAPES = [(1, 3), (1, 5), (4, 3), (3, 5), (37, 6)]


@pytest.mark.parametrize("B, H", SHAPES)
def test_leaf_kernel_matches_the_cell(B, H):
    inputs, g = leaf_inputs(B, 7, H, seed=B * H)
    check(kernels.LeafFn.apply, reference.binary_tree_leaf, inputs, torch.randn(B, 2 * H, generator=g))


@pytest.mark.parametrize("B, H", SHAPES)
def test_node_kernel_matches_the_cell(B, H):
    inputs, g = node_inputs(B, H, seed=B * H)
    check(kernels.NodeFn.apply, reference.binary_tree_node, inputs, torch.randn(B, 2 * H, generator=g))


@pytest.mark.parametrize("B, H", [(1, 3), (2, 5)])
def test_kernels_gradcheck_in_float64(B, H):
    """float64 runs the same kernels with exact tanh and exp: gradcheck against finite differences."""
    leaf, _ = leaf_inputs(B, 4, H, seed=H, scale=1.0)
    node, _ = node_inputs(B, H, seed=H, scale=1.0)
    for fn, ref, inputs in ((kernels.LeafFn.apply, reference.binary_tree_leaf, leaf),
                            (kernels.NodeFn.apply, reference.binary_tree_node, node)):
        inputs = [t.double().requires_grad_() for t in inputs]
        assert torch.autograd.gradcheck(fn, inputs)
        torch.testing.assert_close(fn(*inputs), ref(*inputs), rtol=1e-13, atol=1e-14)


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
    for fused, ref, inputs in ((kernels.LeafFn.apply, reference.binary_tree_leaf, leaf),
                               (kernels.NodeFn.apply, reference.binary_tree_node, node)):
        r, v = torch.randn(2, 2 * H, generator=g), torch.randn_like(inputs[1])
        got = _second_derivatives(fused, inputs, r, v)
        want = _second_derivatives(ref, [t.double() for t in inputs], r.double(), v.double())
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


def test_backend_resolution():
    """"auto" takes the kernels for float32 on CPU (float64 stays on torch's ops, faster there at
    large batches), the reference elsewhere; an explicit "numba" runs float32 and float64 on CPU
    and raises for anything else; a bad name is refused when the module is made."""
    numba_ops = (kernels.binary_tree_leaf, kernels.binary_tree_node)
    reference_ops = (reference.binary_tree_leaf, reference.binary_tree_node)
    assert tuple(resolve_tree_backend("auto", "cpu", torch.float32)) == numba_ops
    for device, dtype in (("cpu", torch.float64), ("cpu", torch.bfloat16), ("cuda", torch.float32)):
        assert tuple(resolve_tree_backend("auto", device, dtype)) == reference_ops
        assert tuple(resolve_tree_backend("reference", device, dtype)) == reference_ops
    for dtype in (torch.float32, torch.float64):
        assert tuple(resolve_tree_backend("numba", "cpu", dtype)) == numba_ops
    with pytest.raises(TypeError, match=r"dtype: backend 'numba' takes dtypes \[torch.float32, torch.float64\], "
                                        r"got torch.bfloat16"):
        resolve_tree_backend("numba", "cpu", torch.bfloat16)
    with pytest.raises(BackendUnavailable, match=r"backend 'numba' runs on \('cpu',\), got a cuda tensor"):
        resolve_tree_backend("numba", "cuda", torch.float32)
    with pytest.raises(ValueError, match=r"backend: expected one of \['auto', 'reference', 'numba'\], got 'triton'"):
        BinaryTreeLSTM(3, 4, backend="triton")


def test_module_backends_run_their_ops(monkeypatch):
    """backend= decides which ops the module's fold and eager runs call, and they agree."""
    calls = []
    for name in ("tree_leaf_forward", "tree_node_forward"):
        kernel = getattr(kernels.K, name)
        monkeypatch.setattr(kernels.K, name, lambda *a, _k=kernel: calls.append(1) or _k(*a))
    torch.manual_seed(0)
    trees = [random_binary_tree(n, 10, random.Random(n)) for n in (1, 2, 5)]
    state = BinaryTreeLSTM(4, 3, embedding=nn.Embedding(10, 4)).double().state_dict()
    want = None
    for backend, dtype in (("reference", torch.float64), ("numba", torch.float64), ("auto", torch.float64),
                           ("numba", torch.float32), ("auto", torch.float32), ("reference", torch.float32)):
        m = BinaryTreeLSTM(4, 3, embedding=nn.Embedding(10, 4), backend=backend).to(dtype)
        m.load_state_dict({k: v.to(dtype) for k, v in state.items()})
        for mode in ("fold", "eager"):
            calls.clear()
            node_h, _ = m(trees, mode=mode)
            assert bool(calls) == (backend == "numba" or (backend, dtype) == ("auto", torch.float32)), (backend, dtype)
            want = node_h.double() if want is None else want
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(node_h.double(), want, rtol=tol, atol=tol, msg=f"{backend} {dtype} {mode}")
    with pytest.raises(TypeError, match=r"dtype: backend 'numba' takes dtypes"):
        BinaryTreeLSTM(4, 3, embedding=nn.Embedding(10, 4), backend="numba").bfloat16()(trees)
    half = BinaryTreeLSTM(4, 3, backend="auto").bfloat16()  # auto: the reference's torch ops
    assert half([Tree(0, word=torch.zeros(4, dtype=torch.bfloat16))])[1].dtype == torch.bfloat16


def test_without_numba_auto_falls_back_and_explicit_raises():
    """With numba unimportable lstmkit.fold still imports; "auto" warns once and runs the
    reference ops, backend="numba" raises BackendUnavailable."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["numba"] = None
        import torch
        from lstmkit.fold import BinaryTreeLSTM, Tree
        from lstmkit.kernels import BackendUnavailable, reference, resolve_tree_backend
        tree = Tree(0, [Tree(0, word=torch.zeros(3)), Tree(0, word=torch.ones(3))])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            BinaryTreeLSTM(3, 4)([tree])
        assert [str(x.message) for x in w if "fast backend 'numba' unavailable" in str(x.message)], w
        assert resolve_tree_backend("auto", "cpu", torch.float32).leaf is reference.binary_tree_leaf
        try:
            BinaryTreeLSTM(3, 4, backend="numba")([tree])
        except BackendUnavailable:
            print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
