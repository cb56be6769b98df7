"""`backend="reference"`: the reference cells looped in Python (autograd does the backward), and
the binary Tree-LSTM's ops on packed states (the Tree-LSTM contract of `lstmkit.kernels`)."""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells import CELLS, CellSpec
from lstmkit.cells.gates import BINARY_GATES
from lstmkit.cells.sequence import reference_layer
from lstmkit.cells.treelstm import binary_tree_lstm_leaf, binary_tree_lstm_node

CELLS = tuple(CELLS)
DEVICES = ("cpu", "cuda")

__all__ = ["CELLS", "DEVICES", "layer", "differentiable_grads", "grads_of", "binary_tree_leaf", "binary_tree_node"]


def layer(spec: CellSpec, x: Tensor, state: tuple[Tensor, ...], params: dict[str, Tensor],
          batch_sizes: Tensor | None = None, reverse: bool = False, *,
          exposed: bool = True) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The layer contract of `lstmkit.kernels` on the reference cells. Autograd saves each step's
    h, never the stacked y, so y may change in place whatever `exposed` says."""
    return reference_layer(spec, x, state, params, batch_sizes, reverse)


def binary_tree_leaf(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Leaves (x (B, I), weight (3H, I), bias (3H,)) -> states (B, 2H) = [h, c]."""
    return torch.cat(binary_tree_lstm_leaf(x, weight, bias), 1)  # (B, 2H)


def binary_tree_node(P: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Internal nodes (children (B, 2, 2H) = [[h_l, c_l], [h_r, c_r]], weight (5H, 2H), bias (5H,))
    -> states (B, 2H) = [h, c]."""
    B, H = P.shape[0], weight.shape[0] // len(BINARY_GATES)
    h_children = P[:, :, :H].reshape(B, 2 * H)  # (B, 2H): [h_l; h_r]
    return torch.cat(binary_tree_lstm_node(h_children, P[:, 0, H:], P[:, 1, H:], weight, bias), 1)  # (B, 2H)


def differentiable_grads(spec: CellSpec, x: Tensor, state: tuple[Tensor, ...], params: dict[str, Tensor],
                         batch_sizes: Tensor | None, reverse: bool, grad_outputs: tuple[Tensor, ...],
                         ) -> tuple[Tensor | None, tuple[Tensor | None, ...], dict[str, Tensor | None]]:
    """The gradients of `layer` at (x, state, params) for `grad_outputs` = (dy, dh_T[, dc_T]),
    themselves differentiable (create_graph).

    A fused kernel's backward has no backward of its own. When autograd asks for a differentiable
    backward (`create_graph=True`: gradient penalties, Hessian-vector products, MAML), a fast
    backend returns these instead: the reference recomputed from the saved inputs, differentiated
    by autograd. The values are the reference's; the fast path is bypassed for that call only.
    Returns (dx, (dh0[, dc0]), {name: dparam}), None where a tensor does not require grad.
    """
    def run(x, *rest):
        y, final = layer(spec, x, tuple(rest[:len(state)]), dict(zip(params, rest[len(state):])), batch_sizes,
                         reverse)
        return (y, *final)

    grads = grads_of(run, (x, *state, *params.values()), grad_outputs)
    n = 1 + len(state)
    return grads[0], tuple(grads[1:n]), dict(zip(params, grads[n:]))


def grads_of(fn, inputs: tuple[Tensor | None, ...], grad_outputs: tuple[Tensor, ...] | Tensor,
             ) -> tuple[Tensor | None, ...]:
    """The gradients of `fn(*inputs)` (a tensor or a tuple of them) for `grad_outputs`, made with
    create_graph=True from the reference ops in `fn`; None for an input that needs no gradient.

    `fn` runs on aliases of the inputs (views, connected to them), and the gradients are taken at
    the aliases: only the paths inside this call count. Taken at the inputs themselves, a weight
    that also made another input (the same layer applied to its own output, a state carried from
    an earlier call without detach) would get that earlier call's part here as well, and again
    when autograd reaches the earlier call's own backward."""
    with torch.enable_grad():
        aliases = tuple(t.view_as(t) if t is not None and t.requires_grad else t for t in inputs)
        outputs = fn(*aliases)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    grad_outputs = grad_outputs if isinstance(grad_outputs, tuple) else (grad_outputs,)
    grad_outputs = [g.to(o.dtype) for g, o in zip(grad_outputs, outputs)]  # a fast path's may be half
    wanted = [t for t in aliases if t is not None and t.requires_grad]
    found = iter(torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True))
    return tuple(next(found) if t is not None and t.requires_grad else None for t in aliases)
