"""Perplexity = exp(mean NLL), bpc = mean NLL / ln 2, on a hand-computed example."""

import math

import pytest
import torch

from lstmkit.apps.charlm.metrics import Metrics, evaluate


class FixedModel(torch.nn.Module):
    """Predicts the same distribution at every step: p = [1/2, 1/4, 1/4] over 3 symbols."""

    def forward(self, x, state=None):
        logits = torch.log(torch.tensor([0.5, 0.25, 0.25]))
        return logits.expand(*x.shape, 3).clone(), state


def test_hand_computed_example():
    # Text ids 0 1 0 2 1: targets 1 0 2 1 with p = 1/4, 1/2, 1/4, 1/4.
    # NLL = ln 4 + ln 2 + ln 4 + ln 4 = 7 ln 2; mean = 7/4 ln 2.
    # perplexity = exp(7/4 ln 2) = 2^(7/4) = 3.3636; bpc = 7/4 = 1.75.
    ids = torch.tensor([0, 1, 0, 2, 1])
    for rows, steps in [(1, 2), (2, 1), (3, 10), (16, 3)]:
        m = evaluate(FixedModel(), ids, chunk=steps, rows=rows)
        assert m.tokens == m.chars == 4
        assert m.nll == pytest.approx(7 * math.log(2))
        assert m.loss == pytest.approx(7 / 4 * math.log(2))
        assert m.perplexity == pytest.approx(2 ** 1.75)
        assert m.bpc == pytest.approx(1.75)
    assert m.line().startswith("validation: perplexity 3.3636, bits per character 1.7500")


def test_bits_per_character_at_word_level_divide_by_characters():
    # Two targets of 3 and 1 characters, NLL 2 ln 2 each: 4 ln 2 nats over 4 characters = 1 bpc,
    # while per token: mean NLL 2 ln 2, perplexity 4.
    m = Metrics(nll=4 * math.log(2), tokens=2, chars=4)
    assert m.bpc == pytest.approx(1.0) and m.perplexity == pytest.approx(4.0)
    ids = torch.tensor([0, 1, 0])  # targets 1 (p 1/4), 0 (p 1/2)
    lengths = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    m = evaluate(FixedModel(), ids, chunk=4, char_lengths=lengths)
    assert (m.tokens, m.chars) == (2, 5)
    assert m.bpc == pytest.approx((2 + 1) / 5)


def test_uniform_model_has_perplexity_vocab_size():
    class Uniform(torch.nn.Module):
        def forward(self, x, state=None):
            return torch.zeros(*x.shape, 7), state
    m = evaluate(Uniform(), torch.randint(0, 7, (500,)), chunk=9, rows=4)
    assert m.perplexity == pytest.approx(7.0) and m.bpc == pytest.approx(math.log2(7))


def test_a_perplexity_past_a_float_is_inf_not_an_overflow_error():
    """exp(710) overflowed: `lstmkit eval` of a text the model fits that badly was a traceback."""
    m = Metrics(nll=800.0 * 4, tokens=4, chars=4)
    assert m.perplexity == math.inf and m.bpc == pytest.approx(800 / math.log(2))
    assert m.line().startswith("validation: perplexity inf, bits per character 1154.")
    assert Metrics(nll=700.0, tokens=1, chars=1).perplexity == pytest.approx(math.exp(700))
    assert math.isnan(Metrics(nll=math.nan, tokens=1, chars=1).perplexity)  # not inf next to a NaN bpc


@pytest.mark.parametrize("ids, kw, error, match", [
    (torch.tensor([2]), {}, ValueError, "^ids: expected at least 2 tokens .*, got 1$"),  # was 0 tokens, then 0 / 0
    (torch.tensor([], dtype=torch.int64), {}, ValueError, "^ids: expected at least 2 tokens .*, got 0$"),
    (torch.tensor([[0, 1, 2]]), {}, ValueError, r"^ids: expected a 1-D tensor of token ids, got shape \(1, 3\)$"),
    ([0, 1, 2], {}, TypeError, "^ids: expected a 1-D tensor of token ids, got list$"),
    (torch.tensor([0, 1, 2]), {"chunk": 0}, ValueError, "^chunk: expected a positive int, got 0$"),
    (torch.tensor([0, 1, 2]), {"chunk": -1}, ValueError, "^chunk: expected a positive int, got -1$"),  # was 0 tokens
    (torch.tensor([0, 1, 2]), {"chunk": 2.0}, TypeError, "^chunk: expected an int, got float$"),
    (torch.tensor([0, 1, 2]), {"rows": 0}, ValueError, "^rows: expected a positive int, got 0$"),
    (torch.tensor([0, 1, 2]), {"rows": True}, TypeError, "^rows: expected an int, got bool$"),
    (torch.tensor([0, 1, 2]), {"world": 0}, ValueError, "^world: expected a positive int, got 0$"),
    (torch.tensor([0, 1, 2]), {"rank": 1}, ValueError, r"^rank: expected an int in \[0, world=1\), got 1$"),
    (torch.tensor([0, 1, 2]), {"rank": -1, "world": 2}, ValueError, r"^rank: expected an int in \[0, world=2\), got -1$"),
    (torch.tensor([0, 1, 2]), {"rank": 0.0}, TypeError, "^rank: expected an int, got float$"),
])
def test_evaluate_refuses_what_it_cannot_score_naming_the_argument(ids, kw, error, match):
    with pytest.raises(error, match=match):
        evaluate(FixedModel(), ids, **kw)
