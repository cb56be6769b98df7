"""Vocabulary: characters (or words) <-> ids, saved with the model, strict about unknown symbols.

There is no `<unk>` id: a model can only be asked about symbols it has an embedding for, so
text with a symbol outside the vocabulary is an error that names the symbols, unless the
caller asks for them to be dropped (`unknown="skip"`), which is then reported by count.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

# Word level: runs of word characters, single punctuation marks, runs of whitespace, so that
# joining the tokens gives back the text exactly.
_WORD = re.compile(r"\w+|\s+|[^\w\s]")


def tokenize(text: str, level: str) -> list[str]:
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text)
    raise ValueError(f"level: expected 'char' or 'word', got {level!r}")


class Vocab:
    """Tokens sorted by decreasing frequency (ties by code point); ids are positions."""

    def __init__(self, tokens: list[str], level: str = "char") -> None:
        if not tokens:
            raise ValueError("tokens: expected at least one token, got none")
        repeated = [t for t, n in Counter(tokens).items() if n > 1]
        if repeated:
            shown = ", ".join(repr(t) for t in repeated[:20]) + (", ..." if len(repeated) > 20 else "")
            raise ValueError(f"tokens: expected distinct tokens, got {len(repeated)} more than once: {shown}")
        self.level = level
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, tokens: list[str], level: str = "char") -> "Vocab":
        counts = Counter(tokens)
        return cls(sorted(counts, key=lambda t: (-counts[t], t)), level)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def unknown(self, tokens: list[str]) -> list[str]:
        """The distinct tokens not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self.index))

    def encode(self, text: str, unknown: str = "error", what: str = "text") -> torch.Tensor:
        """Token ids (int64). unknown="error" raises naming the symbols; "skip" drops them."""
        tokens = tokenize(text, self.level)
        missing = self.unknown(tokens)
        if missing:
            if unknown == "error":
                shown = ", ".join(repr(t) for t in missing[:20]) + (", ..." if len(missing) > 20 else "")
                raise ValueError(f"{what}: {len(missing)} symbol(s) not in the model's vocabulary "
                                 f"of {len(self)}: {shown}")
            if unknown != "skip":
                raise ValueError(f"unknown: expected 'error' or 'skip', got {unknown!r}")
            tokens = [t for t in tokens if t in self.index]
        return torch.tensor([self.index[t] for t in tokens], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.tokens[int(i)] for i in ids)

    def char_lengths(self) -> torch.Tensor:
        """Characters per token (all ones at character level): bits per character at word level."""
        return torch.tensor([len(t) for t in self.tokens], dtype=torch.float64)

    def to_dict(self) -> dict:
        return {"level": self.level, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(list(d["tokens"]), d.get("level", "char"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens and self.level == other.level

    def __repr__(self) -> str:
        return f"Vocab({len(self)} {self.level} tokens)"
