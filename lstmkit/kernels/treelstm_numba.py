"""`backend="numba"` of the binary Tree-LSTM (`lstmkit.fold.BinaryTreeLSTM`): fused CPU ops, one
matrix product, then one numba pass over the gates forward and one backward, instead of a dozen
torch ops each way.

    leaf:  G = x W^T + b (B, 3H), blocks (i, o, u);        c = s(i) t(u),  h = s(o) t(c)
    node:  G = [h_l; h_r] U^T + b (B, 5H), blocks (i, f_l, f_r, o, u);
           c = s(i) t(u) + s(f_l) c_l + s(f_r) c_r,  h = s(o) t(c)

The same equations as `lstmkit.cells.treelstm` (`lstmkit.kernels.reference`'s ops, which these
are tested against), with t = tanh and s = sigmoid as the numba LSTM kernels compute them: exact
in float64; in float32 approximations LLVM vectorises (tanh: Eigen's [13/6] rational one, a few
ulp, exactly +-1 where float32's tanh rounds there; s: from a polynomial exp, accurate relative to
its value down to the smallest normal float): libm's expf would stay scalar, and torch's own
tanh is ~6x slower than its sigmoid on this build (see ../shared/notes/cpu-lstm-performance.md).
Backward recomputes t(c) and writes the gate gradients in one pass; the weight and input
gradients are then one GEMM each, the input gradient dG W on oneDNN with W read through its
transpose (no copy; on one Zen 4 core MKL's dG @ W took 0.19 against 0.08 ms at B=3, 6.2 against
5.8 at B=333, 33.3 against 20.4 for 3,926 leaves at d=300). Each op is one autograd node, so the
whole cell costs autograd one node instead of about twenty.

The compiled passes live in `lstm_numba_cells` with every other numba kernel (numba's disk cache
does not notice a change to a jitted helper imported from another file); nothing is compiled at
import time. `lstmkit.kernels.resolve_tree_backend` checks the device and dtype before these run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lstmkit.cells.gates import BINARY_GATES, BINARY_LEAF_GATES
from lstmkit.kernels import batched, needs_reference
from lstmkit.kernels import lstm_numba_cells as K
from lstmkit.kernels.onednn import linear
from lstmkit.kernels.reference import binary_tree_leaf as reference_leaf
from lstmkit.kernels.reference import binary_tree_node as reference_node
from lstmkit.kernels.reference import grads_of

DEVICES = ("cpu",)
DTYPES = (torch.float32, torch.float64)
# float64's exact tanh and exp are scalar libm calls: at B=333, H=150, I=300 (one thread) a leaf or
# node forward+backward took 1.1-1.3x as long as torch's ops (float32: 0.8-0.9x), so backend="auto"
# leaves float64 to the reference
AUTO_DTYPES = (torch.float32,)

__all__ = ["DEVICES", "DTYPES", "AUTO_DTYPES", "binary_tree_leaf", "binary_tree_node", "LeafFn", "NodeFn"]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


# The backward kernels have no backward of their own. When autograd asks for a differentiable
# backward (create_graph=True, the only time it runs one with grad mode on), or hands a backward
# vmap's batched gradients, which a kernel cannot read, the functions below return the reference
# ops' gradients instead, recomputed from the saved inputs. Forward-mode AD and torch.func's
# transforms run the reference ops from the start (`binary_tree_leaf`, `binary_tree_node`).


class LeafFn(torch.autograd.Function):
    """(x (B, I), weight (3H, I), bias (3H,)) -> state (B, 2H) = [h, c]."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        S = linear(x.contiguous(), weight, bias)  # (B, 3H), activated in place
        out = x.new_empty(x.shape[0], 2 * (weight.shape[0] // len(BINARY_LEAF_GATES)))  # (B, 2H)
        K.tree_leaf_forward(_np(S), _np(out))
        ctx.save_for_backward(x, weight, bias, S, out)  # the inputs as given: a differentiable backward reads them
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, S, out = ctx.saved_tensors
        if torch.is_grad_enabled() or batched(dout):
            return grads_of(reference_leaf, (x, weight, bias), dout)
        x = x.contiguous()
        dG, db = torch.empty_like(S), S.new_zeros(S.shape[1])
        K.tree_leaf_backward(_np(S), _np(out), _np(dout.contiguous()), _np(dG), _np(db))
        dx = linear(dG, weight.t()) if ctx.needs_input_grad[0] else None  # dG W
        dW = dG.T @ x if ctx.needs_input_grad[1] else None
        return dx, dW, db if ctx.needs_input_grad[2] else None


class NodeFn(torch.autograd.Function):
    """(children (B, 2, 2H) = [[h_l, c_l], [h_r, c_r]], weight (5H, 2H), bias (5H,))
    -> state (B, 2H) = [h, c]."""

    @staticmethod
    def forward(ctx, P, weight, bias):
        Pc = P.contiguous()
        B, H = P.shape[0], weight.shape[0] // len(BINARY_GATES)
        hx = Pc[:, :, :H].reshape(B, 2 * H)  # (B, 2H): [h_l; h_r]
        S = linear(hx, weight, bias)  # (B, 5H), activated in place
        out = P.new_empty(B, 2 * H)
        K.tree_node_forward(_np(S), _np(Pc), _np(out))
        ctx.save_for_backward(P, weight, bias, hx, Pc, S, out)  # P as given: a differentiable backward reads it
        return out

    @staticmethod
    def backward(ctx, dout):
        P, weight, bias, hx, Pc, S, out = ctx.saved_tensors
        if torch.is_grad_enabled() or batched(dout):
            return grads_of(reference_node, (P, weight, bias), dout)
        P = Pc
        B, H = out.shape[0], out.shape[1] // 2
        dG, dP, db = torch.empty_like(S), torch.empty_like(P), S.new_zeros(S.shape[1])
        K.tree_node_backward(_np(S), _np(out), _np(P), _np(dout.contiguous()), _np(dG), _np(dP), _np(db))
        dP[:, :, :H] = linear(dG, weight.t()).view(B, 2, H)  # (B, 2H) -> (B, 2, H): dG U, the children's dh
        dW = dG.T @ hx if ctx.needs_input_grad[1] else None
        return dP, dW, db if ctx.needs_input_grad[2] else None


# The ops of the Tree-LSTM backend contract (see lstmkit.kernels)

def binary_tree_leaf(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    if needs_reference((x, weight, bias)):
        return reference_leaf(x, weight, bias)
    return LeafFn.apply(x, weight, bias)


def binary_tree_node(P: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    if needs_reference((P, weight, bias)):
        return reference_node(P, weight, bias)
    return NodeFn.apply(P, weight, bias)
