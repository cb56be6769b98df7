"""`backend="reference"`: the reference cells looped in Python (autograd does the backward)."""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells import CELLS, CellSpec
from lstmkit.cells.sequence import reference_layer as layer

CELLS = tuple(CELLS)
DEVICES = ("cpu", "cuda")

__all__ = ["CELLS", "DEVICES", "layer", "differentiable_grads"]


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
    tensors = [x, *state, *params.values()]
    wanted = [t for t in tensors if t.requires_grad]
    with torch.enable_grad():
        y, final = layer(spec, x, state, params, batch_sizes, reverse)
    outputs = (y, *final)
    grad_outputs = [g.to(o.dtype) for g, o in zip(grad_outputs, outputs)]  # a fast path's may be half
    found = iter(torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True))
    grads = [next(found) if t.requires_grad else None for t in tensors]
    n = 1 + len(state)
    return grads[0], tuple(grads[1:n]), dict(zip(params, grads[n:]))
