"""lstmkit.kernels.panels: brgemm's panel layout, reused exactly while the weight's values are unchanged."""

from __future__ import annotations

import pytest
import torch

from lstmkit.kernels import panels as P


def unpanel(p: torch.Tensor, n: int) -> torch.Tensor:
    """The (K, N) matrix behind panels p (the inverse of the layout, padding dropped)."""
    return p.transpose(0, 1).flatten(1)[:, :n]


@pytest.mark.parametrize("k", [5, P.PANEL_MAX_K + 1], ids=["K5", "K-past-max"])
@pytest.mark.parametrize("n", [1, 31, 63, 64, 65, 130, 256])
@pytest.mark.parametrize("transpose", [False, True])
def test_layout_holds_the_operand_in_column_panels(k, n, transpose):
    w = torch.randn(n, k) if transpose else torch.randn(k, n)
    p = P.panels(w, transpose)
    b = w.t() if transpose else w  # (k, n)
    width = P.PANEL if k <= P.PANEL_MAX_K else P.PANEL // 2  # at most 512 KB a panel
    assert P.panel_width(k) == width
    assert p.is_contiguous() and p.shape == (-(-n // width), k, width)
    assert torch.equal(unpanel(p, n), b)
    assert not p.transpose(0, 1).flatten(1)[:, n:].any()  # the padding is zeros


def test_reused_while_values_are_unchanged():
    w = torch.randn(6, 4)
    a = P.panels(w, transpose=True)
    assert P.panels(w, transpose=True) is a
    assert P.panels(w) is not a and torch.equal(unpanel(P.panels(w), 4), w)  # each operand its own


def test_data_writes_and_in_place_changes_are_seen():
    w = torch.nn.Parameter(torch.randn(5, 3))
    a = P.panels(w)
    w.data.mul_(2.0)  # no version bump
    b = P.panels(w)
    assert b is not a and torch.equal(unpanel(b, 3), w.detach())
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(unpanel(P.panels(w), 3), w.detach())


def test_nan_weights_are_never_served_stale():
    w = torch.full((3, 2), float("nan"))
    P.panels(w)
    w[0, 0] = 1.0
    assert P.panels(w)[0, 0, 0].item() == 1.0


def test_bits_not_float_equality_decide():
    w = torch.zeros(4, 3)
    P.panels(w)
    w[1, 2] = -0.0  # == 0.0 as floats, another bit pattern
    assert torch.signbit(P.panels(w)[0, 1, 2])
    nan = torch.full((2, 2), float("nan"))
    assert P.panels(nan) is P.panels(nan)  # the same NaNs: reused


@pytest.mark.parametrize("memcmp", [True, False], ids=["memcmp", "torch"])
def test_non_contiguous_and_fallback_compare_bits(memcmp, monkeypatch):
    if not memcmp:
        monkeypatch.setattr(P, "_MEMCMP", None)
    base = torch.randn(6, 8)
    w = base[:, ::2]  # not contiguous
    a = P.panels(w, transpose=True)
    assert P.panels(w, transpose=True) is a and torch.equal(unpanel(a, 6), w.t())
    w[1, 1] += 1.0
    assert torch.equal(unpanel(P.panels(w, transpose=True), 6), w.t())
    v = torch.randn(5, 3).t()  # dense but transposed: a contiguous copy is what gets kept
    b = P.panels(v)
    assert P.panels(v) is b and torch.equal(unpanel(b, 5), v)


def test_what_is_kept_stays_bounded(monkeypatch):
    monkeypatch.setattr(P, "MAX_BYTES", 3 * (100 + 10 * P.PANEL) * 4)  # three 10x10 weights and their panels
    ws = [torch.randn(10, 10) for _ in range(5)]
    for w in ws:
        P.panels(w)
    assert sum(t.numel() * t.element_size() + p.numel() * p.element_size() for t, p in P._kept.values()) <= P.MAX_BYTES
    assert torch.equal(unpanel(P.panels(ws[0]), 10), ws[0])  # evicted ones are made again


def test_a_per_call_copy_is_laid_out_but_not_kept():
    P._kept.clear()
    w = torch.randn(70, 6)
    p = P.panels(w, transpose=True, reuse=False)
    assert torch.equal(unpanel(p, 70), w.t()) and not P._kept
