"""Word vocabulary with <pad> and <unk>, and pretrained vectors in GloVe's text format."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

PAD, UNK = "<pad>", "<unk>"


class Vocab:
    """Ids: 0 <pad>, 1 <unk>, then words by decreasing training frequency (ties alphabetical)."""

    def __init__(self, words: list[str]) -> None:
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocab: words must be distinct")
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: int = 0, min_freq: int = 1) -> "Vocab":
        """The words seen at least `min_freq` times, at most `max_size` of them (0: no cap)."""
        counts = Counter(tokens)
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size else words)

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, word: str) -> int:
        return self.index.get(word, 1)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get = self.index.get
        return [get(t, 1) for t in tokens]

    def to_list(self) -> list[str]:
        return list(self.words)

    @classmethod
    def from_list(cls, words: list[str]) -> "Vocab":
        if words[:2] != [PAD, UNK]:
            raise ValueError("vocab: a saved vocabulary starts with <pad>, <unk>")
        return cls(words[2:])


def load_vectors(path: str | os.PathLike, vocab: Vocab, lowercase_fallback: bool = True
                 ) -> tuple[torch.Tensor, int]:
    """(embedding matrix (len(vocab), d), words found) from a GloVe text file `word v1 ... vd`.

    d is the first vector's length. The vector is a line's last d fields, and its word the fields
    before them, joined by single spaces: glove.840B.300d.txt has words with spaces in them
    (`. . . 0.1 ...`), and a count of fields per line stopped reading it at the first. So a line
    with extra fields reads as a word with spaces, and the first line's word must have none.
    Words missing from the file get N(0, 1/d) rows; <pad> gets zeros. A first line of two
    integers (word2vec's header) is skipped. With `lowercase_fallback`, a vocabulary word not in
    the file is looked up in lower case. A malformed line, or a NaN or infinite value in the vector
    of a vocabulary word, is an error naming its number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--vectors: no file at {str(path)!r}")
    wanted: dict[str, list[int]] = {}
    for i, w in enumerate(vocab.words[2:], 2):
        wanted.setdefault(w, []).append(i)
    lower: dict[str, list[int]] = {}
    if lowercase_fallback:
        for i, w in enumerate(vocab.words[2:], 2):
            if w.lower() != w:
                lower.setdefault(w.lower(), []).append(i)
    rows: dict[int, list[float]] = {}
    lines: dict[int, int] = {}  # where each row's vector is, for the message of a bad value
    exact: set[int] = set()
    dim = None
    # Bytes, decoded line by line: a text reader decodes ahead in blocks, and its error would
    # name neither the file nor the line.
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: not UTF-8 text ({e.reason} at byte {e.start} "
                                 "of the line)") from None
            parts = line.rstrip("\r\n").rstrip(" ").split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec text header: count and dimension
            if len(parts) < 2:
                raise ValueError(f"{path}: line {lineno}: expected a word and its vector, got {line[:60]!r}")
            if dim is None:
                dim = len(parts) - 1
            elif len(parts) <= dim:
                raise ValueError(f"{path}: line {lineno}: {len(parts)} fields, expected a word and the {dim} "
                                 "values of the first vector")
            word = " ".join(parts[:-dim])
            targets = wanted.get(word)
            fallback = lower.get(word)
            if targets is None and fallback is None:
                continue
            try:
                vec = [float(x) for x in parts[-dim:]]
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: a value is not a number") from None
            for i in targets or ():
                rows[i] = vec
                lines[i] = lineno
                exact.add(i)
            for i in fallback or ():
                if i not in exact:
                    rows[i] = vec
                    lines[i] = lineno
    if dim is None:
        raise ValueError(f"{path}: no vectors in the file")
    matrix = torch.randn(len(vocab), dim) / math.sqrt(dim)
    matrix[0] = 0.0
    if rows:
        order = list(rows)
        values = torch.tensor(list(rows.values()), dtype=torch.float32)
        # float() takes "nan" and "inf", and float32 turns values past 3.4e38 into inf: one such
        # row makes every loss NaN, and the run still exits 0 with a model that predicts one class.
        # Checked once over the whole matrix, as the per-line parse is what large files cost.
        finite = torch.isfinite(values)
        if not finite.all():
            k = min(torch.nonzero(~finite.all(1)).flatten().tolist(), key=lambda k: lines[order[k]])
            value = rows[order[k]][int(torch.nonzero(~finite[k])[0])]
            raise ValueError(f"{path}: line {lines[order[k]]}: expected finite numbers "
                             f"(float32: magnitude at most 3.4e38), got {value}")
        matrix[torch.tensor(order)] = values
    return matrix, len(rows)
