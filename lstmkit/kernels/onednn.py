"""oneDNN's fused linear (`torch.ops.mkldnn._linear_pointwise`), where torch's CPU build has it.

nn.LSTM's CPU path runs on oneDNN; so do the numba LSTM's input projection and the Tree-LSTM
products here. On the 2-core Zen 4 machine of BENCHMARKS.md it runs float32 products 10-40%
faster than MKL's sgemm (addmm): ~100 GFLOP/s on one core against 60-75. The op is private, so
it is probed once, on a product it must get exactly right; where it is missing or wrong,
`LINEAR` is None and `linear` uses addmm.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LINEAR", "linear"]


def _probe():
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        if not torch.backends.mkldnn.is_available() or not torch.equal(op(x, w, torch.zeros(4), "none", [], ""), x @ w.T):
            return None
        return op
    except (AttributeError, RuntimeError):  # not in this build, or it refuses the probe
        return None


LINEAR = _probe()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T (+ bias): (B, N), contiguous. float32 CPU tensors go through oneDNN.

    `weight` may be the transpose of a contiguous matrix (`W.t()`, as for an input gradient
    dG @ W = linear(dG, W.t())): oneDNN reads that layout as it is, as fast as a transposed copy
    (measured on (1650, 1500) x (1500, 600): 27.4 ms, against 28.9 with the copy made beforehand
    and 30.0 with the copy made in the call), so only other strides are copied.
    """
    if LINEAR is not None and x.dtype == torch.float32 and x.device.type == "cpu":
        if not (weight.is_contiguous() or weight.t().is_contiguous()):
            weight = weight.contiguous()
        # oneDNN reads the bias as contiguous whatever its strides
        return LINEAR(x.contiguous(), weight, None if bias is None else bias.contiguous(), "none", [], "")
    return torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
