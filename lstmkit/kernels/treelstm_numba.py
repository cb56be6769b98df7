"""Fused CPU kernels for the binary Tree-LSTM ops, float32: one matrix product, then one numba
pass over the gates forward and one backward, instead of a dozen torch ops each way.

    leaf:  G = x W^T + b (B, 3H), blocks (i, o, u);        c = s(i) t(u),  h = s(o) t(c)
    node:  G = [h_l; h_r] U^T + b (B, 5H), blocks (i, f_l, f_r, o, u);
           c = s(i) t(u) + s(f_l) c_l + s(f_r) c_r,  h = s(o) t(c)

The same equations as `lstmkit.cells.treelstm` (which these are tested against), except that
t = tanh and s = sigmoid use a rational approximation of tanh (Eigen's [13/6] for float, max
error a few ulp; s(x) = (1 + t(x/2)) / 2) that LLVM vectorises: libm's expf would stay scalar,
and torch's own tanh is ~6x slower than its sigmoid on this build (see
../shared/notes/cpu-lstm-performance.md). Backward recomputes t(c) and writes the gate gradients
in one pass; the weight and input gradients are then one GEMM each, the input gradient dG W on
oneDNN with W read through its transpose (no copy; on one Zen 4 core MKL's dG @ W took 0.19
against 0.08 ms at B=3, 6.2 against 5.8 at B=333, 33.3 against 20.4 for 3,926 leaves at d=300).
Each op is one autograd node, so the whole cell costs autograd one node instead of about twenty.

Everything numba compiles for lstmkit.fold lives in this file (numba's disk cache is keyed on
the defining file); nothing is compiled at import time.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from lstmkit.cells.treelstm import binary_tree_lstm_leaf, binary_tree_lstm_node
from lstmkit.kernels.onednn import linear
from lstmkit.kernels.reference import grads_of

JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "nsz"})

_F = np.float32
_ONE, _HALF = _F(1.0), _F(0.5)
_TCLAMP = _F(7.90531110763549805)
_A1, _A3, _A5, _A7 = _F(4.89352455891786e-03), _F(6.37261928875436e-04), _F(1.48572235717979e-05), _F(5.12229709037114e-08)
_A9, _A11, _A13 = _F(-8.60467152213735e-11), _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = _F(4.89352518554385e-03), _F(2.26843463243900e-03), _F(1.18534705686654e-04), _F(1.19825839466702e-06)


@njit(inline="always", **JIT)
def _tanh(x):
    x = min(max(x, -_TCLAMP), _TCLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


@njit(inline="always", **JIT)
def _sigmoid(x):
    return _HALF + _HALF * _tanh(_HALF * x)


# States are packed: a row [h, c] (2H). The loops below read and write with unit stride and never
# read one array view while writing another view of the same memory: LLVM vectorises them only
# when its run-time overlap check passes, and otherwise runs its scalar copy of the loop, ~2-5x
# slower (measured: activating in place through two views of one row took 2.7x as long as
# through one view, and a loop that reads out[H + j] while writing out[j] stays scalar).

@njit(**JIT)
def _activate(s, n_sigmoid):
    """In place: sigmoid of the first n_sigmoid gates, tanh of the rest.

    Each loop runs over a slice from 0: `range(n_sigmoid, len(s))` over s itself stayed scalar
    (measured on 1,800 gates: 0.56 ns a gate that way, 0.30 through slices)."""
    a = s[:n_sigmoid]
    for k in range(a.shape[0]):
        a[k] = _sigmoid(a[k])
    t = s[n_sigmoid:]
    for k in range(t.shape[0]):
        t[k] = _tanh(t[k])


@njit(**JIT)
def _leaf_forward(S, out):
    """S (B, 3H): pre-activations in, (s(i), s(o), t(u)) out (in place); out (B, 2H) = [h, c]."""
    B, H = out.shape[0], out.shape[1] // 2
    for b in range(B):
        s, h, c = S[b], out[b, :H], out[b, H:]
        _activate(s, 2 * H)
        i, o, u = s[:H], s[H:2 * H], s[2 * H:]
        for j in range(H):
            cj = i[j] * u[j]
            c[j] = cj
            h[j] = o[j] * _tanh(cj)


@njit(**JIT)
def _bias_grad(dG, db):
    """db += the column sums of dG (one pass over rows that are still in cache)."""
    for b in range(dG.shape[0]):
        g = dG[b]
        for k in range(g.shape[0]):
            db[k] += g[k]


@njit(inline="always", **JIT)
def _shared_grads(c, dh, dc_in, i, o, u, dc, gi, go, gu):
    """What leaf and node share: dc = dc_in + dh s(o) t'(c), and the i, o, u gate gradients."""
    for j in range(c.shape[0]):
        t = _tanh(c[j])
        dc[j] = dc_in[j] + dh[j] * o[j] * (_ONE - t * t)
        go[j] = dh[j] * t * o[j] * (_ONE - o[j])
    for j in range(c.shape[0]):
        gi[j] = dc[j] * u[j] * i[j] * (_ONE - i[j])
    for j in range(c.shape[0]):
        gu[j] = dc[j] * i[j] * (_ONE - u[j] * u[j])


@njit(**JIT)
def _leaf_backward(S, out, dout, dG, db):
    """Gate gradients dG (B, 3H); their column sums into db (3H,)."""
    B, H = out.shape[0], out.shape[1] // 2
    dc = np.empty(H, dtype=out.dtype)
    for b in range(B):
        s, c, dh, dc_in, g = S[b], out[b, H:], dout[b, :H], dout[b, H:], dG[b]
        _shared_grads(c, dh, dc_in, s[:H], s[H:2 * H], s[2 * H:], dc, g[:H], g[H:2 * H], g[2 * H:])
        _bias_grad(dG[b:b + 1], db)


