import pytest
import torch

from lstmkit.kernels import onednn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_addmm(dtype, with_bias):
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=dtype)
    w = torch.randn(4, 9, dtype=dtype)[:, ::2]  # non-contiguous weight (4, 5)
    b = torch.randn(8, dtype=dtype)[::2] if with_bias else None  # a strided bias: oneDNN needs it copied
    out = onednn.linear(x, w, b)
    expected = x @ w.T + (b if with_bias else 0)
    assert out.is_contiguous() and out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if with_bias:  # and an expanded one (stride 0)
        b = b[:1].expand(4)
        torch.testing.assert_close(onednn.linear(x, w, b), x @ w.T + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_reads_a_transposed_weight(dtype):
    """linear(dG, W.t()) = dG @ W: the input-gradient form, the weight passed as a transposed view."""
    torch.manual_seed(0)
    dG = torch.randn(6, 11, dtype=dtype)
    W = torch.randn(11, 7, dtype=dtype)
    out = onednn.linear(dG, W.t())
    assert out.is_contiguous() and out.shape == (6, 7)
    torch.testing.assert_close(out, dG @ W, rtol=1e-5, atol=1e-5)


def test_probe_result_is_an_op_or_none():
    assert onednn.LINEAR is None or callable(onednn.LINEAR)
