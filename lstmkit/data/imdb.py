"""IMDB movie reviews (Maas et al. 2011) as a CSV file, and the tokenisation used on them.

The file has a header row and the columns `split,label,text` (others, such as `rating` and
`id`, are allowed and ignored; header names are matched ignoring case and surrounding spaces):
split is `train` or `test`, label `neg`/`pos` (or 0/1), both in any case, text the review (the
original `<br />` line breaks may be left in). Blank lines are skipped. Any file of this format
loads; a malformed row (another split included) raises `IMDBFormatError` with its line number.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lstmkit.data.csvfields import long_fields

CLASSES = ("negative", "positive")
DEFAULT_PATH = Path("..") / "shared" / "data" / "imdb" / "imdb_subset.csv"
REQUIRED = ("split", "label", "text")
SPLITS = ("train", "test")
_LABELS = {"neg": 0, "pos": 1, "0": 0, "1": 1, "negative": 0, "positive": 1}
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Apostrophes typed otherwise (isn’t, it´s, the modifier letter): one word each, as with '.
_APOSTROPHES = str.maketrans("\u2019\u00b4\u02bc", "'" * 3)


class IMDBFormatError(ValueError):
    """A CSV file or row that is not a labelled review."""


@dataclass
class Reviews:
    texts: list[str]
    labels: list[int]  # 0 negative, 1 positive

    def __len__(self) -> int:
        return len(self.texts)


@functools.cache
def _word() -> re.Pattern:
    """Words (with inner apostrophes: don't, it's) and single punctuation marks. A word is letters
    and digits of any script and the combining marks among them (an accent NFC has no letter for,
    Devanagari's vowel signs): re's word class takes no mark, so each would split its word.
    Built on first use, as listing the marks reads every code point (0.1 s)."""
    marks = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("M")]
    runs = []  # [first, last] of each run of consecutive code points
    for c in marks:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    mark = "[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in runs) + "]"
    w = rf"(?:[^\W_]|{mark})"  # a letter, a digit or a mark
    return re.compile(rf"[^\W_]{w}*(?:'{w}+)*|[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    """Lower case, `<br />` as a space; words (with inner apostrophes) and punctuation marks.
    NFC after lower case, which can decompose (İ lowers to i + U+0307): an accent typed as a
    combining mark (e + U+0301) is then one letter with it, as the same accent typed precomposed."""
    text = unicodedata.normalize("NFC", text.lower()).translate(_APOSTROPHES)
    return _word().findall(_BREAK.sub(" ", text))


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is. The text reader decodes ahead in blocks, so the
    line the csv reader had reached says nothing; decoding line by line finds it (a newline byte
    is never part of a multi-byte character, so no character spans two lines)."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"{path}: line {lineno}: not UTF-8 text ({e.reason} at byte {offset + e.start} of the file)"
            offset += len(raw)
    return f"{path}: not UTF-8 text ({error.reason})"  # the file changed since it failed to decode


def load_imdb(path: str | os.PathLike = DEFAULT_PATH) -> dict[str, Reviews]:
    """{split: Reviews} from a reviews CSV file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IMDB: no file at {str(path)!r}")
    out: dict[str, Reviews] = {}
    with open(path, newline="", encoding="utf-8-sig") as f, long_fields():
        reader = csv.reader(f, strict=True)
        try:
            header = next(row for row in reader if row)  # blank lines yield []
        except StopIteration:
            raise IMDBFormatError(f"{path}: the file is empty") from None
        except csv.Error as e:
            raise IMDBFormatError(f"{path}: line {reader.line_num}: {e}") from None
        except UnicodeDecodeError as e:
            raise IMDBFormatError(_not_utf8(path, e)) from None
        names = [h.strip().lower() for h in header]
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise IMDBFormatError(f"{path}: line {reader.line_num}: the header {header} lacks the column(s) {missing}")
        twice = [c for c in REQUIRED if names.count(c) > 1]
        if twice:  # which of the two columns is meant cannot be told
            raise IMDBFormatError(f"{path}: line {reader.line_num}: the header {header} has more than one "
                                  f"column {twice[0]!r}")
        col = {c: names.index(c) for c in REQUIRED}
        line = reader.line_num
        try:
            for row in reader:
                if not row:
                    line = reader.line_num
                    continue
                if len(row) != len(header):
                    raise IMDBFormatError(f"{path}: line {line + 1}: expected {len(header)} fields, got {len(row)}")
                label = _LABELS.get(row[col["label"]].strip().lower())
                if label is None:
                    raise IMDBFormatError(f"{path}: line {line + 1}: label must be neg/pos (or 0/1), "
                                          f"got {row[col['label']]!r}")
                # Case ignored, as in the header and the labels. Another split ("dev", "unsup", a
                # typo) is refused: its rows would otherwise be left out without a word.
                split = row[col["split"]].strip().lower()
                if split not in SPLITS:
                    raise IMDBFormatError(f"{path}: line {line + 1}: split must be train or test, "
                                          f"got {row[col['split']]!r}")
                reviews = out.setdefault(split, Reviews([], []))
                reviews.texts.append(row[col["text"]])
                reviews.labels.append(label)
                line = reader.line_num
        except csv.Error as e:
            raise IMDBFormatError(f"{path}: line {line + 1}: {e}") from None
        except UnicodeDecodeError as e:
            raise IMDBFormatError(_not_utf8(path, e)) from None
    if not out:
        raise IMDBFormatError(f"{path}: no reviews after the header")
    return out
