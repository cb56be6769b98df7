"""lstmkit.data.prefetch.CUDAPrefetcher: same batches, same order, on the device; overlapped on CUDA."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, namedtuple
from types import MappingProxyType

import pytest
import torch

from lstmkit.data.prefetch import CUDAPrefetcher

Pair = namedtuple("Pair", "x y")


def _batches(n: int = 5):
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(4, 3, generator=g), "meta": [k, "id"], "pair": Pair(torch.arange(k + 1), k)}
            for k in range(n)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a["meta"] == b["meta"] and isinstance(a["pair"], Pair) and a["pair"].y == b["pair"].y
        torch.testing.assert_close(a["x"].cpu(), b["x"])
        torch.testing.assert_close(a["pair"].x.cpu(), b["pair"].x)


def test_cpu_passthrough_keeps_order_and_structure():
    data = _batches()
    got = list(CUDAPrefetcher(data, "cpu"))
    _assert_same(got, data)
    assert len(CUDAPrefetcher(data, "cpu")) == len(data)


def test_empty_loader():
    assert list(CUDAPrefetcher([], "cpu")) == []


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_a_loader_error_comes_after_the_batches_before_it(device):
    def loader():
        yield torch.zeros(2)
        yield torch.ones(2)
        raise RuntimeError("record 2 is corrupt")
    got = []
    with pytest.raises(RuntimeError, match="record 2 is corrupt"):
        for batch in CUDAPrefetcher(loader(), device):
            got.append(batch.cpu())
    assert [b.tolist() for b in got] == [[0.0, 0.0], [1.0, 1.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pin", [True, False])
def test_cuda_batches_arrive_complete(pin):
    data = _batches(8)
    got = []
    for batch in CUDAPrefetcher(data, "cuda", pin=pin):
        assert batch["x"].is_cuda and batch["pair"].x.is_cuda
        # consume on the current stream while the next copy is in flight
        got.append({**batch, "x": (batch["x"] * 1.0).cpu(), "pair": Pair(batch["pair"].x.cpu(), batch["pair"].y)})
    _assert_same(got, data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_large_batches_under_load():
    """Big copies racing long kernels: every batch must be exactly what the loader produced."""
    data = [torch.full((1 << 22,), float(k)) for k in range(6)]
    w = torch.randn(2048, 2048, device="cuda")
    for k, x in enumerate(CUDAPrefetcher(data, "cuda")):
        for _ in range(4):
            w = torch.tanh(w @ w * 1e-3)  # keep the consumer stream busy
        assert x.min().item() == k and x.max().item() == k


def test_mapping_batches_keep_their_type():
    x = torch.arange(3)
    batch = defaultdict(list, {"x": x, "nested": OrderedDict(y=x + 1)})
    (got,) = list(CUDAPrefetcher([batch], "cpu"))
    assert type(got) is defaultdict and got.default_factory is list and got["missing"] == []
    assert type(got["nested"]) is OrderedDict
    torch.testing.assert_close(got["x"], x)
    torch.testing.assert_close(got["nested"]["y"], x + 1)
    assert "missing" not in batch  # the caller's batch is not changed
    (plain,) = list(CUDAPrefetcher([MappingProxyType({"x": x})], "cpu"))  # read-only: a dict
    assert type(plain) is dict and torch.equal(plain["x"], x)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_cuda_without_a_gpu_is_named():
    """It raised torch's AssertionError ("Torch not compiled with CUDA enabled") at the first batch."""
    with pytest.raises(ValueError, match=r"device: expected a device this machine has, got 'cuda'"):
        CUDAPrefetcher(_batches(), "cuda")
