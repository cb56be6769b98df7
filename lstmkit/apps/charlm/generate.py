"""Sampling text from a trained model, streaming the recurrent state.

The prefix is read once, in one call, leaving the state after its last symbol; from there each
new symbol costs one single-step call. Sampling uses its own seeded generator, so a seed gives
the same text every time, whatever else has drawn random numbers.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import Tensor

from lstmkit.apps.charlm.vocab import Vocab
from lstmkit.utils.options import check_number, check_seed


def sample_next(logits: Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    """One id from `logits` (V,): greedy at temperature 0, else softmax(logits / T) over the top k."""
    if temperature == 0:
        return int(logits.argmax())
    # shifted first, so that the largest is 0: a tiny temperature then sends the others to -inf
    # (greedy, its limit) instead of the largest to +inf, whose softmax is NaN
    logits = logits.double()
    logits = (logits - logits.max()) / temperature
    if 0 < top_k < logits.numel():
        # by index, not by `logits < kth`: logits tied with the k-th would all be kept, more than k
        keep = torch.topk(logits, top_k).indices
        logits = torch.full_like(logits, float("-inf")).index_copy(0, keep, logits[keep])
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def encode_prefix(vocab: Vocab, prefix: str, what: str = "prefix") -> Tensor:
    """The ids of `prefix`; an empty one, or one with symbols outside `vocab`, is refused naming `what`."""
    if not isinstance(prefix, str):  # tokenize would fail on it unnamed
        raise TypeError(f"{what}: expected a str, got {type(prefix).__name__}")
    ids = vocab.encode(prefix, what=what)
    if len(ids) == 0:
        raise ValueError(f"{what}: expected at least one symbol to start from")
    return ids


@torch.no_grad()
def generate(model, vocab: Vocab, prefix: str, length: int, temperature: float = 1.0, top_k: int = 0,
             seed: int | None = None, device=None, on_token: Callable[[str], None] | None = None) -> str:
    """`prefix` followed by `length` sampled tokens. Unknown symbols in the prefix raise, named."""
    for name, value in (("length", length), ("top_k", top_k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # range(2.5), topk(k=2.5) fail unnamed
            raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if length < 0:
        raise ValueError(f"length: expected >= 0, got {length}")
    check_number("temperature", temperature, 0)
    if seed is not None:
        check_seed("seed", seed)
    if top_k < 0:
        raise ValueError(f"top_k: expected >= 0 (0: no limit), got {top_k}")
    ids = encode_prefix(vocab, prefix)
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # from the OS, into this generator alone: torch.seed() reseeds the caller's global ones
    else:
        generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        logits, state = model(ids.unsqueeze(1).to(device))  # (T, 1) -> the prefix, read once
        out = []
        for k in range(length):
            nxt = sample_next(logits[-1, 0], temperature, top_k, generator)
            out.append(nxt)
            if on_token is not None:
                on_token(vocab.tokens[nxt])
            if k + 1 < length:  # one step: the new symbol in, the state carried
                logits, state = model(torch.tensor([[nxt]], device=device), state)
    finally:
        model.train(was_training)
    return prefix + vocab.decode(out)
