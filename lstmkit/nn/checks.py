"""Argument checks (each error names the argument, expected vs got) and parameter init shared by the modules."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy ints too, as torch
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def boolean(name: str, value: object) -> bool:
    """A flag that must be a bool, as torch.nn's RNNs require of bias and batch_first (not numpy's
    bool_ either): bias=0 or batch_first=None is an error, not a truth value."""
    if not isinstance(value, bool):
        kind = type(value)  # numpy's bool_ is named "bool" too: name its module
        got = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise TypeError(f"{name}: expected a bool, got {got}")
    return value


def dropout_rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"dropout: expected a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"dropout: expected a float in [0, 1], got {value}")
    return float(value)


def float_tensor(name: str, x: object, dtype: torch.dtype) -> Tensor:
    """`x` must be a floating tensor of the parameters' dtype."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the parameters' dtype), got {x.dtype}")
    return x


def device(name: str, x: Tensor, expected: torch.device, what: str = "the input's") -> None:
    """As torch's RNNs refuse a state or input on another device; the fused kernels would read its
    memory as host memory (a crash), or launch on the wrong GPU."""
    if x.device != expected:
        raise ValueError(f"{name}: expected a tensor on {expected} ({what} device), got {x.device}")


def state_pair(name: str, hx: object, names: str) -> None:
    """`hx` must be a tuple (or list) of two, the LSTM state written `names`, e.g. "(h_0, c_0)"."""
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        got = f"a {type(hx).__name__} of {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
        raise TypeError(f"{name}: expected a tuple {names} of two tensors, got {got}")


def shape(name: str, x: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(x.shape)}")


def init_parameters(module: torch.nn.Module, spec, hidden_size: int) -> None:
    """torch's init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)); LN gains 1, LN biases 0.

    A parameter's base name is its name without the `_l<k>[_reverse]` layer suffix.
    """
    k = 1.0 / math.sqrt(hidden_size)
    inits = {e.name: e.init for e in spec.extra_params}
    with torch.no_grad():
        for name, p in module.named_parameters():
            init = inits.get(name.rsplit("_l", 1)[0], "uniform")
            if init == "uniform":
                p.uniform_(-k, k)
            else:
                p.fill_(1.0 if init == "ones" else 0.0)
