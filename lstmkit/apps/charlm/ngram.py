r"""An n-gram language model with interpolated Kneser-Ney smoothing: the baseline to beat.

Chen & Goodman (1999), interpolated form with one absolute discount per order. For a context h
of k-1 tokens and the context h' without its first token:

    P_k(w | h) = max(a_k(hw) - D_k, 0) / A_k(h)  +  D_k N_k(h) / A_k(h) * P_{k-1}(w | h')
    P_k(w | h) = P_{k-1}(w | h')                         when A_k(h) = 0 (h never seen)
    P_0(w)     = 1 / V

where a_N are the raw counts at the highest order N, a_k (k < N) the continuation counts
|{v : a_{k+1}(v h w) > 0}| (in how many distinct contexts hw was seen), A_k(h) = sum_w a_k(hw),
N_k(h) = |{w : a_k(hw) > 0}|, and D_k = n1 / (n1 + 2 n2) from the counts of counts of a_k
(0.5 when n1 = 0: that estimate would be 0, and a zero discount leaves unseen tokens nothing).
Every P_k(. | h) sums to one over the vocabulary, unseen contexts included.

Tokens are ids; internally each is one character `chr(id)` so contexts are string slices.
"""

from __future__ import annotations

import math
import operator
from collections import Counter, defaultdict

from lstmkit.apps.charlm.metrics import Metrics, check_scored
from lstmkit.nn.checks import positive_int


class KneserNey:
    def __init__(self, order: int, vocab_size: int) -> None:
        self.order = positive_int("order", order)
        self.vocab_size = positive_int("vocab_size", vocab_size)
        self.counts: list[dict[str, int]] = [{} for _ in range(order + 1)]  # [k]: k-gram -> a_k
        self.context: list[dict[str, tuple[int, int]]] = [{} for _ in range(order + 1)]  # [k]: h -> (A, N)
        self.discount = [0.0] * (order + 1)

    def _text(self, ids, what: str = "ids") -> str:
        """`ids` as a string, one character each; an id outside [0, vocab_size) is refused naming
        `what`: chr() takes most of them, and a probability would be given to no token there is."""
        ints = []
        for i in ids:
            try:  # int() would read 2.7 as token 2; index() takes ints, numpy ints and int tensors alone
                ints.append(operator.index(i))
            except TypeError:
                raise TypeError(f"{what}: expected integer token ids, got {type(i).__name__} {i!r}") from None
        ids = ints
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"{what}: expected token ids in [0, vocab_size={self.vocab_size}), got {bad}")
        return "".join(map(chr, ids))

    def fit(self, ids) -> "KneserNey":
        s = self._text(ids)
        n = self.order
        self.counts[n] = dict(Counter(s[i: i + n] for i in range(len(s) - n + 1)))
        for k in range(n - 1, 0, -1):  # continuation counts from the order above
            self.counts[k] = dict(Counter(g[1:] for g in self.counts[k + 1]))
        for k in range(1, n + 1):
            totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for g, c in self.counts[k].items():
                t = totals[g[:-1]]
                t[0] += c
                t[1] += 1
            self.context[k] = {h: (a, m) for h, (a, m) in totals.items()}
            coc = Counter(c for c in self.counts[k].values() if c <= 2)
            n1, n2 = coc[1], coc[2]
            self.discount[k] = n1 / (n1 + 2 * n2) if n1 else 0.5
        return self

    def _prob(self, w: str, h: str) -> float:
        """P_k(w | h) with k = len(h) + 1."""
        p = 1.0 / self.vocab_size
        for k in range(1, len(h) + 2):  # lowest order first; each builds on the one below
            ctx = h[len(h) - k + 1:]
            seen = self.context[k].get(ctx)
            if seen is None:
                continue
            total, types = seen
            d = self.discount[k]
            p = max(self.counts[k].get(ctx + w, 0) - d, 0.0) / total + d * types / total * p
        return p

    def prob(self, token: int, context) -> float:
        """P(token | the last order-1 tokens of `context`)."""
        text = self._text(context, "context")
        return self._prob(self._text([token], "token"), text[max(0, len(text) - self.order + 1):])

    def distribution(self, context) -> list[float]:
        """P(w | context) for every token id w: the next-token distribution (it sums to one)."""
        return [self.prob(w, context) for w in range(self.vocab_size)]

    def evaluate(self, ids, char_lengths=None) -> Metrics:
        """NLL of every token of `ids` after the first, given up to order-1 tokens before it in `ids`."""
        s = self._text(ids)
        check_scored(len(s))
        nll, chars = 0.0, 0.0
        for i in range(1, len(s)):
            nll -= math.log(self._prob(s[i], s[max(0, i - self.order + 1): i]))
            chars += 1 if char_lengths is None else float(char_lengths[ord(s[i])])
        return Metrics(nll, len(s) - 1, int(round(chars)))
