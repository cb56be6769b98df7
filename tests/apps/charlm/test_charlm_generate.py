"""Sampling: top-k keeps exactly k symbols, an unseeded call leaves the caller's RNGs alone, and
bad arguments are named. A tiny untrained model: nothing here depends on what it learned."""

import pytest
import torch

from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.generate import generate, sample_next
from lstmkit.apps.charlm.model import CharLM
from lstmkit.apps.charlm.vocab import Vocab


@pytest.fixture
def lm():
    torch.manual_seed(0)
    vocab = Vocab(list("abc "))
    cfg = CharLMConfig(embedding_size=4, hidden_size=8, backend="reference").validate()
    return CharLM(len(vocab), cfg), vocab


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_keeps_exactly_k_symbols_among_ties(k):
    """`logits < kth` kept every logit tied with the k-th: top_k=1 of [1, 1, 1, 0] drew from three."""
    def drawn(logits):
        return {sample_next(torch.tensor(logits), 1.0, k, torch.Generator().manual_seed(s)) for s in range(200)}

    tied = drawn([1.0, 1.0, 1.0, 0.0])
    assert len(tied) == k and tied <= {0, 1, 2}
    assert drawn([0.1, 3.0, -2.0, 2.5, 0.0]) == set([1, 3][:k])  # without ties: the k largest


def test_an_unseeded_generate_leaves_the_global_rng_alone(lm):
    """seed=None called torch.seed(), which reseeds torch's global generator: a caller's
    torch.manual_seed no longer reproduced anything drawn after the sample."""
    model, vocab = lm
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    samples = {generate(model, vocab, "ab", 30, temperature=2.0, seed=None) for _ in range(3)}
    assert torch.equal(torch.rand(3), want)
    assert len(samples) > 1  # still a fresh seed each call
    assert generate(model, vocab, "ab", 30, seed=5) == generate(model, vocab, "ab", 30, seed=5)


@pytest.mark.parametrize("name", ["length", "top_k"])
@pytest.mark.parametrize("value", [2.5, "3", True, None])
def test_non_integer_length_and_top_k_are_named(lm, name, value):
    model, vocab = lm
    kw = {"length": 4, "top_k": 0, name: value}
    with pytest.raises(TypeError, match=f"^{name}: expected an int, got {type(value).__name__}"):
        generate(model, vocab, "ab", kw["length"], top_k=kw["top_k"])


def test_a_prefix_that_is_not_a_str_is_named(lm):
    """None reached the tokenizer, which failed unnamed."""
    model, vocab = lm
    with pytest.raises(TypeError, match="^prefix: expected a str, got NoneType$"):
        generate(model, vocab, None, 4)
