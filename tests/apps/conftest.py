import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning OpenMP threads
    make them 10x slower."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def auto_picks_reference(monkeypatch):
    """backend "auto" picks the reference on every device: a run left at "auto" resolves to a
    name known in advance, and does not wait for a JIT compile."""
    from lstmkit import kernels
    monkeypatch.setattr(kernels, "AUTO_PREFERENCE", {})
