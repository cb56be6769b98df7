"""lstmkit.kernels.transposed: W^T reused exactly while W's values are unchanged."""

from __future__ import annotations

import pytest
import torch

from lstmkit.kernels import transposed as T


def test_reused_while_values_are_unchanged():
    w = torch.randn(6, 4)
    a = T.transposed(w)
    assert a.is_contiguous() and torch.equal(a, w.t())
    assert T.transposed(w) is a


def test_data_writes_and_in_place_changes_are_seen():
    w = torch.nn.Parameter(torch.randn(5, 3))
    a = T.transposed(w)
    w.data.mul_(2.0)  # no version bump
    b = T.transposed(w)
    assert b is not a and torch.equal(b, w.detach().t())
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(T.transposed(w), w.detach().t())


def test_nan_weights_are_never_served_stale():
    w = torch.full((3, 2), float("nan"))
    T.transposed(w)
    w[0, 0] = 1.0
    assert T.transposed(w)[0, 0].item() == 1.0


def test_bits_not_float_equality_decide():
    w = torch.zeros(4, 3)
    T.transposed(w)
    w[1, 2] = -0.0  # == 0.0 as floats, another bit pattern
    assert torch.signbit(T.transposed(w)[2, 1])
    nan = torch.full((2, 2), float("nan"))
    assert T.transposed(nan) is T.transposed(nan)  # the same NaNs: reused


@pytest.mark.parametrize("memcmp", [True, False], ids=["memcmp", "torch"])
def test_non_contiguous_and_fallback_compare_bits(memcmp, monkeypatch):
    if not memcmp:
        monkeypatch.setattr(T, "_MEMCMP", None)
    base = torch.randn(6, 8)
    w = base[:, ::2]  # not contiguous
    a = T.transposed(w)
    assert T.transposed(w) is a and torch.equal(a, w.t())
    w[1, 1] += 1.0
    assert torch.equal(T.transposed(w), w.t())
    v = torch.randn(5, 3).t()  # dense but transposed: a contiguous copy is what gets kept
    b = T.transposed(v)
    assert T.transposed(v) is b and torch.equal(b, v.t())


def test_what_is_kept_stays_bounded(monkeypatch):
    monkeypatch.setattr(T, "MAX_BYTES", 3 * 2 * 100 * 4)  # three 100-float weights
    ws = [torch.randn(10, 10) for _ in range(5)]
    for w in ws:
        T.transposed(w)
    assert sum(2 * t.numel() * t.element_size() for _, t in T._kept.values()) <= T.MAX_BYTES
    assert torch.equal(T.transposed(ws[0]), ws[0].t())  # evicted ones are made again