@njit(**JIT)
def _node_forward(S, P, out):
    """S (B, 5H): pre-activations in, (s(i), s(f_l), s(f_r), s(o), t(u)) out (in place);
    P (B, 2, 2H) = children [h, c]; out (B, 2H) = [h, c]."""
    B, H = out.shape[0], out.shape[1] // 2
    for b in range(B):
        s, h, c, cl, cr = S[b], out[b, :H], out[b, H:], P[b, 0, H:], P[b, 1, H:]
        _activate(s, 4 * H)
        i, fl, fr, o, u = s[:H], s[H:2 * H], s[2 * H:3 * H], s[3 * H:4 * H], s[4 * H:]
        for j in range(H):
            cj = i[j] * u[j] + fl[j] * cl[j] + fr[j] * cr[j]
            c[j] = cj
            h[j] = o[j] * _tanh(cj)


@njit(**JIT)
def _node_backward(S, out, P, dout, dG, dP, db):
    """Gate gradients dG (B, 5H) (their column sums into db) and the children's dc into dP[:, :, H:]."""
    B, H = out.shape[0], out.shape[1] // 2
    dc = np.empty(H, dtype=out.dtype)
    for b in range(B):
        s, c, dh, dc_in, g = S[b], out[b, H:], dout[b, :H], dout[b, H:], dG[b]
        _shared_grads(c, dh, dc_in, s[:H], s[3 * H:4 * H], s[4 * H:], dc, g[:H], g[3 * H:4 * H], g[4 * H:])
        for k in range(2):  # left, right child: forget gate and the child's dc
            f, gf, ck, dck = s[(k + 1) * H:(k + 2) * H], g[(k + 1) * H:(k + 2) * H], P[b, k, H:], dP[b, k, H:]
            for j in range(H):
                gf[j] = dc[j] * ck[j] * f[j] * (_ONE - f[j])
            for j in range(H):
                dck[j] = dc[j] * f[j]
        _bias_grad(dG[b:b + 1], db)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def _reference_leaf(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.cat(binary_tree_lstm_leaf(x, weight, bias), 1)  # (B, 2H)


def _reference_node(P: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    B, H = P.shape[0], weight.shape[0] // 5
    return torch.cat(binary_tree_lstm_node(P[:, :, :H].reshape(B, 2 * H), P[:, 0, H:], P[:, 1, H:], weight, bias), 1)


# The backward kernels have no backward of their own. When autograd asks for a differentiable
# backward (create_graph=True, the only time it runs one with grad mode on), the functions below
# return the reference cell's gradients instead, recomputed from the saved inputs.


class LeafFn(torch.autograd.Function):
    """(x (B, I), weight (3H, I), bias (3H,)) -> state (B, 2H) = [h, c]."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        S = linear(x.contiguous(), weight, bias)  # (B, 3H), activated in place
        out = x.new_empty(x.shape[0], 2 * (weight.shape[0] // 3))
        _leaf_forward(_np(S), _np(out))
        ctx.save_for_backward(x, weight, bias, S, out)  # the inputs as given: a differentiable backward reads them
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, S, out = ctx.saved_tensors
        if torch.is_grad_enabled():
            return grads_of(_reference_leaf, (x, weight, bias), dout)
        x = x.contiguous()
        dG, db = torch.empty_like(S), S.new_zeros(S.shape[1])
        _leaf_backward(_np(S), _np(out), _np(dout.contiguous()), _np(dG), _np(db))
        dx = linear(dG, weight.t()) if ctx.needs_input_grad[0] else None  # dG W
        dW = dG.T @ x if ctx.needs_input_grad[1] else None
        return dx, dW, db if ctx.needs_input_grad[2] else None


class NodeFn(torch.autograd.Function):
    """(children (B, 2, 2H) = [[h_l, c_l], [h_r, c_r]], weight (5H, 2H), bias (5H,))
    -> state (B, 2H) = [h, c]."""

    @staticmethod
    def forward(ctx, P, weight, bias):
        Pc = P.contiguous()
        B, H = P.shape[0], weight.shape[0] // 5
        hx = Pc[:, :, :H].reshape(B, 2 * H)  # [h_l; h_r]
        S = linear(hx, weight, bias)  # (B, 5H), activated in place
        out = P.new_empty(B, 2 * H)
        _node_forward(_np(S), _np(Pc), _np(out))
        ctx.save_for_backward(P, weight, bias, hx, Pc, S, out)  # P as given: a differentiable backward reads it
        return out

    @staticmethod
    def backward(ctx, dout):
        P, weight, bias, hx, Pc, S, out = ctx.saved_tensors
        if torch.is_grad_enabled():
            return grads_of(_reference_node, (P, weight, bias), dout)
        P = Pc
        B, H = out.shape[0], out.shape[1] // 2
        dG, dP, db = torch.empty_like(S), torch.empty_like(P), S.new_zeros(S.shape[1])
        _node_backward(_np(S), _np(out), _np(P), _np(dout.contiguous()), _np(dG), _np(dP), _np(db))
        dP[:, :, :H] = linear(dG, weight.t()).view(B, 2, H)  # dG U: the children's dh
        dW = dG.T @ hx if ctx.needs_input_grad[1] else None
        return dP, dW, db if ctx.needs_input_grad[2] else None


def supported(*tensors: Tensor) -> bool:
    """The fused kernels run on float32 CPU tensors (others take the torch-ops path)."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
