"""The reference sequence layer: a cell applied step by step, in plain Python.

This is the `backend="reference"` implementation of the layer contract every backend shares
(see `lstmkit.kernels.LayerFn`). Variable lengths come as `batch_sizes`, PackedSequence's
convention: the batch is sorted by decreasing length and at step t only the first
`batch_sizes[t]` rows are active. Rows that have ended keep their final state and get zeros
as output; in the reverse direction a row starts from its initial state at its own last step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells import CellSpec


def reference_layer(
    spec: CellSpec,
    x: Tensor,
    state: tuple[Tensor, ...],
    params: dict[str, Tensor],
    batch_sizes: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """x: (T, B, I); state: (h0 (B, P or H)[, c0 (B, H)]) -> y (T, B, P or H), final state."""
    T = x.shape[0]
    xs = x.unbind(0)  # T x (B, I); unbind, not x[t], so autograd does not build T zero buffers
    ys: list[Tensor] = [x.new_empty(0)] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        if batch_sizes is None:
            state = spec.step(xs[t], state, params)
            ys[t] = state[0]
            continue
        b = int(batch_sizes[t])
        active = spec.step(xs[t][:b], tuple(s[:b] for s in state), params)
        state = tuple(torch.cat([a, s[b:]]) for a, s in zip(active, state))
        h = active[0]
        ys[t] = torch.cat([h, h.new_zeros(x.shape[1] - b, h.shape[1])])  # (B, P or H)
    return torch.stack(ys), state
