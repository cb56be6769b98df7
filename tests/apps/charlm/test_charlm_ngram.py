"""Interpolated Kneser-Ney: a distribution for every context, seen or not; sensible numbers."""

import math
import random

import numpy as np
import pytest
import torch

from lstmkit.apps.charlm.ngram import KneserNey


def corpus(n=3000, vocab=12, seed=0):
    rng = random.Random(seed)
    words = ["".join(chr(rng.randrange(vocab)) for _ in range(rng.randint(1, 6))) for _ in range(40)]
    text = "".join(rng.choice(words) for _ in range(n // 3))
    return [ord(c) for c in text[:n]]


@pytest.mark.parametrize("order", [1, 2, 3, 5, 7])
def test_probabilities_sum_to_one_for_random_contexts(order):
    ids = corpus()
    V = 14  # two symbols never seen in training
    model = KneserNey(order, V).fit(ids)
    rng = random.Random(order)
    contexts = [[rng.randrange(V) for _ in range(rng.randint(0, order + 2))] for _ in range(40)]
    contexts += [ids[i: i + order - 1] for i in rng.sample(range(len(ids) - order), 40)]  # seen ones
    for ctx in contexts:
        dist = model.distribution(ctx)
        assert all(p > 0 for p in dist)
        assert math.fsum(dist) == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_bigram():
    # Text "abab" (a=0, b=1), V=2, order 2. Bigram counts ab:2, ba:1 -> D2 = n1/(n1+2 n2) = 1/3.
    # Unigram continuation counts: b follows 1 distinct symbol, a follows 1 -> a1(a)=a1(b)=1, D1 = 1/(1+0) = 1.
    # P1(w) = max(1-1,0)/2 + 1*2/2 * 1/2 = 1/2.  Context a: A=2, N=1 ->
    # P(b|a) = (2 - 1/3)/2 + (1/3)(1)/2 * 1/2 = 5/6 + 1/12 = 11/12; P(a|a) = 1/12.
    m = KneserNey(2, 2).fit([0, 1, 0, 1])
    assert m.prob(1, [0]) == pytest.approx(11 / 12)
    assert m.prob(0, [0]) == pytest.approx(1 / 12)
    assert m.prob(0, []) == pytest.approx(1 / 2)


def test_higher_order_fits_structured_text_better():
    ids = corpus(6000)
    train, val = ids[:5000], ids[5000:]
    bpc = [KneserNey(n, 12).fit(train).evaluate(val).bpc for n in (1, 3)]
    assert bpc[1] < bpc[0] < math.log2(12) + 1e-9
    m = KneserNey(3, 12).fit(train).evaluate(val)
    assert m.tokens == len(val) - 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        KneserNey(0, 5)
    with pytest.raises(ValueError, match="vocab_size"):
        KneserNey(2, 3).fit([0, 1, 7])


@pytest.mark.parametrize("name", ["order", "vocab_size"])
@pytest.mark.parametrize("value, error, match", [
    ("3", TypeError, "expected an int, got str"),  # was an unnamed '<' not supported
    (2.0, TypeError, "expected an int, got float"),
    (True, TypeError, "expected an int, got bool"),
    (0, ValueError, "expected a positive int, got 0"),
])
def test_order_and_vocab_size_must_be_positive_ints(name, value, error, match):
    kw = {"order": 2, "vocab_size": 3, name: value}
    with pytest.raises(error, match=f"^{name}: {match}$"):
        KneserNey(**kw)


@pytest.mark.parametrize("bad", [-1, 3, 99])
def test_ids_outside_the_vocabulary_are_refused_by_fit_evaluate_and_prob(bad):
    """fit([0, -1, 2]) failed in chr(); evaluate([0, 5]) scored id 5 of a vocabulary of 3."""
    def refused(what):
        return pytest.raises(ValueError, match=rf"^{what}: expected token ids in \[0, vocab_size=3\), got {bad}$")

    with refused("ids"):
        KneserNey(2, 3).fit([0, bad, 2])
    model = KneserNey(2, 3).fit([0, 1, 2, 1])
    with refused("ids"):
        model.evaluate([0, bad])
    with refused("token"):
        model.prob(bad, [0])
    with refused("context"):
        model.prob(0, [bad])


@pytest.mark.parametrize("bad", [1.7, torch.tensor(1.0), "1", None])
def test_ids_that_are_not_integers_are_refused_not_truncated(bad):
    """int() read 1.7 as token 1, and a float tensor's values as the ids under them."""
    with pytest.raises(TypeError, match=f"^ids: expected integer token ids, got {type(bad).__name__} "):
        KneserNey(2, 3).fit([0, bad, 2])
    with pytest.raises(TypeError, match="^context: expected integer token ids, got float 0.5$"):
        KneserNey(2, 3).fit([0, 1, 2]).prob(1, [0.5])
    tensors = KneserNey(2, 3).fit(torch.tensor([0, 1, 2, 1])).evaluate(np.array([0, 1, 2]))
    assert tensors == KneserNey(2, 3).fit([0, 1, 2, 1]).evaluate([0, 1, 2])  # int tensors and arrays are ids


@pytest.mark.parametrize("ids", [[], [1]])
def test_evaluate_of_fewer_than_two_tokens_is_named(ids):
    """No token to score: a ZeroDivisionError from the metrics' 0 / 0."""
    model = KneserNey(2, 3).fit([0, 1, 2, 1])
    with pytest.raises(ValueError, match=f"^ids: expected at least 2 tokens .*, got {len(ids)}$"):
        model.evaluate(ids).bpc


@pytest.mark.parametrize("order", [2, 4, 7])
def test_prob_takes_the_whole_of_a_short_context(order):
    """prob() gives what evaluate() scores: at the start of a text the context is shorter than
    order - 1 tokens and is used whole (it was cut to its last order-1-len tokens)."""
    ids = corpus()
    model = KneserNey(order, 14).fit(ids)
    seq = ids[100:100 + order + 2]
    want = -sum(math.log(model.prob(seq[i], seq[max(0, i - order + 1): i])) for i in range(1, len(seq)))
    assert model.evaluate(seq).nll == pytest.approx(want, rel=1e-12)


def test_no_zero_discount_when_no_count_is_one():
    """Every count 2 or more (n1 = 0): n1 / (n1 + 2 n2) would be 0, passing no probability down,
    so an unseen token got P = 0 and scoring a text with one failed (math domain error)."""
    m = KneserNey(1, 3).fit([0, 0, 0, 1, 1])
    assert 0 < m.discount[1] <= 1
    assert m.prob(2, []) > 0
    assert math.isfinite(m.evaluate([0, 2, 1]).nll)
