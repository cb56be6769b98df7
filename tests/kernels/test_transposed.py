"""lstmkit.kernels.transposed: W^T reused exactly while W's values are unchanged."""

from __future__ import annotations

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


def test_what_is_kept_stays_bounded(monkeypatch):
    monkeypatch.setattr(T, "MAX_BYTES", 3 * 2 * 100 * 4)  # three 100-float weights
    ws = [torch.randn(10, 10) for _ in range(5)]
    for w in ws:
        T.transposed(w)
    assert sum(2 * t.numel() * t.element_size() for _, t in T._kept.values()) <= T.MAX_BYTES
    assert torch.equal(T.transposed(ws[0]), ws[0].t())  # evicted ones are made again
